"""The OAuth 2.0 test servers work as the gateway's tests expect: tokens from
the identity provider open the "oauth" Dovecot over IMAP and POP3 and Postfix
submission, app-only tokens follow Exchange Online's mailbox permissions, and
refusals, outages and proxies look the way the real services make them look.

Stdlib clients only (imaplib, poplib, smtplib, urllib): these tests prove the
servers, not postroom's clients.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.oauth import (
    OUTLOOK,
    OAuthServers,
    SaslResponder,
    oauthbearer,
    pop3_auth,
    proxy_connect,
    xoauth2,
)
from tests.integration.servers import make_message
from tests.net.proxies import ProxyServersUnavailable, start_proxy_servers

pytestmark = pytest.mark.servers

ALICE, BOB, ERIN = "alice@contoso.test", "bob@contoso.test", "erin@contoso.test"
CAROL = "carol@workspace.test"
#: what Dovecot's XOAUTH2 sends before refusing a token
XOAUTH2_ERROR = {"status": "401", "schemes": "bearer", "scope": "mail"}


@pytest.fixture
def imap(oauth_servers: OAuthServers) -> Iterator[imaplib.IMAP4]:
    """IMAP with STARTTLS (the run's CA verified) on the oauth instance."""
    client = imaplib.IMAP4(oauth_servers.host, oauth_servers.ports["imap_oauth"], timeout=30)
    client.starttls(ssl_context=oauth_servers.tls_context())
    yield client
    client.shutdown()


def imaps(servers: OAuthServers) -> imaplib.IMAP4_SSL:
    """IMAP over TLS (the run's CA verified) on the oauth instance."""
    return imaplib.IMAP4_SSL(servers.host, servers.ports["imaps_oauth"],
                             ssl_context=servers.tls_context(), timeout=30)  # fmt: skip


def authenticate(client: imaplib.IMAP4, mechanism: str, initial: bytes) -> tuple[str, Any]:
    """AUTHENTICATE; ("OK", ...) or ("NO", message) with the error challenge answered."""
    responder = SaslResponder(initial)
    try:
        return client.authenticate(mechanism, responder)
    except imaplib.IMAP4.error as exc:
        return "NO", (str(exc), responder.error)


def test_a_user_token_logs_in_with_xoauth2_and_oauthbearer(
    oauth_servers: OAuthServers, imap: imaplib.IMAP4
) -> None:
    token = oauth_servers.password_token(ALICE)["access_token"]
    assert authenticate(imap, "XOAUTH2", xoauth2(ALICE, token))[0] == "OK"
    with imaps(oauth_servers) as client:
        initial = oauthbearer(ALICE, token, oauth_servers.host, oauth_servers.ports["imaps_oauth"])
        assert authenticate(client, "OAUTHBEARER", initial)[0] == "OK"


def test_pop3_two_line_xoauth2(oauth_servers: OAuthServers) -> None:
    token = oauth_servers.password_token(BOB)["access_token"]
    pop = poplib.POP3_SSL(oauth_servers.host, oauth_servers.ports["pop3s_oauth"],
                          context=oauth_servers.tls_context(), timeout=30)  # fmt: skip
    try:
        assert pop3_auth(pop, "XOAUTH2", xoauth2(BOB, token)).startswith(b"+OK")
        pop.stat()  # a session
    finally:
        pop.quit()


def test_a_token_opens_only_the_protocols_of_its_scopes(oauth_servers: OAuthServers) -> None:
    token = oauth_servers.password_token(ALICE, scope=OUTLOOK + "POP.AccessAsUser.All")
    initial = xoauth2(ALICE, token["access_token"])
    with imaps(oauth_servers) as client:
        assert authenticate(client, "XOAUTH2", initial)[0] == "NO"
    pop = poplib.POP3_SSL(oauth_servers.host, oauth_servers.ports["pop3s_oauth"],
                          context=oauth_servers.tls_context(), timeout=30)  # fmt: skip
    try:
        assert pop3_auth(pop, "XOAUTH2", initial).startswith(b"+OK")
    finally:
        pop.quit()
    with smtplib.SMTP(oauth_servers.host, oauth_servers.ports["submission_oauth"],
                      timeout=30) as smtp:  # fmt: skip
        smtp.starttls(context=oauth_servers.tls_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.auth("XOAUTH2", SaslResponder(initial).text)
        assert refused.value.smtp_code == 535


def test_a_google_token_logs_in_on_the_tokeninfo_passdb(
    oauth_servers: OAuthServers, imap: imaplib.IMAP4
) -> None:
    token = oauth_servers.google_token(CAROL)["access_token"]
    assert token.startswith("ya29.")
    before = oauth_servers.idp.stats().get("tokeninfo", 0)
    assert authenticate(imap, "XOAUTH2", xoauth2(CAROL, token))[0] == "OK"
    assert oauth_servers.idp.stats().get("tokeninfo", 0) == before + 1


def test_an_app_only_token_opens_the_mailboxes_of_its_permissions_only(
    oauth_servers: OAuthServers,
) -> None:
    app_token = oauth_servers.app_token()["access_token"]
    user_token = oauth_servers.password_token(ALICE)["access_token"]
    mark = oauth_servers.log_mark()

    def login(user: str, token: str) -> tuple[str, Any]:
        with imaps(oauth_servers) as client:
            return authenticate(client, "XOAUTH2", xoauth2(user, token))

    assert login(ALICE, app_token)[0] == "OK"
    assert login(BOB, app_token)[0] == "OK"
    refused = login(ERIN, app_token)  # a mailbox of the tenant without a permission
    assert refused[0] == "NO"
    assert "AUTHENTICATIONFAILED" in refused[1][0] and refused[1][1] == XOAUTH2_ERROR
    assert login(BOB, user_token)[0] == "NO"  # a user's token is for that user only
    logins = [(x["user"], x["method"]) for x in mark.dovecot_logins()]
    assert (ALICE, "XOAUTH2") in logins and (BOB, "XOAUTH2") in logins
    assert (ERIN, "XOAUTH2") not in logins
    assert "app-only: app azure-daemon-app opens this mailbox" in mark.new_text()
    # POP3 (POP.AccessAsApp) and SMTP (SMTP.SendAsApp) take it too
    pop = poplib.POP3_SSL(oauth_servers.host, oauth_servers.ports["pop3s_oauth"],
                          context=oauth_servers.tls_context(), timeout=30)  # fmt: skip
    try:
        assert pop3_auth(pop, "XOAUTH2", xoauth2(BOB, app_token)).startswith(b"+OK")
    finally:
        pop.quit()
    with smtplib.SMTP(oauth_servers.host, oauth_servers.ports["submission_oauth"],
                      timeout=30) as smtp:  # fmt: skip
        smtp.starttls(context=oauth_servers.tls_context())
        assert smtp.auth("XOAUTH2", SaslResponder(xoauth2(ALICE, app_token)).text)[0] == 235


def test_smtp_submission_with_xoauth2_delivers_to_bob(oauth_servers: OAuthServers) -> None:
    oauth_servers.clear(BOB)
    token = oauth_servers.password_token(ALICE)["access_token"]
    mark = oauth_servers.log_mark("postfix")
    with smtplib.SMTP(oauth_servers.host, oauth_servers.ports["submission_oauth"],
                      timeout=30) as smtp:  # fmt: skip
        smtp.starttls(context=oauth_servers.tls_context())
        smtp.ehlo()
        assert {"XOAUTH2", "OAUTHBEARER", "PLAIN", "LOGIN"} <= set(
            smtp.esmtp_features["auth"].upper().split())
        code, _ = smtp.auth("XOAUTH2", SaslResponder(xoauth2(ALICE, token)).text)
        assert code == 235
        smtp.sendmail(ALICE, [BOB], make_message("via XOAUTH2", sender=ALICE, to=BOB))
    oauth_servers.wait_for_messages(BOB, 1)
    assert b"Subject: via XOAUTH2" in oauth_servers.messages(BOB)[0]
    assert {"rip": "127.0.0.1", "method": "XOAUTH2", "user": ALICE} in mark.postfix_clients()


def test_lmtp_delivers_into_the_oauth_mailboxes(oauth_servers: OAuthServers) -> None:
    oauth_servers.clear(CAROL)
    oauth_servers.deliver_lmtp(CAROL, [make_message("one", to=CAROL), make_message("two")])
    assert oauth_servers.message_count(CAROL) == 2


def test_a_revoked_token_gets_the_error_challenge_then_no(
    oauth_servers: OAuthServers, imap: imaplib.IMAP4
) -> None:
    token = oauth_servers.password_token(BOB)["access_token"]
    oauth_servers.revoke_token(token)  # this token's grant only: other tests keep theirs
    status, (message, challenge) = authenticate(imap, "XOAUTH2", xoauth2(BOB, token))
    assert status == "NO" and "AUTHENTICATIONFAILED" in message
    assert challenge == XOAUTH2_ERROR


def test_an_expired_token_is_refused(oauth_servers: OAuthServers, imap: imaplib.IMAP4) -> None:
    token = oauth_servers.password_token(ALICE)
    with oauth_servers.idp.restoring() as idp:
        idp.advance(token["expires_in"] + 1)
        assert authenticate(imap, "XOAUTH2", xoauth2(ALICE, token["access_token"]))[0] == "NO"


def test_an_idp_outage_is_a_temporary_failure(
    oauth_servers: OAuthServers, imap: imaplib.IMAP4
) -> None:
    token = oauth_servers.password_token(ALICE)["access_token"]
    with oauth_servers.idp.restoring() as idp:
        idp.start_outage(503, endpoints=("introspect",))
        status, (message, _) = authenticate(imap, "XOAUTH2", xoauth2(ALICE, token))
    assert status == "NO" and "[UNAVAILABLE]" in message
    assert oauth_servers.idp.snapshot()["outage"] is None


def test_password_users_log_in_without_the_idp(
    oauth_servers: OAuthServers, imap: imaplib.IMAP4
) -> None:
    before = oauth_servers.idp.stats()
    assert imap.login(ERIN, oauth_servers.password_users[ERIN])[0] == "OK"
    pop = poplib.POP3(oauth_servers.host, oauth_servers.ports["pop3_oauth"], timeout=30)
    try:
        pop.stls(oauth_servers.tls_context())
        pop.user("frank@workspace.test")
        assert pop.pass_(oauth_servers.password_users["frank@workspace.test"]).startswith(b"+OK")
    finally:
        pop.quit()
    after = oauth_servers.idp.stats()
    assert {k: after.get(k, 0) for k in ("introspect", "tokeninfo")} == {
        k: before.get(k, 0) for k in ("introspect", "tokeninfo")}  # fmt: skip


@pytest.fixture(scope="module")
def proxies() -> dict[str, Any]:
    """contrib/scripts/proxy-test-servers' proxies (started once, left running)."""
    try:
        return dict(start_proxy_servers()["proxies"])
    except ProxyServersUnavailable as exc:
        pytest.fail(str(exc))


@pytest.mark.parametrize("name", ["socks", "socks_auth", "dante", "http", "http_auth"])
def test_every_proxy_reaches_the_oauth_servers_and_dovecot_sees_its_address(
    oauth_servers: OAuthServers, proxies: dict[str, Any], name: str
) -> None:
    proxy = proxies[name]
    host, context = oauth_servers.host, oauth_servers.tls_context()
    # the token endpoint through the proxy: HTTPS end to end
    with context.wrap_socket(proxy_connect(proxy, host, oauth_servers.ports["idp"]),
                             server_hostname=host) as tls:  # fmt: skip
        tls.sendall(b"GET /_control/nothing HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        assert tls.recv(64).startswith(b"HTTP/1.0 404")
    token = oauth_servers.password_token(ALICE)["access_token"]
    mark = oauth_servers.log_mark()
    port = oauth_servers.ports["imaps_oauth"]

    class ProxiedIMAP4SSL(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout: float | None) -> ssl.SSLSocket:
            sock = proxy_connect(proxy, host, port, timeout or 30)
            return context.wrap_socket(sock, server_hostname=host)

    with ProxiedIMAP4SSL(host, port, ssl_context=context, timeout=30) as client:
        assert authenticate(client, "XOAUTH2", xoauth2(ALICE, token))[0] == "OK"
    assert {"user": ALICE, "method": "XOAUTH2", "rip": proxy["source"]} in mark.dovecot_logins()
    # submission: STARTTLS and XOAUTH2 on the proxied socket; Postfix logs the proxy
    postfix = oauth_servers.log_mark("postfix")

    class ProxiedSMTP(smtplib.SMTP):
        def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
            return proxy_connect(proxy, host, port, timeout)

    with ProxiedSMTP(host, oauth_servers.ports["submission_oauth"], timeout=30) as smtp:
        smtp.starttls(context=context)
        assert smtp.auth("XOAUTH2", SaslResponder(xoauth2(ALICE, token)).text)[0] == 235
        smtp.sendmail(ALICE, [ALICE], make_message(f"via {name}", sender=ALICE, to=ALICE))
    oauth_servers.wait_for(lambda: any(c["rip"] == proxy["source"] and c["user"] == ALICE
                                       for c in postfix.postfix_clients()),
                           what=f"Postfix's client= line for {proxy['source']}")  # fmt: skip

"""IMAP, POP3 and SMTP logins with access tokens from the test identity provider.

The real Dovecot "oauth" instance and Postfix's OAuth submission port
(contrib/mail-servers/README.md, "OAuth 2.0") check every token with the IdP:
XOAUTH2 and OAUTHBEARER on IMAP (SASL-IR), POP3 (one line, and Office 365's
two lines) and SMTP (RFC 4954); Azure user tokens, the daemon app's app-only
token (Exchange's rule, emulated in Lua), Google tokens; the gateway loop of
an expired token refused, refreshed and accepted at once (D9); a second
refusal as an authentication failure; an IdP outage as a temporary failure;
a token login through a proxy. IMAP and POP3 run on the real reactor in a
subprocess (tests/net/source_client.py); SMTP is blocking and runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet import task

from postroom.api import Credentials
from postroom.kernel import Kernel
from postroom.model import Envelope
from postroom.runner import InlineRunner
from postroom_smtp.connection import ConnectionSettings, SMTPConnection
from postroom_smtp.sender import SMTPSender
from tests.conftest import run
from tests.integration.oauth import OAuthServers
from tests.integration.servers import make_message, wait_for
from tests.net.proxies import settings as proxy_settings
from tests.net.proxies import source as proxy_source
from tests.net.source_client import run_source_client
from tests.plugins.fake_auth import FakeAuthenticator

pytestmark = pytest.mark.servers

ALICE, BOB, CAROL = "alice@contoso.test", "bob@contoso.test", "carol@workspace.test"
SECURITY = {"imaps_oauth": "ssl", "imap_oauth": "starttls", "pop3s_oauth": "ssl",
            "pop3_oauth": "starttls"}  # fmt: skip


def token_of(servers: OAuthServers, user: str = ALICE) -> str:
    return str(servers.password_token(user)["access_token"])


def log_in(
    servers: OAuthServers, port_name: str, user: str, token: str, **spec: Any
) -> dict[str, Any]:
    protocol = "imap" if port_name.startswith("imap") else "pop3"
    return run_source_client(
        protocol=protocol,
        host=servers.host,
        port=servers.ports[port_name],
        security=SECURITY[port_name],
        ca_file=servers.ca_file,
        user=user,
        password=token,
        mechanism="BEARER",
        **spec,
    )


def ok(servers: OAuthServers, port_name: str, mechanism: str) -> dict[str, Any]:
    where = f"server {servers.host}:{servers.ports[port_name]}"
    return {"ok": True, "events": [["proxied", "login-ok", f"{mechanism} on {where}"]]}


def logins(mark: Any) -> list[tuple[str, str]]:
    return [(login["user"], login["method"]) for login in mark.dovecot_logins()]


# ------------------------------------------------------------------------- IMAP


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_imap_with_an_azure_user_token(oauth_servers: OAuthServers, mechanism: str) -> None:
    mark = oauth_servers.log_mark()
    options = {"mail.imap.auth.mechanisms": mechanism}
    result = log_in(oauth_servers, "imaps_oauth", ALICE, token_of(oauth_servers), options=options)
    assert result == ok(oauth_servers, "imaps_oauth", mechanism)
    wait_for(lambda: (ALICE, mechanism) in logins(mark), what=f"Dovecot's {mechanism} login")


def test_imap_starttls_with_a_google_token_prefers_oauthbearer(
    oauth_servers: OAuthServers,
) -> None:
    mark = oauth_servers.log_mark()
    token = str(oauth_servers.google_token(CAROL)["access_token"])
    result = log_in(oauth_servers, "imap_oauth", CAROL, token)
    assert result == ok(oauth_servers, "imap_oauth", "OAUTHBEARER")
    wait_for(lambda: (CAROL, "OAUTHBEARER") in logins(mark), what="Dovecot's login")


@pytest.mark.parametrize("user", [ALICE, BOB])
def test_imap_with_the_daemon_apps_app_only_token(oauth_servers: OAuthServers, user: str) -> None:
    token = str(oauth_servers.app_token()["access_token"])
    result = log_in(oauth_servers, "imaps_oauth", user, token)
    assert result == ok(oauth_servers, "imaps_oauth", "OAUTHBEARER")


# ------------------------------------------------------------------------- POP3


def test_pop3_xoauth2_in_office_365s_two_lines(oauth_servers: OAuthServers) -> None:
    mark = oauth_servers.log_mark()
    options = {
        "mail.pop3.auth.mechanisms": "XOAUTH2",
        "mail.pop3.auth.xoauth2.two.line.authentication.format": True,
    }
    result = log_in(oauth_servers, "pop3s_oauth", ALICE, token_of(oauth_servers), options=options)
    assert result == ok(oauth_servers, "pop3s_oauth", "XOAUTH2")
    wait_for(lambda: (ALICE, "XOAUTH2") in logins(mark), what="Dovecot's POP3 login")


def test_pop3_stls_oauthbearer_in_one_line(oauth_servers: OAuthServers) -> None:
    result = log_in(oauth_servers, "pop3_oauth", BOB, token_of(oauth_servers, BOB))
    assert result == ok(oauth_servers, "pop3_oauth", "OAUTHBEARER")


# --------------------------------------------------- refresh, refusal, outage


@pytest.mark.parametrize(
    ("port_name", "mechanism", "status"),
    [
        ("imaps_oauth", "XOAUTH2", "status 401, scope mail"),
        ("pop3s_oauth", "OAUTHBEARER", "status invalid_token"),
    ],
)
def test_an_expired_token_is_refreshed_and_the_login_goes_on(
    oauth_servers: OAuthServers, port_name: str, mechanism: str, status: str
) -> None:
    """D9: expired token -> NO after the answered error challenge -> the auth
    driver refreshes -> the next login succeeds, at once and on the same connection."""
    protocol = port_name[:4]
    with oauth_servers.idp.restoring() as idp:
        expired = oauth_servers.password_token(ALICE)
        idp.advance(int(expired["expires_in"]) + 1)
        fresh = token_of(oauth_servers)
        result = log_in(
            oauth_servers,
            port_name,
            ALICE,
            str(expired["access_token"]),
            refreshed=[fresh],
            options={f"mail.{protocol}.auth.mechanisms": mechanism},
        )
    assert result["ok"], result
    [failed, logged_in] = result["events"]
    assert failed[1] == "login-failed" and f"token refused by the server ({status})" in failed[2]
    assert logged_in[1:] == ["login-ok", ok(oauth_servers, port_name, mechanism)["events"][0][2]]
    assert expired["access_token"] not in str(result) and fresh not in str(result)


@pytest.mark.parametrize("port_name", ["imaps_oauth", "pop3s_oauth"])
def test_refused_again_after_the_refresh_is_an_authentication_failure(
    oauth_servers: OAuthServers, port_name: str
) -> None:
    with oauth_servers.idp.restoring() as idp:
        first, second = token_of(oauth_servers), token_of(oauth_servers)
        idp.advance(3600 * 24)  # both expired
        result = log_in(oauth_servers, port_name, ALICE, first, refreshed=[second])
    assert (result["ok"], result["error"]) == (False, "AuthenticationFailed")
    assert [e[1] for e in result["events"]] == ["login-failed", "login-failed"]
    assert result["message"].startswith(
        f"login refused for mailbox proxied on server {oauth_servers.host}:"
        f"{oauth_servers.ports[port_name]}: "
    )
    assert "token refused by the server (status invalid_token)" in result["message"]
    assert first not in result["message"] and second not in result["message"]


@pytest.mark.parametrize(
    ("port_name", "said"),
    [
        ("imaps_oauth", "cannot check the login now: [UNAVAILABLE]"),
        ("pop3s_oauth", "cannot open the mailbox now: [SYS/TEMP]"),
    ],
)
def test_an_idp_outage_is_temporary_not_a_refused_login(
    oauth_servers: OAuthServers, port_name: str, said: str
) -> None:
    token = token_of(oauth_servers)
    with oauth_servers.idp.restoring() as idp:
        idp.start_outage(503, endpoints=("introspect",))
        result = log_in(oauth_servers, port_name, ALICE, token)
    assert (result["ok"], result["error"], result["events"]) == (False, "SourceError", [])
    assert said in result["message"]


def test_a_token_login_through_a_proxy(
    oauth_servers: OAuthServers, proxy_servers: dict[str, Any]
) -> None:
    mark = oauth_servers.log_mark()
    proxy = proxy_settings(proxy_servers, "socks_auth")
    options = {"mail.imap.auth.mechanisms": "XOAUTH2"}
    token = token_of(oauth_servers)
    result = log_in(oauth_servers, "imaps_oauth", ALICE, token, proxy=proxy, options=options)
    assert result == ok(oauth_servers, "imaps_oauth", "XOAUTH2")
    rip = proxy_source(proxy_servers, "socks_auth")
    wait_for(
        lambda: any(
            (x["user"], x["method"], x["rip"]) == (ALICE, "XOAUTH2", rip)
            for x in mark.dovecot_logins()
        ),
        what=f"Dovecot's XOAUTH2 login from {rip}",
    )


# ------------------------------------------------------------------------- SMTP


def smtp_settings(servers: OAuthServers, **kw: Any) -> ConnectionSettings:
    return ConnectionSettings(
        host=servers.host,
        port=servers.ports["submission_oauth"],
        security="starttls",
        ca_file=servers.ca_file,
        connect_timeout=20,
        protocol_timeout=20,
        helo_name="gw.example.test",
        **kw,
    )


@pytest.mark.parametrize(("forced", "mechanism"), [(None, "OAUTHBEARER"), ("XOAUTH2", "XOAUTH2")])
def test_smtp_sends_with_a_token(
    oauth_servers: OAuthServers, forced: str | None, mechanism: str
) -> None:
    mark = oauth_servers.log_mark("postfix")
    conn = SMTPConnection.open(
        smtp_settings(oauth_servers, auth_mechanisms=forced),
        Credentials(ALICE, token_of(oauth_servers), "BEARER"),
        1,
    )
    try:
        message = make_message(subject=f"token {mechanism}", to=BOB)
        delivery = conn.send(message, ALICE, [BOB])
    finally:
        conn.close()
    assert delivery.accepted == [BOB]
    wait_for(
        lambda: any((c["method"], c["user"]) == (mechanism, ALICE) for c in mark.postfix_clients()),
        what=f"Postfix's sasl_method={mechanism}",
    )


def test_the_smtp_sender_refreshes_an_expired_token_and_sends(
    oauth_servers: OAuthServers, tmp_path: Path
) -> None:
    path = tmp_path / "postroom.yaml"
    path.write_text(
        "tenant-id: 1\nstore: {driver: memory}\nsmtp-client:\n  server-type: smtp\n"
        f"  server: {oauth_servers.host}\n  port: {oauth_servers.ports['submission_oauth']}\n"
        f"  smtp-connection-security: starttls\n  ca-file: {oauth_servers.ca_file}\n",
        encoding="utf-8",
    )
    sender = Kernel(path, clock=task.Clock(), runner=InlineRunner()).build_sender()
    assert isinstance(sender, SMTPSender)
    events: list[Any] = []
    with oauth_servers.idp.restoring() as idp:
        expired = oauth_servers.password_token(ALICE)
        idp.advance(int(expired["expires_in"]) + 1)
        auth = FakeAuthenticator(
            ALICE, str(expired["access_token"]), "BEARER", refreshed=(token_of(oauth_servers),)
        )
        sender.context = attrs.evolve(
            sender.context, authenticator=auth, auth_event=lambda *e: events.append(e)
        )
        envelope = Envelope(mail_from=ALICE, rcpt_to=[BOB])
        try:
            result = run(sender.send(make_message(subject="refreshed", to=BOB), envelope, "<r@x>"))
        finally:
            run(sender.close())
    assert result.accepted == [BOB]
    assert [e[1] for e in events] == ["login-failed", "login-ok"]
    assert auth.invalidated == 1

"""The gateway with the OAuth auth drivers, end to end through the real servers.

``postroom run --once`` imports over IMAPS with ``azure-ropc``, over POP3S
with ``azure-ropc`` chosen the commercial product's way
(``mail.pop3.auth.mechanisms: XOAUTH2``, two-line XOAUTH2 as Office 365
wants), over IMAP with ``azure-client-credentials`` (an app-only token) and
with ``google-refresh`` and ``google-service-account``; ``postroom send --now`` sends over the OAuth
submission port with ``azure-ropc``. Directly, and with the site's ``proxy``
section (token requests included) through a SOCKS5 and an HTTP proxy: the
Dovecot and Postfix logs show the method each used and where it came from.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.oauth import AZURE_USER_SCOPE, GOOGLE_MAIL, OAuthServers
from tests.integration.servers import make_message, wait_for
from tests.integration.sites import Site, explain
from tests.net.proxies import source as proxy_source

pytestmark = pytest.mark.servers

POSTROOM = Path(sys.executable).with_name("postroom")
ALICE, BOB, CAROL = "alice@contoso.test", "bob@contoso.test", "carol@workspace.test"
DAVE = "dave@workspace.test"


def azure(servers: OAuthServers, **more: Any) -> dict[str, Any]:
    world = servers.world
    return {
        "directory-id": world["tenant"],
        "client-id": world["public_app"],
        "token-endpoint": world["azure_token_url"],
        "token-ca-file": servers.ca_file,
        "scope": AZURE_USER_SCOPE,
        **more,
    }


def site_for(servers: OAuthServers, tmp_path: Path, proxy: dict[str, Any] | None) -> Site:
    world = servers.world
    site = Site(tmp_path, servers)
    site.sections["gateway"] = {"token-encryption-secret": "0123456789abcdef0123456789abcdef"}
    site.sections["secret-google"] = {"password": world["google_secret"]}
    site.sections["secret-daemon"] = {"password": world["daemon_secret"]}
    if proxy is not None:
        site.sections["proxy"] = proxy
    site.mailbox("ropc-imap", ALICE, port="imaps_oauth", security="ssl", auth="azure-ropc",
                 password=world["users"][ALICE], **azure(servers))  # fmt: skip
    site.mailbox(
        "ropc-pop", BOB, kind="pop3", port="pop3s_oauth", security="ssl",
        password=world["users"][BOB],
        **azure(servers, **{"mail.pop3.auth.mechanisms": "XOAUTH2",
                            "mail.pop3.auth.xoauth2.two.line.authentication.format": True}),
    )  # fmt: skip
    site.mailbox(
        "app-imap", BOB, port="imap_oauth", security="starttls", auth="azure-client-credentials",
        **azure(servers, **{"client-id": world["daemon_app"], "secret": "daemon",
                            "scope": "https://outlook.office365.com/.default"}),
    )  # fmt: skip
    refresh = servers.idp.issue_refresh_token(world["google_client"], CAROL, GOOGLE_MAIL)
    site.mailbox("google-imap", CAROL, port="imaps_oauth", security="ssl",
                 auth="google-refresh", password=refresh, **{
                     "client-id": world["google_client"], "secret": "google",
                     "tenant-authority": "https://accounts.google.test/",
                     "token-endpoint": world["google_token_url"],
                     "token-ca-file": servers.ca_file})  # fmt: skip
    site.mailbox("sa-imap", DAVE, port="imaps_oauth", security="ssl",
                 auth="google-service-account", **{
                     "service-account-file": world["service_account_file"],
                     "token-endpoint": world["google_token_url"],
                     "token-ca-file": servers.ca_file})  # fmt: skip
    section = site.smtp_client(ALICE)
    section.update(port=servers.ports["submission_oauth"], auth="azure-ropc",
                   password=world["users"][ALICE], **azure(servers))  # fmt: skip
    return site


def proxy_section(state: dict[str, Any], name: str) -> dict[str, Any]:
    proxy = state["proxies"][name]
    section = {"useProxy": True, "host": proxy["host"], "port": proxy["port"]}
    section["type"] = proxy["kind"]
    if proxy["user"]:
        section |= {"user": proxy["user"], "password": proxy["password"]}
    return section


@pytest.mark.parametrize("via", [None, "socks_auth", "http_auth"])
def test_import_and_send_with_the_oauth_drivers(
    oauth_servers: OAuthServers, proxy_servers: dict[str, Any], tmp_path: Path, via: str | None
) -> None:
    ms = oauth_servers
    ms.clear(ALICE, BOB, CAROL, DAVE)
    for user in (ALICE, BOB, CAROL, DAVE):
        ms.deliver(user, make_message(subject=f"for {user}", to=user))
    proxy = proxy_section(proxy_servers, via) if via else None
    site = site_for(ms, tmp_path, proxy)
    dovecot, postfix = ms.log_mark(), ms.log_mark("postfix")
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    counts = {
        name: site.count(name) for name in ("ropc-imap", "ropc-pop", "app-imap", "google-imap")
    }
    # app-imap and ropc-pop read the same mailbox (bob's): one of them took the message
    assert counts["ropc-imap"] == 1 and counts["google-imap"] == 1
    assert counts["ropc-pop"] + counts["app-imap"] == 1
    rip = proxy_source(proxy_servers, via) if via else ms.host
    logins = {(x["user"], x["method"]) for x in dovecot.dovecot_logins() if x["rip"] == rip}
    assert {(ALICE, "OAUTHBEARER"), (BOB, "XOAUTH2"), (BOB, "OAUTHBEARER"),
            (CAROL, "OAUTHBEARER"), (DAVE, "OAUTHBEARER")} <= logins  # fmt: skip

    sent = subprocess.run(
        [str(POSTROOM), "send", "-c", str(site.path), "--from", ALICE, "--to", DAVE,
         "--subject", f"sent via {via}", "--text", "hello", "--now"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, explain(sent)
    wait_for(
        lambda: any(
            (c["rip"], c["method"], c["user"]) == (rip, "OAUTHBEARER", ALICE)
            for c in postfix.postfix_clients()
        ),
        what=f"Postfix's OAUTHBEARER submission from {rip}",
    )
    for secret in (ms.world["users"][ALICE], ms.world["google_secret"], ms.world["daemon_secret"]):
        assert secret not in done.stderr + sent.stderr

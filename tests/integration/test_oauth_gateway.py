"""The gateway with the four OAuth drivers against the real OAuth servers.

``postroom run --once`` (and ``postroom run``, ``check --connect``,
``mailboxes``) as subprocesses, the real reactor and TLS, on site files whose
mailboxes and smtp-client log in to the "oauth" Dovecot and Postfix's OAuth
submission port with tokens from the project's identity provider
(tests/integration/oauth.py). Each test clears the mailboxes it uses; the
IdP is shared by the run, so its settings change only inside
``idp.restoring()`` and a test revokes only grants it made itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.oauth import GOOGLE_MAIL, LogMark, OAuthServers
from tests.integration.servers import make_message
from tests.integration.sites import Site, explain, http, running_gateway

#: the key that encrypts rotated refresh tokens in the tests' stores
TOKEN_KEY = "test-token-encryption-key-0123456789abcdef"
GUARD = 60.0


def oauth_site(tmp_path: Path, servers: OAuthServers) -> Site:
    site = Site(tmp_path, servers)
    site.sections["gateway"] = {"token-encryption-secret": TOKEN_KEY}
    site.sections["email-processing"] = {"default-domain": "contoso.test"}
    return site


def driver_options(servers: OAuthServers, driver: str, user: str) -> dict[str, Any]:
    """The options of *driver* for *user* on the test IdP (``_`` for ``-``)."""
    world = servers.world
    common = {"auth": driver, "token_ca_file": servers.idp_ca_file}
    if driver == "azure-ropc":
        return common | {
            "password": world["users"][user],
            "directory_id": world["tenant"],
            "client_id": world["public_app"],
            "tenant_authority": servers.idp_url + "/",
        }
    if driver == "azure-client-credentials":
        return common | {
            "directory_id": world["tenant"],
            "client_id": world["daemon_app"],
            "tenant_authority": servers.idp_url + "/",
            "secret": "daemon",
        }
    if driver == "google-refresh":
        refresh = servers.idp.issue_refresh_token(world["google_client"], user, GOOGLE_MAIL)
        return common | {
            "password": refresh,
            "client_id": world["google_client"],
            "secret": "google",
            "token_endpoint": world["google_token_url"],
        }
    assert driver == "google-service-account"
    return common | {"service_account_file": world["service_account_file"]}


def with_secrets(site: Site, servers: OAuthServers) -> None:
    site.sections["secret-daemon"] = {"password": servers.world["daemon_secret"]}
    site.sections["secret-google"] = {"password": servers.world["google_secret"]}


def oauth_mailbox(
    site: Site, servers: OAuthServers, name: str, user: str, driver: str, kind: str = "imap",
    **extra: Any,
) -> dict[str, Any]:
    with_secrets(site, servers)
    port = "imaps_oauth" if kind == "imap" else "pop3s_oauth"
    entry = site.mailbox(
        name, user, kind=kind, port=port, security="ssl",
        **driver_options(servers, driver, user), **extra,
    )  # fmt: skip
    if entry.get("password") == "":
        del entry["password"]  # token users have none
    return entry


def oauth_smtp(site: Site, servers: OAuthServers, user: str, driver: str) -> None:
    with_secrets(site, servers)
    section = site.smtp_client(user)
    section.update(
        {
            "port": servers.ports["submission_oauth"],
            "user": user,
            **{k.replace("_", "-"): v for k, v in driver_options(servers, driver, user).items()},
        }
    )
    if not section.get("password"):
        section.pop("password", None)


def logins(servers: OAuthServers, since: Any, user: str) -> list[dict[str, str]]:
    return [entry for entry in since.dovecot_logins() if entry["user"] == user]


# ------------------------------------------------------------------------ import


#: what tests/plugins/oauth/test_oauth_gateway.py leaves out (it imports with
#: every driver in one run, POP3 with azure-ropc's two-line form)
IMPORTS = [
    ("azure-ropc", "pop3", "alice@contoso.test"),  # one-line XOAUTH2 / OAUTHBEARER
    ("azure-client-credentials", "pop3", "bob@contoso.test"),  # app-only over POP3
    ("azure-client-credentials", "imap", "alice@contoso.test"),  # over implicit TLS
]


@pytest.mark.parametrize(("driver", "kind", "user"), IMPORTS)
def test_import_with_each_driver(
    oauth_servers: OAuthServers, tmp_path: Path, driver: str, kind: str, user: str
) -> None:
    ms = oauth_servers
    ms.clear(user)
    subject = f"import {driver} {kind}"
    ms.deliver(user, make_message(subject=subject, to=user))
    site = oauth_site(tmp_path, ms)
    oauth_mailbox(site, ms, "box", user, driver, kind)
    mark = ms.log_mark()
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    assert [r["subject"] for r in site.rows()] == [subject]
    assert ms.message_count(user) == 0  # removed once the store committed it
    methods = {entry["method"] for entry in logins(ms, mark, user)}
    assert methods and methods <= {"XOAUTH2", "OAUTHBEARER"}, mark.new_text()


# -------------------------------------------------------------------------- send


SENDS = [
    ("azure-ropc", "alice@contoso.test", "bob@contoso.test"),
    ("azure-client-credentials", "bob@contoso.test", "alice@contoso.test"),
    ("google-refresh", "carol@workspace.test", "dave@workspace.test"),
    ("google-service-account", "dave@workspace.test", "carol@workspace.test"),
]


@pytest.mark.parametrize(("driver", "sender", "recipient"), SENDS)
def test_send_with_each_driver(
    oauth_servers: OAuthServers, tmp_path: Path, driver: str, sender: str, recipient: str
) -> None:
    ms = oauth_servers
    ms.clear(recipient)
    site = oauth_site(tmp_path, ms)
    oauth_smtp(site, ms, sender, driver)
    site.write()
    mark = ms.log_mark("postfix")
    queued = site.cli("send", "--from", sender, "--to", recipient, "--subject",
                      f"sent with {driver}", "--text", "Hello.")  # fmt: skip
    assert queued.returncode == 0, explain(queued)
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    ms.wait_for_messages(recipient, 1, timeout=GUARD)
    [message] = ms.messages(recipient)
    assert f"sent with {driver}".encode() in message
    clients = [c for c in mark.postfix_clients() if c["user"] == sender]
    assert clients and clients[0]["method"] in ("XOAUTH2", "OAUTHBEARER"), mark.new_text()


# ----------------------------------------------------------------- token lifecycle


def test_a_rotated_refresh_token_survives_a_restart(
    oauth_servers: OAuthServers, tmp_path: Path
) -> None:
    ms = oauth_servers
    user = "carol@workspace.test"
    with ms.idp.restoring():
        ms.idp.set_rotation(True, ms.world["google_client"])
        ms.clear(user)
        site = oauth_site(tmp_path, ms)
        entry = oauth_mailbox(site, ms, "carol", user, "google-refresh")
        configured = entry["password"]
        for n in (1, 2):  # two processes: the second starts from what the first stored
            ms.deliver(user, make_message(subject=f"rotation {n}", to=user))
            done = site.run_once()
            assert done.returncode == 0, explain(done)
        assert [r["subject"] for r in site.rows()] == ["rotation 1", "rotation 2"]
        # the configured token was spent by the first run: the second used the stored one
        [(state, sealed)] = site.query("SELECT state, refresh_token FROM oauth_grants")
        assert state == "ok" and sealed is not None
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("store.db*"))
        assert configured.encode() not in stored and b"1//" not in stored


def test_an_expired_token_is_refused_then_refreshed_and_the_next_login_succeeds(
    oauth_servers: OAuthServers, tmp_path: Path
) -> None:
    """The IdP's clock moves past the token's life while the gateway keeps it:
    after a reconnect the server refuses it, the gateway gets a new one and
    logs in again without the login back-off."""
    ms = oauth_servers
    user = "alice@contoso.test"
    ms.clear(user)
    site = oauth_site(tmp_path, ms)
    oauth_mailbox(site, ms, "alice", user, "azure-ropc", poll_interval="00:00:01")
    with ms.idp.restoring(), running_gateway(site, "alice") as running:
        before = ms.idp.stats().get("azure-token", 0)
        ms.idp.advance(7200)  # every token the gateway holds is now expired at the IdP
        mark = ms.log_mark()
        ms.doveadm("kick", user)  # the session outlives its token: make it log in again
        ms.deliver(user, make_message(subject="after expiry", to=user))

        def imported() -> bool:
            running()
            return bool(site.rows("subject = ?", "after expiry"))

        ms.wait_for(imported, GUARD, "the message imported after the token expired")
        text = mark.new_text()
        assert "oauth2 failed" in text or "AUTHENTICATIONFAILED" in text or "Inactive" in text, text
        assert ms.idp.stats().get("azure-token", 0) > before
        _status, health = http(site.api_port, "/health")
        assert health["mailboxes"]["alice"]["state"] == "connected"
        assert health["mailboxes"]["alice"]["auth_failures"] == 0


def test_a_revoked_grant_stops_one_mailbox_and_not_the_other(
    oauth_servers: OAuthServers, tmp_path: Path
) -> None:
    ms = oauth_servers
    carol, alice = "carol@workspace.test", "alice@contoso.test"
    ms.clear(carol, alice)
    site = oauth_site(tmp_path, ms)
    entry = oauth_mailbox(site, ms, "carol", carol, "google-refresh")
    oauth_mailbox(site, ms, "alice", alice, "azure-ropc")
    ms.revoke_token(entry["password"])
    ms.deliver(carol, make_message(subject="for carol", to=carol))
    ms.deliver(alice, make_message(subject="for alice", to=alice))
    done = site.run_once()
    assert done.returncode == 1, explain(done)
    assert [r["subject"] for r in site.rows()] == ["for alice"]
    assert ms.message_count(carol) == 1  # left on the server
    listed = {json.loads(line)["name"]: json.loads(line)
              for line in site.cli("mailboxes", "--json").stdout.splitlines()}  # fmt: skip
    assert listed["carol"]["state"] == "needs-reauthorisation"
    assert "invalid_grant" in listed["carol"]["reason"]
    assert listed["alice"]["state"] == "connected"
    # persisted: the next run does not ask the IdP again for carol's grant
    before = ms.idp.stats().get("google-token", 0)
    again = site.run_once()
    assert again.returncode == 1
    assert ms.idp.stats().get("google-token", 0) == before
    checked = site.cli("check", "--connect")
    assert checked.returncode == 1
    [failed] = [line for line in checked.stdout.splitlines() if line.startswith("FAILED")]
    assert "mailbox carol" in failed and "invalid_grant" in failed


def test_an_identity_provider_outage_is_temporary_and_recovers_by_itself(
    oauth_servers: OAuthServers, tmp_path: Path
) -> None:
    ms = oauth_servers
    user = "alice@contoso.test"
    ms.clear(user)
    site = oauth_site(tmp_path, ms)
    oauth_mailbox(site, ms, "alice", user, "azure-ropc")
    with ms.idp.restoring():
        ms.idp.start_outage(503, endpoints=("token",))
        done = site.run_once()
        assert done.returncode == 1
        assert "identity provider unavailable" in done.stderr + done.stdout, explain(done)
        listed = json.loads(site.cli("mailboxes", "--json").stdout.splitlines()[0])
        assert listed["state"] == "connection-failed"
        ms.idp.end_outage()
        ms.deliver(user, make_message(subject="after the outage", to=user))
        with running_gateway(site, "alice"):
            pass  # connected, with a pass done: it recovered without anyone's help
    assert [r["subject"] for r in site.rows()] == ["after the outage"]


# ------------------------------------------------------------- check --connect


def test_check_connect_reports_each_endpoint(oauth_servers: OAuthServers, tmp_path: Path) -> None:
    ms = oauth_servers
    site = oauth_site(tmp_path, ms)
    oauth_mailbox(site, ms, "alice", "alice@contoso.test", "azure-ropc")
    oauth_mailbox(site, ms, "dave", "dave@workspace.test", "google-service-account")
    wrong = site.mailbox("erin", "erin@contoso.test", port="imaps_oauth", security="ssl",
                         password="not-erins-password")  # fmt: skip
    oauth_smtp(site, ms, "bob@contoso.test", "azure-client-credentials")
    site.write()
    done = site.cli("check", "--connect")
    assert done.returncode == 1, explain(done)
    lines = done.stdout.splitlines()
    assert re.match(r"ok +mailbox alice \(\d+\.\d\d s\): logged in with (XOAUTH2|OAUTHBEARER)",
                    lines[0]), lines  # fmt: skip
    assert "capabilities: " in lines[0] and "IMAP4REV1" in lines[0].upper()
    assert lines[1].startswith("ok     mailbox dave")
    assert lines[2].startswith("FAILED mailbox erin") and "login refused" in lines[2]
    assert lines[3].startswith("ok     smtp-client")
    assert lines[4] == "1 of 4 connection(s) failed"
    assert wrong["password"] not in done.stdout + done.stderr


def test_check_connect_names_an_unreachable_proxy(
    oauth_servers: OAuthServers, tmp_path: Path
) -> None:
    ms = oauth_servers
    site = oauth_site(tmp_path, ms)
    oauth_mailbox(site, ms, "alice", "alice@contoso.test", "azure-ropc")
    closed = free_closed_port()
    site.sections["proxy"] = {"useProxy": True, "host": "127.0.0.1", "port": closed}
    site.write()
    done = site.cli("check", "--connect")
    assert done.returncode == 1, explain(done)
    [line, summary] = done.stdout.splitlines()
    assert line.startswith("FAILED mailbox alice") and f"127.0.0.1:{closed}" in line
    assert "proxy" in line and summary == "1 of 1 connection(s) failed"


def free_closed_port() -> int:
    from tests.integration.sites import free_port

    return free_port()


# ------------------------------------------------------------------ no secrets


SECRET_PATTERNS = (
    re.compile(rb"eyJ[A-Za-z0-9_-]{20,}"),  # a JWT (Azure-style access tokens, assertions)
    re.compile(rb"ya29\.[A-Za-z0-9_-]{20,}"),  # Google-style access tokens
    re.compile(rb"1//[A-Za-z0-9_-]{20,}"),  # Google-style refresh tokens
)


def leaks(data: bytes, secrets: list[str]) -> list[str]:
    found = [s for s in secrets if s and s.encode() in data]
    found += [p.pattern.decode() for p in SECRET_PATTERNS if p.search(data)]
    return found


def test_no_secret_in_logs_traces_output_or_store(
    oauth_servers: OAuthServers, tmp_path: Path
) -> None:
    """Every driver with the protocol trace on and debug logging: grep all that
    was written for every secret the site holds and every token shape."""
    ms = oauth_servers
    site = oauth_site(tmp_path, ms)
    users = {"azure-ropc": "alice@contoso.test", "azure-client-credentials": "bob@contoso.test",
             "google-refresh": "carol@workspace.test",
             "google-service-account": "dave@workspace.test"}  # fmt: skip
    entries = []
    for driver, user in users.items():
        ms.clear(user)
        ms.deliver(user, make_message(subject=f"secret check {driver}", to=user))
        entries.append(oauth_mailbox(site, ms, driver, user, driver, enable_debug=True))
    oauth_smtp(site, ms, "alice@contoso.test", "azure-ropc")
    site.sections["smtp-client"]["enable-debug"] = True
    site.write()
    queued = site.cli("send", "--from", "alice@contoso.test", "--to", "bob@contoso.test",
                      "--subject", "secret check", "--text", "x")  # fmt: skip
    assert queued.returncode == 0, explain(queued)
    outputs: list[bytes] = []
    done = site.run_once("-vv")
    assert done.returncode == 0, explain(done)
    outputs += [done.stdout.encode(), done.stderr.encode()]
    for command in (("check", "--connect"), ("mailboxes",), ("interactions", "list")):
        result = site.cli(*command)
        outputs += [result.stdout.encode(), result.stderr.encode()]
    assert b"XOAUTH2" in b"".join(outputs) or b"OAUTHBEARER" in b"".join(outputs)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("store.db*"))
    key_file = Path(ms.world["service_account_file"]).read_text()
    private_key_line = json.loads(key_file)["private_key"].splitlines()[1]
    secrets = [
        *(str(e.get("password", "")) for e in entries),
        ms.world["daemon_secret"], ms.world["google_secret"], private_key_line,
        *ms.world["users"].values(),
    ]  # fmt: skip
    assert leaks(b"".join(outputs), secrets) == []
    assert leaks(stored, secrets) == []


# -------------------------------------------------------- token requests via proxies


PROXIES = ("socks", "socks_auth", "dante", "http", "http_auth")


def proxy_section(proxy: dict[str, Any], **change: Any) -> dict[str, Any]:
    section = {"useProxy": True, "type": proxy["kind"], "host": proxy["host"],
               "port": proxy["port"]}  # fmt: skip
    if proxy["user"]:
        section |= {"user": proxy["user"], "password": proxy["password"]}
    return section | change


def proxied_site(tmp_path: Path, servers: OAuthServers, proxy: dict[str, Any]) -> Site:
    """alice's IMAPS mailbox with azure-ropc, everything through *proxy*."""
    site = oauth_site(tmp_path, servers)
    oauth_mailbox(site, servers, "alice", "alice@contoso.test", "azure-ropc")
    site.sections["proxy"] = proxy
    site.write()
    return site


@pytest.mark.parametrize("name", PROXIES)
def test_token_requests_go_through_each_proxy(
    oauth_servers: OAuthServers, proxy_servers: dict[str, Any], tmp_path: Path, name: str
) -> None:
    ms = oauth_servers
    proxy = proxy_servers["proxies"][name]
    site = proxied_site(tmp_path, ms, proxy_section(proxy))
    seen = LogMark(Path(proxy["log"]))
    done = site.cli("check", "--connect")
    assert done.returncode == 0, explain(done)
    idp = ms.ports["idp"]
    text = seen.new_text()
    assert f"127.0.0.1:{idp}" in text or f"127.0.0.1.{idp}" in text, text  # the token request
    assert proxy.get("password") is None or proxy["password"] not in done.stdout + done.stderr


@pytest.mark.parametrize("name", ("socks_auth", "dante", "http_auth"))
def test_a_token_request_with_wrong_proxy_credentials_names_the_proxy(
    oauth_servers: OAuthServers, proxy_servers: dict[str, Any], tmp_path: Path, name: str
) -> None:
    proxy = proxy_servers["proxies"][name]
    site = proxied_site(
        tmp_path, oauth_servers, proxy_section(proxy, password="not-the-proxy-password")
    )
    done = site.cli("check", "--connect")
    assert done.returncode == 1, explain(done)
    [line, _summary] = done.stdout.splitlines()
    assert "token endpoint" in line and f"{proxy['host']}:{proxy['port']}" in line, line
    assert "credentials" in line or "authentication" in line, line
    assert "not-the-proxy-password" not in done.stdout + done.stderr

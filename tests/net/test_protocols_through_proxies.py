"""IMAP, POP3 and SMTP through every real proxy, against the real Dovecot and Postfix.

Password logins (the OAuth servers come separately): IMAPS and POP3S with TLS
end to end through the tunnel, IMAP and POP3 with STARTTLS/STLS inside it,
SMTP submission with STARTTLS through smtplib's proxied socket. Each proxy
connects onwards from its own loopback address, so the servers' logs prove
the path: Dovecot's ``Login: ... rip=<proxy's address>`` and Postfix's
``client=unknown[<proxy's address>]``. Wrong or missing proxy credentials and
an unreachable proxy fail with an error naming the proxy and never its
password. IMAP and POP3 run on the real reactor in a subprocess
(tests/net/source_client.py); SMTP is blocking and runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from postroom.api import Credentials, ProxySettings
from postroom_smtp.connection import ConnectionSettings, SMTPConnection, SMTPSendError
from tests.integration.servers import MailServers, make_message, wait_for
from tests.net.proxies import free_port, settings, source
from tests.net.source_client import run_source_client

pytestmark = pytest.mark.servers

EVERY = ("socks", "socks_auth", "dante", "http", "http_auth")
WITH_CREDENTIALS = ("socks_auth", "dante", "http_auth")
WRONG = "wrong-Pa55word"

# protocol, port name, security, user
SOURCES = [
    ("imap", "imaps", "ssl", "agent5"),
    ("imap", "imap", "starttls", "agent5"),
    ("pop3", "pop3s", "ssl", "agent6"),
    ("pop3", "pop3", "starttls", "agent6"),
]


def log_count(path: Path, needle: str) -> int:
    return path.read_text(errors="replace").count(needle)


def login(
    servers: MailServers, protocol: str, port_name: str, security: str, user: str, proxy: Any
) -> dict[str, Any]:
    return run_source_client(
        protocol=protocol,
        host=servers.host,
        port=servers.ports[port_name],
        security=security,
        ca_file=servers.ca_file,
        user=user,
        password=servers.password(user),
        proxy=proxy,
    )


@pytest.mark.parametrize("name", EVERY)
@pytest.mark.parametrize(("protocol", "port_name", "security", "user"), SOURCES)
def test_source_logs_in_through_each_proxy(
    proxy_servers: dict[str, Any],
    mail_servers: MailServers,
    name: str,
    protocol: str,
    port_name: str,
    security: str,
    user: str,
) -> None:
    log = mail_servers.logs["dovecot-main"]
    rip = source(proxy_servers, name)
    line = f"{protocol}-login: Info: Login: user=<{user}>, method=PLAIN, rip={rip},"
    before = log_count(log, line)
    result = login(mail_servers, protocol, port_name, security, user, settings(proxy_servers, name))
    port = mail_servers.ports[port_name]
    assert result == {
        "ok": True,
        "events": [["proxied", "login-ok", f"PLAIN on server {mail_servers.host}:{port}"]],
    }
    wait_for(lambda: log_count(log, line) == before + 1, what=f"Dovecot's line {line!r}")


def smtp_settings(servers: MailServers, proxy: dict[str, Any]) -> ConnectionSettings:
    return ConnectionSettings(
        host=servers.host,
        port=servers.ports["submission"],
        security="starttls",
        ca_file=servers.ca_file,
        connect_timeout=20,
        protocol_timeout=20,
        helo_name="gw.example.test",
        proxy=ProxySettings(**proxy),
    )


@pytest.mark.parametrize("name", EVERY)
def test_smtp_submission_through_each_proxy(
    proxy_servers: dict[str, Any], mail_servers: MailServers, name: str
) -> None:
    log = mail_servers.logs["postfix"]
    line = f"client=unknown[{source(proxy_servers, name)}], sasl_method=PLAIN, sasl_username=agent7"
    before = log_count(log, line)
    conn = SMTPConnection.open(
        smtp_settings(mail_servers, settings(proxy_servers, name)),
        Credentials("agent7", mail_servers.password("agent7")),
        1,
    )
    try:
        message = make_message(subject=f"through {name}", to=mail_servers.address("agent8"))
        delivery = conn.send(
            message, mail_servers.address("agent7"), [mail_servers.address("agent8")]
        )
    finally:
        conn.close()
    assert delivery.accepted == [mail_servers.address("agent8")]
    wait_for(lambda: log_count(log, line) == before + 1, what=f"Postfix's line {line!r}")


# ------------------------------------------------------------------ refusals

REFUSED = "the proxy refused our credentials"
NONE_GIVEN = "the proxy requires credentials (none configured)"
ANONYMOUS = {"user": None, "password": None}
CASES = {
    "wrong socks password": ("socks_auth", {"password": WRONG}, f"{REFUSED} (user 'proxyuser')"),
    "wrong dante password": ("dante", {"password": WRONG}, f"{REFUSED} (user 'postroomsocks')"),
    # tinyproxy answers wrong credentials with 401, not 407
    "wrong http password": ("http_auth", {"password": WRONG}, f"{REFUSED} (user 'proxyuser'): 401"),
    "no socks credentials": ("socks_auth", ANONYMOUS, NONE_GIVEN),
    "no http credentials": ("http_auth", ANONYMOUS, f"{NONE_GIVEN}: 407"),
}


def refusal(state: dict[str, Any], case: str) -> tuple[dict[str, Any], str]:
    if case == "unreachable":
        return {"kind": "socks5", "host": "127.0.0.1", "port": free_port()}, (
            "cannot reach the proxy: connection refused"
        )
    name, changes, reason = CASES[case]
    return settings(state, name, **changes), reason


@pytest.mark.parametrize("case", [*CASES, "unreachable"])
@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_proxy_refusals_name_the_proxy_never_a_password(
    proxy_servers: dict[str, Any], mail_servers: MailServers, protocol: str, case: str
) -> None:
    proxy, reason = refusal(proxy_servers, case)
    label = "HTTP" if proxy["kind"] == "http" else "SOCKS5"
    where = f"{label} proxy 127.0.0.1:{proxy['port']}"
    if protocol == "smtp":
        with pytest.raises(SMTPSendError) as info:
            SMTPConnection.open(
                smtp_settings(mail_servers, proxy),
                Credentials("agent7", mail_servers.password("agent7")),
                1,
            )
        message = str(info.value)
        assert not info.value.auth_failed and not info.value.permanent
    else:
        port_name = "imaps" if protocol == "imap" else "pop3s"
        result = login(mail_servers, protocol, port_name, "ssl", "agent5", proxy)
        assert (result["ok"], result["error"], result["events"]) == (False, "SourceError", [])
        message = result["message"]
    assert where in message, message
    assert reason.lower() in message.lower(), message
    assert WRONG not in message and "secret-agent" not in message

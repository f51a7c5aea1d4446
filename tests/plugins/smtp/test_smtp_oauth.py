"""SMTP AUTH with an access token (RFC 4954, XOAUTH2 / OAUTHBEARER), against the
scripted peer: what goes on the wire, the error challenge, temporary failures,
the one retry with a refreshed token, and the trace."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet import task

from postroom.drivers import Credentials
from postroom.errors import SenderAuthenticationFailed, SendError
from postroom.kernel import Kernel
from postroom.model import Envelope
from postroom.runner import InlineRunner
from postroom_smtp.connection import ConnectionSettings, SMTPConnection, SMTPSendError
from postroom_smtp.sender import SMTPSender
from tests.conftest import run
from tests.plugins.fake_auth import FakeAuthenticator
from tests.plugins.smtp.fakes import ScriptedServer, client_factory

USER = "a@example.test"
SETTINGS = ConnectionSettings(
    host="mail.example.test", port=587, security="none", protocol_timeout=120, helo_name="gw.test"
)


def open_with(
    server: ScriptedServer, token: str, settings: ConnectionSettings = SETTINGS
) -> SMTPConnection:
    return SMTPConnection.open(
        settings, Credentials(USER, token, "BEARER"), 1, client_factory=client_factory(server)
    )


def open_error(server: ScriptedServer, token: str, **kw: Any) -> SMTPSendError:
    with pytest.raises(SMTPSendError) as info:
        open_with(server, token, **kw)
    return info.value


def auth_lines(server: ScriptedServer) -> list[bytes]:
    lines = bytes(server.written).split(b"\r\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(b"AUTH "))
    return lines[at:]


def test_oauthbearer_is_preferred_with_host_and_port_on_the_auth_line() -> None:
    server = ScriptedServer(extensions=["AUTH PLAIN XOAUTH2 OAUTHBEARER"], user=USER)
    open_with(server, "tok")
    expected = base64.b64encode(
        b"n,a=a@example.test,\x01host=mail.example.test\x01port=587\x01auth=Bearer tok\x01\x01"
    )
    assert auth_lines(server)[0] == b"AUTH OAUTHBEARER " + expected


def test_the_forced_mechanism_is_honoured() -> None:
    server = ScriptedServer(extensions=["AUTH XOAUTH2 OAUTHBEARER"], user=USER)
    open_with(server, "tok", settings=attrs.evolve(SETTINGS, auth_mechanisms="XOAUTH2"))
    expected = base64.b64encode(b"user=a@example.test\x01auth=Bearer tok\x01\x01")
    assert auth_lines(server)[0] == b"AUTH XOAUTH2 " + expected


def test_no_oauth_mechanism_offered_is_a_clear_error() -> None:
    server = ScriptedServer(extensions=["AUTH PLAIN LOGIN"], user=USER)
    error = open_error(server, "t0k3n")
    assert str(error) == (
        "cannot log in to the SMTP server mail.example.test:587 as a@example.test: the server "
        "offers AUTH PLAIN LOGIN, not XOAUTH2 or OAUTHBEARER"
    )
    assert not error.auth_failed and b"AUTH" not in bytes(server.written)


@pytest.mark.parametrize(
    ("mechanism", "reply", "status"),
    [("XOAUTH2", b"", "status 401, scope mail"), ("OAUTHBEARER", b"AQ==", "status invalid_token")],
)
def test_the_error_challenge_is_answered_then_the_refusal_reported(
    mechanism: str, reply: bytes, status: str
) -> None:
    server = ScriptedServer(extensions=[f"AUTH {mechanism}"], user=USER)
    error = open_error(server, "expired-t0k")
    assert auth_lines(server)[1] == reply  # answered at once: never a hang
    assert error.auth_failed and isinstance(error, SenderAuthenticationFailed)
    assert f"token refused by the server ({status})" in str(error)
    assert "expired-t0k" not in str(error)


def test_454_is_temporary_not_an_authentication_failure() -> None:
    server = ScriptedServer(
        extensions=["AUTH XOAUTH2"],
        user=USER,
        replies={"AUTH": (454, "4.7.0 Temporary authentication failure")},
    )
    error = open_error(server, "tok")
    assert not error.auth_failed and not error.permanent
    assert not isinstance(error, SenderAuthenticationFailed)
    assert "cannot check the login of user a@example.test now" in str(error)
    assert "454 4.7.0 Temporary authentication failure" in str(error)


# ----------------------------------------------------------- the sender's retry

SITE = (
    "tenant-id: 1\nstore: {driver: memory}\nsmtp-client:\n  server-type: smtp\n"
    "  server: mail.example.test\n  smtp-connection-security: none\n"
)


def sender_with(
    tmp_path: Path, server: ScriptedServer, auth: FakeAuthenticator
) -> tuple[SMTPSender, list[tuple[str, str, str]]]:
    path = tmp_path / "postroom.yaml"
    path.write_text(SITE, encoding="utf-8")
    kernel = Kernel(path, clock=task.Clock(), runner=InlineRunner())
    sender = kernel.build_sender()
    assert isinstance(sender, SMTPSender)
    sender.client_factory = client_factory(server)
    events: list[tuple[str, str, str]] = []
    sender.context = attrs.evolve(
        sender.context, authenticator=auth, auth_event=lambda *e: events.append(e)
    )
    return sender, events


def send(sender: SMTPSender) -> Any:
    envelope = Envelope(mail_from=USER, rcpt_to=["b@example.test"])
    return sender.send(b"Subject: hi\r\n\r\nhello\r\n", envelope, "<m1@example.test>")


def test_a_refused_token_is_refreshed_and_the_login_tried_once_more(tmp_path: Path) -> None:
    server = ScriptedServer(extensions=["AUTH XOAUTH2"], user=USER, token="fresh-token")
    auth = FakeAuthenticator(USER, "expired-token", "BEARER", refreshed=("fresh-token",))
    sender, events = sender_with(tmp_path, server, auth)
    result = run(send(sender))
    assert result.accepted == ["b@example.test"]
    assert server.tokens_seen == ["expired-token", "fresh-token"]
    assert server.error_replies == [""]
    assert auth.invalidated == 1
    assert [e[1] for e in events] == ["login-failed", "login-ok"]
    assert len(server.bodies) == 1


def test_refused_again_is_a_sender_authentication_failure(tmp_path: Path) -> None:
    server = ScriptedServer(extensions=["AUTH XOAUTH2"], user=USER, token="good")
    auth = FakeAuthenticator(USER, "expired", "BEARER", refreshed=("revoked",))
    sender, events = sender_with(tmp_path, server, auth)
    with pytest.raises(SenderAuthenticationFailed) as info:
        run(send(sender))
    assert server.tokens_seen == ["expired", "revoked"]
    assert auth.invalidated == 2
    assert [e[1] for e in events] == ["login-failed", "login-failed"]
    assert "revoked" not in str(info.value) and "expired" not in str(info.value)


def test_the_same_token_again_is_not_retried(tmp_path: Path) -> None:
    server = ScriptedServer(extensions=["AUTH XOAUTH2"], user=USER, token="good")
    sender, _events = sender_with(tmp_path, server, FakeAuthenticator(USER, "bad", "BEARER"))
    with pytest.raises(SenderAuthenticationFailed):
        run(send(sender))
    assert server.tokens_seen == ["bad"]


def test_a_temporary_failure_is_not_retried_nor_an_auth_failure(tmp_path: Path) -> None:
    server = ScriptedServer(
        extensions=["AUTH XOAUTH2"], user=USER, replies={"AUTH": (454, "4.7.0 Try later")}
    )
    auth = FakeAuthenticator(USER, "tok", "BEARER", refreshed=("other",))
    sender, events = sender_with(tmp_path, server, auth)
    with pytest.raises(SendError) as info:
        run(send(sender))
    assert not isinstance(info.value, SenderAuthenticationFailed)
    assert not info.value.permanent
    assert auth.invalidated == 0 and events == []


def test_the_token_never_reaches_the_trace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    server = ScriptedServer(extensions=["AUTH XOAUTH2"], user=USER, token="fresh-t0ken")
    auth = FakeAuthenticator(USER, "old-t0ken", "BEARER", refreshed=("fresh-t0ken",))
    sender, _events = sender_with(tmp_path, server, auth)
    sender.settings = attrs.evolve(sender.settings, debug=True)
    run(send(sender))
    trace = "\n".join(r.getMessage() for r in caplog.records if r.name == "postroom.trace")
    assert "AUTH XOAUTH2 <redacted>" in trace
    assert "t0ken" not in trace


def test_the_sender_takes_the_sites_proxy(tmp_path: Path) -> None:
    from postroom.api import ProxySettings

    path = tmp_path / "postroom.yaml"
    path.write_text(
        SITE + "proxy:\n  useProxy: true\n  host: proxy.test\n  port: 1080\n", encoding="utf-8"
    )
    sender = Kernel(path, clock=task.Clock(), runner=InlineRunner()).build_sender()
    assert isinstance(sender, SMTPSender)
    assert sender.settings.proxy == ProxySettings(kind="socks5", host="proxy.test", port=1080)

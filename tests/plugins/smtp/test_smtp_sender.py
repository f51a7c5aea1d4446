"""The sender as the kernel builds it: options, pooling per send, errors, events.

The kernel reads a real site configuration (so the option declarations are
tested), runs blocking calls inline and uses a fake clock; the SMTP peer is
the scripted fake of ``fakes.py`` (client logic only, not a server).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet import task

from postroom.config.types import Secret
from postroom.drivers import SendResult
from postroom.errors import ConfigErrors, SenderAuthenticationFailed, SendError
from postroom.kernel import Kernel
from postroom.model import Envelope
from postroom.runner import InlineRunner
from postroom_smtp.connection import SMTPSendError
from postroom_smtp.sender import SMTPSender
from tests.conftest import run
from tests.plugins.smtp.fakes import ScriptedServer, client_factory

MESSAGE = b"From: agent1@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def site(tmp_path: Path, smtp: str) -> Path:
    path = tmp_path / "postroom.yaml"
    path.write_text(
        "tenant-id: 1\nstore: {driver: memory}\nsmtp-client:\n  server-type: smtp\n" + smtp,
        encoding="utf-8",
    )
    return path


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def events() -> list[tuple[str, str, str]]:
    return []


def build(
    tmp_path: Path,
    clock: task.Clock,
    server: ScriptedServer,
    events: list[tuple[str, str, str]] | None = None,
    smtp: str = "  server: mail.example.test\n  smtp-connection-security: none\n",
) -> SMTPSender:
    kernel = Kernel(site(tmp_path, smtp), clock=clock, runner=InlineRunner())
    sender = kernel.build_sender()
    assert isinstance(sender, SMTPSender)
    sender.client_factory = client_factory(server)
    if events is not None:

        def record(mailbox: str, event: str, detail: str) -> Any:
            events.append((mailbox, event, detail))

        sender.context = attrs.evolve(sender.context, auth_event=record)
    return sender


def send(sender: SMTPSender, mail_from: str = "agent1@example.test", **kw: Any) -> SendResult:
    envelope = Envelope(
        mail_from=mail_from, rcpt_to=kw.pop("rcpt_to", ["agent2@example.test"]), **kw
    )
    result = run(sender.send(MESSAGE, envelope, "<m1@example.test>"))
    assert isinstance(result, SendResult)
    return result


def send_error(sender: SMTPSender, **kw: Any) -> SendError:
    with pytest.raises(SendError) as info:
        send(sender, **kw)
    return info.value


def test_options_and_their_defaults(tmp_path: Path, clock: task.Clock) -> None:
    sender = build(tmp_path, clock, ScriptedServer())
    s = sender.settings
    assert (s.host, s.port, s.security, s.connect_timeout, s.protocol_timeout) == (
        "mail.example.test",
        587,
        "none",
        30.0,
        120.0,
    )
    assert sender.pool.size == 1
    assert sender.pool.check_idle == 30.0
    assert sender.pool.max_idle == 300.0
    assert sender.context.authenticator is None


def test_bad_pool_size_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="cnx-pool-size"):
        Kernel(site(tmp_path, "  server: x\n  cnx-pool-size: 0\n"))


def test_durations_are_read_as_hh_mm_ss(tmp_path: Path, clock: task.Clock) -> None:
    smtp = (
        "  server: x\n  cnx-pool-size: 3\n  cnx-check-idle-time: '00:00:10'\n"
        "  cnx-max-idle-time: '00:01:00'\n  protocol-timeout: '00:00:45'\n"
    )
    sender = build(tmp_path, clock, ScriptedServer(), smtp=smtp)
    assert (sender.pool.size, sender.pool.check_idle, sender.pool.max_idle) == (3, 10.0, 60.0)
    assert sender.settings.protocol_timeout == 45.0


def test_several_messages_over_one_connection(tmp_path: Path, clock: task.Clock) -> None:
    server = ScriptedServer()
    sender = build(tmp_path, clock, server)
    for _ in range(3):
        result = send(sender)
        assert result.accepted == ["agent2@example.test"]
        assert result.detail == "mail.example.test:587: 250 2.0.0 Ok: queued as FAKE1"
        clock.advance(1)
    assert sender.stats.opened == 1 and sender.stats.reused == 2
    assert sum(c.startswith("EHLO") for c in server.commands) == 1
    run(sender.close())
    assert server.commands[-1] == "QUIT"


def test_noop_before_reusing_a_connection_idle_too_long(tmp_path: Path, clock: task.Clock) -> None:
    server = ScriptedServer()
    sender = build(tmp_path, clock, server)
    send(sender)
    clock.advance(31)
    send(sender)
    assert server.commands[-4:-2] == [
        "NOOP",
        f"MAIL FROM:<agent1@example.test> SIZE={len(MESSAGE)}",
    ]
    assert sender.stats.checks == 1 and sender.stats.opened == 1


def test_a_connection_that_fails_noop_is_replaced(tmp_path: Path, clock: task.Clock) -> None:
    server = ScriptedServer()
    sender = build(tmp_path, clock, server)
    send(sender)
    server.replies["NOOP"] = (421, "4.4.2 timeout exceeded")
    clock.advance(31)
    send(sender)
    del server.replies["NOOP"]
    assert sender.stats.check_failures == 1 and sender.stats.opened == 2


def test_idle_connections_are_closed_after_max_idle(tmp_path: Path, clock: task.Clock) -> None:
    server = ScriptedServer()
    sender = build(tmp_path, clock, server)
    send(sender)
    clock.advance(300)
    assert server.commands[-1] == "QUIT"
    assert sender.pool.idle == 0 and sender.stats.expired == 1


def test_a_stale_pooled_connection_is_retried_once_on_a_new_one(
    tmp_path: Path, clock: task.Clock
) -> None:
    server = ScriptedServer()
    sender = build(tmp_path, clock, server)
    send(sender)
    answers = iter([(421, "4.4.2 Error: timeout exceeded")])
    server.replies["MAIL"] = lambda line: next(answers, (250, "2.1.0 Ok"))
    clock.advance(5)  # below cnx-check-idle-time: no NOOP, the MAIL finds out
    result = send(sender)
    assert result.accepted == ["agent2@example.test"]
    assert sender.stats.opened == 2 and sender.stats.discarded == 1
    assert len(server.bodies) == 2


def test_a_permanent_refusal_keeps_the_connection(tmp_path: Path, clock: task.Clock) -> None:
    server = ScriptedServer(replies={"RCPT nobody@elsewhere.test": (550, "5.1.1 unknown")})
    sender = build(tmp_path, clock, server)
    error = send_error(sender, rcpt_to=["nobody@elsewhere.test"])
    assert error.permanent
    send(sender)
    assert sender.stats.opened == 1


def test_a_broken_send_is_temporary_and_the_connection_is_not_reused(
    tmp_path: Path, clock: task.Clock
) -> None:
    server = ScriptedServer(hang_up_on={"END"})
    sender = build(tmp_path, clock, server)
    error = send_error(sender)
    assert not error.permanent
    assert sender.stats.discarded == 1 and sender.pool.in_use == 0
    server.hang_up_on.clear()
    server.closed = False
    send(sender)
    assert sender.stats.opened == 2


def test_partial_refusal_is_a_success_with_refused_filled(
    tmp_path: Path, clock: task.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server = ScriptedServer(replies={"RCPT gone@example.test": (550, "5.1.1 no such user")})
    sender = build(tmp_path, clock, server)
    result = send(sender, rcpt_to=["agent2@example.test", "gone@example.test"])
    assert result.accepted == ["agent2@example.test"]
    assert result.refused == {"gone@example.test": "550 5.1.1 no such user"}
    assert "refused 1 of 2 recipients" in caplog.text


def test_dsn_dropped_is_warned_once(
    tmp_path: Path, clock: task.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server = ScriptedServer(extensions=["SIZE 1000000"])
    sender = build(tmp_path, clock, server)
    for _ in range(2):
        send(sender, mail_options=["RET=HDRS"], rcpt_options=["NOTIFY=FAILURE"])
    warnings = [r for r in caplog.records if "does not announce DSN" in r.getMessage()]
    assert len(warnings) == 1
    assert "RET=HDRS NOTIFY=FAILURE" in warnings[0].getMessage()
    assert all("RET=" not in c and "NOTIFY=" not in c for c in server.commands)


def test_an_envelope_error_is_permanent_and_keeps_the_connection(
    tmp_path: Path, clock: task.Clock
) -> None:
    sender = build(tmp_path, clock, ScriptedServer())
    error = send_error(sender, rcpt_to=["a@example.test\r\nDATA"])
    assert error.permanent
    assert sender.pool.idle == 1 and sender.stats.discarded == 0


AUTH = (
    "  server: mail.example.test\n  smtp-connection-security: none\n"
    "  enable-authentication: true\n  user: agent1\n  password: {password}\n"
)


def test_login_through_the_basic_auth_driver(
    tmp_path: Path, clock: task.Clock, events: list[tuple[str, str, str]]
) -> None:
    server = ScriptedServer(extensions=["AUTH PLAIN LOGIN"], password="secret-agent1")
    sender = build(tmp_path, clock, server, events, smtp=AUTH.format(password="secret-agent1"))
    send(sender)
    send(sender)
    assert sum(c.startswith("AUTH PLAIN") for c in server.commands) == 1
    assert events == [("smtp-client", "login-ok", "logged in to mail.example.test:587 as agent1")]


def test_refused_login_is_temporary_invalidates_and_reports(
    tmp_path: Path, clock: task.Clock, events: list[tuple[str, str, str]]
) -> None:
    server = ScriptedServer(extensions=["AUTH PLAIN"], password="secret-agent1")
    sender = build(tmp_path, clock, server, events, smtp=AUTH.format(password="wrong-one"))
    invalidated: list[bool] = []
    authenticator = sender.context.authenticator
    authenticator.invalidate = lambda: invalidated.append(True)
    error = send_error(sender)
    assert isinstance(error, SMTPSendError) and not error.permanent
    assert isinstance(error, SenderAuthenticationFailed)  # the outbox pauses, not the entry
    assert "mail.example.test:587 refused the login of user agent1" in str(error)
    assert "wrong-one" not in str(error)
    assert invalidated == [True]
    assert [e[1] for e in events] == ["login-failed"]
    assert sender.pool.in_use == 0


def test_send_as_error_through_the_sender(tmp_path: Path, clock: task.Clock) -> None:
    not_owned = "5.7.1 <agent2@example.test>: Sender address rejected: not owned by user agent1"
    server = ScriptedServer(
        extensions=["AUTH PLAIN"], password="secret-agent1", replies={"RCPT": (553, not_owned)}
    )
    sender = build(tmp_path, clock, server, smtp=AUTH.format(password="secret-agent1"))
    error = send_error(sender, mail_from="agent2@example.test")
    assert error.permanent
    assert str(error).startswith(
        "the server refused to let agent1 send as agent2@example.test: grant send-as rights "
        "or use the user's own address (server said: 553 5.7.1"
    )


def test_clear_text_password_is_warned_about(
    tmp_path: Path, clock: task.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    build(tmp_path, clock, ScriptedServer(), smtp=AUTH.format(password="x"))
    assert "in clear text" in caplog.text


def test_the_password_is_a_secret_option(tmp_path: Path, clock: task.Clock) -> None:
    sender = build(tmp_path, clock, ScriptedServer(), smtp=AUTH.format(password="hidden"))
    assert isinstance(sender.context.authenticator.config.get("password"), Secret)

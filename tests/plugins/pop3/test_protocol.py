"""PostroomPOP3Client on a StringTransport and a task.Clock: the gaps it closes."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, error, task
from twisted.internet.testing import StringTransport
from twisted.mail.pop3 import (
    InsecureAuthenticationDisallowed,
    LineTooLong,
    ServerErrorResponse,
    TLSNotSupportedError,
)
from twisted.python.failure import Failure

from postroom.net.trace import Tracer
from postroom_pop3.protocol import LINE_LIMIT, PostroomPOP3Client
from postroom_pop3.spool import SpoolWriter
from tests.plugins.pop3.fakes import SSLStringTransport, TLSStringTransport, stuff


def outcome(d: defer.Deferred[Any]) -> Any:
    """What *d* fired with (a Failure for an error); fails when it has not fired."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def connected(
    transport: StringTransport | None = None, timeout: float = 0, **kw: Any
) -> tuple[PostroomPOP3Client, StringTransport, task.Clock]:
    clock = task.Clock()
    client = PostroomPOP3Client(clock=clock, timeout=timeout, **kw)
    transport = transport if transport is not None else TLSStringTransport()
    client.makeConnection(transport)
    client.dataReceived(b"+OK ready\r\n")
    assert outcome(client.greeted) == b"ready"
    return client, transport, clock


def sent(transport: StringTransport) -> bytes:
    data = transport.value()
    transport.clear()
    return bytes(data)


# ------------------------------------------------------------------ RETR


MESSAGE = b"Subject: hi\r\n\r\n.hidden dot\r\nbody\r\n"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 100000])
def test_retr_streams_into_the_spool_in_any_chunking(tmp_path: Path, chunk: int) -> None:
    client, transport, _clock = connected()
    sink = SpoolWriter(tmp_path / "m")
    d = client.retrieve_to(0, sink)
    assert sent(transport) == b"RETR 1\r\n"
    data = b"+OK 40 octets\r\n" + stuff(MESSAGE) + b"+OK 1 320\r\n"
    # the answer to the next command arrives in the same chunk as the body's end
    follow = client.stat()
    for i in range(0, len(data), chunk):
        client.dataReceived(data[i : i + chunk])
    assert outcome(d) is sink
    assert (tmp_path / "m").read_bytes() == MESSAGE
    assert sent(transport) == b"STAT\r\n"
    assert outcome(follow) == (1, 320)


def test_next_command_after_a_retr_uses_line_mode_again(tmp_path: Path) -> None:
    client, transport, _clock = connected()
    d = client.retrieve_to(0, SpoolWriter(tmp_path / "m"))
    client.dataReceived(b"+OK\r\n" + stuff(MESSAGE))
    outcome(d)
    sent(transport)
    noop = client.noop()
    assert sent(transport) == b"NOOP\r\n"
    client.dataReceived(b"+OK fine\r\n")
    assert outcome(noop) == b"fine"


def test_a_100_kb_line_is_fetched(tmp_path: Path) -> None:
    line = b"A" * 100_000
    message = b"Subject: long\r\n\r\n" + line + b"\r\nend\r\n"
    client, _transport, _clock = connected()
    d = client.retrieve_to(0, SpoolWriter(tmp_path / "m"))
    data = b"+OK\r\n" + stuff(message)
    for i in range(0, len(data), 16384):
        client.dataReceived(data[i : i + 16384])
    outcome(d)
    assert (tmp_path / "m").read_bytes() == message
    assert not client.lost


def test_a_100_kb_line_in_a_listing_is_read() -> None:
    client, _transport, _clock = connected()
    d = client.capabilities(useCache=False)
    client.dataReceived(b"+OK\r\nX-LONG " + b"v" * 100_000 + b"\r\nUIDL\r\n.\r\n")
    caps = outcome(d)
    assert b"UIDL" in caps and len(caps[b"X-LONG"][0]) == 100_000


def test_a_line_over_the_limit_fails_the_command_and_aborts() -> None:
    client, transport, _clock = connected()
    d = client.capabilities(useCache=False)
    client.dataReceived(b"+OK\r\n" + b"x" * (LINE_LIMIT + 10))
    result = outcome(d)
    assert isinstance(result, Failure) and result.check(LineTooLong)
    assert transport.disconnecting and client.lost


def test_retr_error_answer_discards_the_spool(tmp_path: Path) -> None:
    client, _transport, _clock = connected()
    d = client.retrieve_to(4, SpoolWriter(tmp_path / "m"))
    client.dataReceived(b"-ERR no such message\r\n")
    result = outcome(d)
    assert result.check(ServerErrorResponse)
    assert not (tmp_path / "m").exists()
    assert not client.lost


def test_connection_lost_mid_retr_fails_every_waiter(tmp_path: Path) -> None:
    client, _transport, _clock = connected()
    d = client.retrieve_to(0, SpoolWriter(tmp_path / "m"))
    queued = client.noop()
    client.dataReceived(b"+OK\r\nSubject: half\r\n")
    client.connectionLost(Failure(error.ConnectionLost("gone")))
    assert outcome(d).check(error.ConnectionLost)
    assert outcome(queued).check(error.ConnectionLost)
    assert not (tmp_path / "m").exists()
    assert outcome(client.closed) is None
    assert client.close_reason is not None and client.close_reason.check(error.ConnectionLost)


def test_spool_write_failure_aborts(tmp_path: Path) -> None:
    client, transport, _clock = connected()
    sink = SpoolWriter(tmp_path / "m")

    def broken(_data: bytes) -> bytes | None:
        raise OSError(28, "No space left on device")

    sink.feed = broken  # type: ignore[method-assign,assignment]
    d = client.retrieve_to(0, sink)
    client.dataReceived(b"+OK\r\nbody\r\n")
    assert outcome(d).check(OSError)
    assert transport.disconnecting


# ------------------------------------------------------------------ timeouts


def test_no_answer_times_out_on_the_clock() -> None:
    client, transport, clock = connected(timeout=30)
    d = client.noop()
    clock.advance(29)
    assert not d.called
    clock.advance(2)
    assert outcome(d).check(error.TimeoutError)
    assert transport.disconnecting and client.lost


def test_a_slow_body_keeps_the_timer_fresh(tmp_path: Path) -> None:
    client, _transport, clock = connected(timeout=30)
    d = client.retrieve_to(0, SpoolWriter(tmp_path / "m"))
    client.dataReceived(b"+OK\r\n")
    for _ in range(10):
        clock.advance(20)
        client.dataReceived(b"line\r\n")
    client.dataReceived(b".\r\n")
    assert outcome(d).size == 60


def test_idle_between_commands_is_not_a_timeout() -> None:
    client, transport, clock = connected(timeout=30)
    clock.advance(300)
    assert not client.lost and not transport.disconnecting
    d = client.noop()
    clock.advance(29)  # the server gets its full time after a long idle
    assert not d.called
    client.dataReceived(b"+OK\r\n")
    assert outcome(d) == b""


def test_no_timer_left_once_the_answer_is_complete(tmp_path: Path) -> None:
    """The shared ResponseTimer runs only while an answer is due (as IMAP's)."""
    client, _transport, clock = connected(timeout=30)
    assert clock.getDelayedCalls() == []  # greeted, nothing asked
    d = client.noop()
    assert len(clock.getDelayedCalls()) == 1
    client.dataReceived(b"+OK\r\n")
    assert outcome(d) == b"" and clock.getDelayedCalls() == []
    d = client.retrieve_to(0, SpoolWriter(tmp_path / "m"))
    client.dataReceived(b"+OK\r\nbody\r\n.\r\n")
    assert outcome(d).size == 6 and clock.getDelayedCalls() == []


def test_no_greeting_times_out() -> None:
    clock = task.Clock()
    client = PostroomPOP3Client(clock=clock, timeout=10)
    client.makeConnection(StringTransport())
    clock.advance(11)
    assert outcome(client.greeted).check(error.TimeoutError)


def test_error_greeting_fails_greeted() -> None:
    clock = task.Clock()
    client = PostroomPOP3Client(clock=clock)
    transport = StringTransport()
    client.makeConnection(transport)
    client.dataReceived(b"-ERR too many connections\r\n")
    client.connectionLost(Failure(error.ConnectionDone()))
    result = outcome(client.greeted)
    assert result.check(error.ConnectionRefusedError)
    assert "too many connections" in str(result.value)


# ------------------------------------------------------------------ TLS and login


def test_stls_not_offered_fails_and_sends_nothing_more() -> None:
    client, transport, _clock = connected()
    d = client.start_tls_verified("creator")
    assert sent(transport) == b"CAPA\r\n"
    client.dataReceived(b"+OK\r\nUSER\r\nUIDL\r\n.\r\n")
    assert outcome(d).check(TLSNotSupportedError)
    assert sent(transport) == b""
    assert transport.tls_creator is None  # type: ignore[attr-defined]


def test_stls_upgrades_with_the_given_creator() -> None:
    client, transport, _clock = connected()
    d = client.start_tls_verified("verifying-creator")
    assert sent(transport) == b"CAPA\r\n"
    client.dataReceived(b"+OK\r\nSTLS\r\n.\r\n")
    assert sent(transport) == b"STLS\r\n"
    client.dataReceived(b"+OK go\r\n")
    assert transport.tls_creator == "verifying-creator"  # type: ignore[attr-defined]
    assert sent(transport) == b"CAPA\r\n"  # capabilities are read again over TLS
    client.dataReceived(b"+OK\r\nUSER\r\n.\r\n")
    assert b"USER" in outcome(d)
    assert client.secure


def test_start_tls_needs_a_creator() -> None:
    client, _transport, _clock = connected()
    assert outcome(client.start_tls_verified(None)).check(ValueError)


def test_user_pass_refused_over_clear_text() -> None:
    client, transport, _clock = connected(transport=StringTransport())
    d = client.login_user_pass(b"agent1", b"pw")
    assert outcome(d).check(InsecureAuthenticationDisallowed)
    assert sent(transport) == b""


def test_user_pass_allowed_over_clear_text_when_the_site_says_so() -> None:
    client, transport, _clock = connected(transport=StringTransport(), allow_insecure_login=True)
    d = client.login_user_pass(b"agent1", b"pw")
    assert sent(transport) == b"USER agent1\r\n"
    client.dataReceived(b"+OK\r\n")
    assert sent(transport) == b"PASS pw\r\n"
    client.dataReceived(b"+OK Logged in.\r\n")
    assert outcome(d) == b"Logged in."


def test_user_pass_over_implicit_tls() -> None:
    client, transport, _clock = connected(transport=SSLStringTransport())
    d = client.login_user_pass(b"agent1", b"pw")
    assert sent(transport) == b"USER agent1\r\n"
    client.dataReceived(b"+OK\r\n")
    client.dataReceived(b"+OK\r\n")
    assert outcome(d) == b""


def test_apop_challenge_in_the_greeting_is_not_used() -> None:
    """Twisted's login() switches to APOP (MD5) on a greeting challenge; we never do."""
    clock = task.Clock()
    client = PostroomPOP3Client(clock=clock)
    transport = SSLStringTransport()
    client.makeConnection(transport)
    client.dataReceived(b"+OK ready <1896.697170952@dbc.mtview.ca.us>\r\n")
    client.login_user_pass(b"u", b"p")
    assert sent(transport) == b"USER u\r\n"


# ------------------------------------------------------------------ XOAUTH2


XOAUTH2_IR = base64.b64encode(b"user=agent1@contoso.example\x01auth=Bearer ya29.token\x01\x01")
OAUTHBEARER_IR = base64.b64encode(
    b"n,a=agent1@contoso.example,\x01host=pop.test\x01port=995\x01auth=Bearer ya29.token\x01\x01"
)


def bearer(client: PostroomPOP3Client, mechanism: str = "XOAUTH2", two_line: bool = False) -> Any:
    return client.authenticate_bearer(
        mechanism, "agent1@contoso.example", "ya29.token", "pop.test", 995, two_line=two_line
    )


@pytest.mark.parametrize(
    ("mechanism", "initial"), [("XOAUTH2", XOAUTH2_IR), ("OAUTHBEARER", OAUTHBEARER_IR)]
)
def test_bearer_one_line_form_by_default(mechanism: str, initial: bytes) -> None:
    client, transport, _clock = connected(transport=SSLStringTransport())
    d, exchange = bearer(client, mechanism)
    assert sent(transport) == b"AUTH " + mechanism.encode() + b" " + initial + b"\r\n"
    client.dataReceived(b"+OK Logged in.\r\n")  # +OK ends it: not taken for a challenge
    assert outcome(d) == b"Logged in."
    assert exchange.challenge is None


def test_xoauth2_two_line_form() -> None:
    """Office 365: ``AUTH XOAUTH2`` alone, then the base64 after the ``+``."""
    client, transport, _clock = connected(transport=SSLStringTransport())
    d, _exchange = bearer(client, two_line=True)
    assert sent(transport) == b"AUTH XOAUTH2\r\n"
    client.dataReceived(b"+ \r\n")
    assert sent(transport) == XOAUTH2_IR + b"\r\n"
    client.dataReceived(b"+OK User successfully authenticated.\r\n")
    assert outcome(d) == b"User successfully authenticated."


def test_xoauth2_two_line_bare_plus_continuation() -> None:
    client, transport, _clock = connected(transport=SSLStringTransport())
    d, _exchange = bearer(client, two_line=True)
    sent(transport)
    client.dataReceived(b"+\r\n")
    assert sent(transport) == XOAUTH2_IR + b"\r\n"
    client.dataReceived(b"+OK\r\n")
    assert outcome(d) == b""


@pytest.mark.parametrize(
    ("mechanism", "two_line", "json", "reply"),
    [
        ("XOAUTH2", False, b'{"status":"401","schemes":"bearer"}', b"\r\n"),
        ("XOAUTH2", True, b'{"status":"401","schemes":"bearer"}', b"\r\n"),
        ("OAUTHBEARER", False, b'{"status":"invalid_token"}', b"AQ==\r\n"),
    ],
)
def test_error_challenge_is_answered_then_the_err_fails_it(
    mechanism: str, two_line: bool, json: bytes, reply: bytes
) -> None:
    """Dovecot sends ``+ <base64 JSON>`` before the -ERR (poplib takes that for
    success and hangs): it is answered, and the -ERR fails the login."""
    client, transport, _clock = connected(transport=SSLStringTransport())
    d, exchange = bearer(client, mechanism, two_line=two_line)
    if two_line:
        client.dataReceived(b"+ \r\n")
    sent(transport)
    challenge = base64.b64encode(json)
    client.dataReceived(b"+ " + challenge + b"\r\n")
    assert sent(transport) == reply
    assert not d.called
    client.dataReceived(b"-ERR [AUTH] Authentication failed.\r\n")
    failure = outcome(d)
    assert failure.check(ServerErrorResponse)
    assert failure.value.args[0] == b"[AUTH] Authentication failed."
    assert exchange.challenge == challenge


# ------------------------------------------------------------------ traces


def test_trace_redacts_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    client, _transport, _clock = connected(
        transport=SSLStringTransport(), tracer=Tracer("box1", True)
    )
    client.login_user_pass(b"agent1", b"hunter2-secret")
    client.dataReceived(b"+OK\r\n")
    client.dataReceived(b"+OK Logged in.\r\n")
    text = caplog.text
    assert "box1 C: USER agent1" in text
    assert "box1 C: PASS <redacted>" in text
    assert "hunter2" not in text
    assert "box1 S: +OK Logged in." in text


def test_trace_redacts_the_xoauth2_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    client, _transport, _clock = connected(
        transport=SSLStringTransport(), tracer=Tracer("box1", True)
    )
    client.authenticate_bearer("XOAUTH2", "agent1", "ya29.secret-token", "h", 995, two_line=True)
    client.dataReceived(b"+ \r\n")
    client.dataReceived(b"+OK\r\n")
    token_b64 = base64.b64encode(b"user=agent1\x01auth=Bearer ya29.secret-token\x01\x01")
    assert "C: AUTH XOAUTH2" in caplog.text
    assert "C: <redacted>" in caplog.text
    assert token_b64.decode() not in caplog.text and "secret-token" not in caplog.text


def test_trace_summarises_message_bodies(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    client, _transport, _clock = connected(tracer=Tracer("box1", True))
    d = client.retrieve_to(0, SpoolWriter(tmp_path / "m"))
    body = b"Subject: private\r\n\r\nconfidential\r\n"
    client.dataReceived(b"+OK\r\n" + stuff(body))
    outcome(d)
    assert "C: RETR 1" in caplog.text
    assert f"[message data: {len(body)} bytes]" in caplog.text
    assert "confidential" not in caplog.text


def test_no_trace_when_debug_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    client, _transport, _clock = connected(tracer=Tracer("box1", False))
    client.noop()
    client.dataReceived(b"+OK\r\n")
    assert "NOOP" not in caplog.text

"""The IMAP4Client subclass: the gaps of Twisted's client, one by one, on a fake clock."""

from __future__ import annotations

import base64
import io
import logging
import re
from typing import Any

import pytest
from OpenSSL import SSL
from twisted.internet import error, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from postroom.errors import SourceError
from postroom.net.trace import Tracer
from postroom_imap.client import (
    IMAPClient,
    IMAPCommandError,
    fetch_items,
    sequence_set,
)
from tests.conftest import run


class Transport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().loseConnection()


def connected(
    caps: str = "IMAP4rev1 IDLE", timeout: float = 30.0, debug: bool = False
) -> tuple[IMAPClient, Transport, task.Clock]:
    clock = task.Clock()
    client = IMAPClient(
        clock=clock,
        server="server imap.test:143",
        protocol_timeout=timeout,
        tracer=Tracer("support", debug),
    )
    transport = Transport()
    client.makeConnection(transport)
    client.dataReceived(b"* OK [CAPABILITY " + caps.encode() + b"] ready\r\n")
    assert client.greeting.called
    return client, transport, clock


def sent(transport: Transport) -> list[bytes]:
    lines = transport.value().split(b"\r\n")
    transport.clear()
    return [line for line in lines if line]


def feed(client: IMAPClient, *lines: bytes) -> None:
    client.dataReceived(b"".join(line + b"\r\n" for line in lines))


# ------------------------------------------------------------------- helpers


def test_sequence_set_compresses_runs() -> None:
    assert sequence_set([5, 1, 2, 3, 3, 9, 10, 12]) == b"1:3,5,9:10,12"
    assert sequence_set([7]) == b"7"
    with pytest.raises(ValueError):
        sequence_set([])


def test_fetch_items_reads_simple_pairs() -> None:
    from twisted.mail.imap4 import parseNestedParens

    parsed = parseNestedParens(b'4 FETCH (UID 12 BODY[]<0> "" RFC822.SIZE 40 FLAGS (\\Seen))')
    seq, items = fetch_items(parsed)  # type: ignore[misc]
    assert seq == 4
    assert items == {"UID": b"12", "RFC822.SIZE": b"40", "FLAGS": [b"\\Seen"]}


# -------------------------------------------------------- one at a time, greeting


def test_commands_go_out_one_at_a_time_even_when_sent_from_callbacks() -> None:
    client, transport, _ = connected()
    first = client.noop()
    second = client.noop()
    # a command sent from the first one's callback queues behind the second
    third: list[Any] = []
    first.addCallback(lambda _: third.append(client.noop()))
    assert sent(transport) == [b"0001 NOOP"]
    feed(client, b"0001 OK done")
    assert first.called and not second.called
    assert sent(transport) == [b"0002 NOOP"]
    feed(client, b"0002 OK done")
    assert sent(transport) == [b"0003 NOOP"]
    feed(client, b"0003 OK done")
    assert third[0].called


def test_bye_greeting_fails_the_greeting_with_the_servers_words() -> None:
    client = IMAPClient(clock=task.Clock(), server="server imap.test:143")
    client.makeConnection(Transport())
    client.dataReceived(b"* BYE Too many connections\r\n")
    with pytest.raises(SourceError, match="refused the connection: Too many connections"):
        run(client.greeting)


def test_no_answer_is_an_imap_command_error() -> None:
    client, _, _ = connected()
    d = client.select_folder("Missing")
    feed(client, b"0001 NO [NONEXISTENT] Mailbox doesn't exist: Missing")
    with pytest.raises(IMAPCommandError) as info:
        run(d)
    assert info.value.status == "NO"
    assert info.value.code == "NONEXISTENT"


def test_select_reads_uidvalidity_exists_uidnext_and_ignores_extensions() -> None:
    client, transport, _ = connected()
    d = client.select_folder("Support/Eingänge")
    assert sent(transport) == [b'0001 SELECT "Support/Eing&AOQ-nge"']
    feed(
        client,
        b"* FLAGS (\\Seen \\Deleted)",
        b"* 17 EXISTS",
        b"* 2 RECENT",
        b"* OK [UIDVALIDITY 1700000000] UIDs valid",
        b"* OK [UIDNEXT 99] next",
        b"* OK [HIGHESTMODSEQ 5] modseq",
        b"0001 OK [READ-WRITE] done",
    )
    assert run(d) == {"EXISTS": 17, "UIDVALIDITY": 1700000000, "UIDNEXT": 99}
    assert client.exists == 17


# ---------------------------------------------------------------------- IDLE


def test_idle_delivers_untagged_exists_at_once_and_done_ends_it() -> None:
    client, transport, _ = connected()
    client.exists = 3
    news: list[int | None] = []
    client.on_new_mail = lambda: news.append(client.exists)
    untagged: list[bytes] = []
    cmd = client.idle(untagged.append)
    assert sent(transport) == [b"0001 IDLE"]
    feed(client, b"+ idling")
    assert cmd.idling and cmd.started.called
    feed(client, b"* 4 EXISTS")
    # the stock client would have buffered this into the command until its end
    assert news == [4]
    assert untagged == [b"4 EXISTS"]
    assert cmd.lines == []
    assert cmd.completion is not None and not cmd.completion.called
    client.end_idle(cmd)
    assert sent(transport) == [b"DONE"]
    feed(client, b"0001 OK Idle completed")
    assert cmd.completion.called


def test_idle_expunge_and_other_untagged_lines_do_not_wake_and_are_not_kept() -> None:
    client, _, _ = connected()
    client.exists = 5
    news: list[int | None] = []
    client.on_new_mail = lambda: news.append(client.exists)
    cmd = client.idle()
    feed(client, b"+ idling")
    for _ in range(1000):
        feed(client, b"* OK Still here")
    feed(client, b"* 2 EXPUNGE", b"* 4 EXISTS", b"* 3 FETCH (FLAGS (\\Seen))")
    assert news == []  # 5 - 1 expunged = 4: nothing new
    assert client.exists == 4
    assert cmd.lines == []
    feed(client, b"* 5 EXISTS")
    assert news == [5]


def test_done_asked_before_the_continuation_is_sent_when_it_arrives() -> None:
    client, transport, _ = connected()
    cmd = client.idle()
    sent(transport)
    client.end_idle(cmd)
    assert sent(transport) == []  # not before "+": the server would take it for a command
    feed(client, b"+ idling")
    assert sent(transport) == [b"DONE"]


def test_exists_during_other_commands_is_noticed_too() -> None:
    client, _, _ = connected()
    client.exists = 1
    news: list[int | None] = []
    client.on_new_mail = lambda: news.append(client.exists)
    d = client.noop()
    feed(client, b"* 2 EXISTS", b"0001 OK NOOP")
    run(d)
    assert news == [2]


# ------------------------------------------------------------------ long lines


def test_lines_far_over_16_kib_are_accepted() -> None:
    client, _, _ = connected()
    d = client.command(b"UID SEARCH", b"ALL")
    uids = b" ".join(str(n).encode() for n in range(1, 12001))  # ~60 KB
    assert len(uids) > 3 * 16384
    feed(client, b"* SEARCH " + uids, b"0001 OK done")
    lines, _tagged = run(d)
    assert len(lines[0]) == 12001


def test_a_line_over_the_raised_limit_fails_pending_commands_clearly() -> None:
    client, transport, _ = connected()
    client.MAX_LENGTH = 1000  # the real limit is 4 MiB; same code path
    d = client.noop()
    client.dataReceived(b"* " + b"x" * 2000)
    with pytest.raises(SourceError, match="line longer than 1000 bytes"):
        run(d)
    assert transport.aborted


# --------------------------------------------------------------- body streaming


def test_body_literal_goes_to_the_sink_in_pieces_byte_for_byte() -> None:
    client, transport, _ = connected()
    body = (
        b"Subject: x\r\n\r\n"
        + b"a" * 40000  # a 40 KB line inside the body: no line limit applies to literals
        + b"\r\n"
        + bytes(range(256)) * 50
        + b"\r\n)\r\n* 9 EXISTS\r\n0001 OK fake"  # looks like protocol, is body
    )
    sink = io.BytesIO()
    d = client.fetch_body(12, sink, 0, 1 << 20)
    assert sent(transport) == [b"0001 UID FETCH 12 (UID BODY.PEEK[]<0.1048576>)"]
    wire = b"* 3 FETCH (UID 12 BODY[]<0> {%d}\r\n" % len(body) + body + b")\r\n0001 OK done\r\n"
    for i in range(0, len(wire), 997):  # arbitrary TCP segments
        client.dataReceived(wire[i : i + 997])
    assert run(d) == len(body)
    assert sink.getvalue() == body
    assert client.exists is None  # the "* 9 EXISTS" inside the body was not taken as a response


def test_several_bodies_in_one_command_each_to_its_own_sink() -> None:
    client, transport, _ = connected()
    sinks = {12: io.BytesIO(), 13: io.BytesIO(), 14: io.BytesIO(), 15: io.BytesIO()}
    d = client.fetch_bodies(sinks)
    assert sent(transport) == [b"0001 UID FETCH 12:15 (UID BODY.PEEK[])"]
    one, two, four = b"first\r\n)\r\n", b"second {99}\r\n", b"fourth"
    wire = (
        b"* 1 FETCH (UID 12 BODY[] {%d}\r\n" % len(one)
        + one
        + b")\r\n"
        # a server that puts UID after the literal: kept aside until the UID is known
        + b"* 2 FETCH (BODY[] {%d}\r\n" % len(two)
        + two
        + b" UID 13)\r\n"
        + b"* 2 FETCH (FLAGS (\\Seen))\r\n"  # unrelated update in between
        + b"* 4 FETCH (FLAGS (\\Seen) UID 15 BODY[] {%d}\r\n" % len(four)
        + four
        + b")\r\n"
        + b"0001 OK done\r\n"
    )  # 14 was expunged by someone else: no response for it
    for i in range(0, len(wire), 7):
        client.dataReceived(wire[i : i + 7])
    assert run(d) == {12: len(one), 13: len(two), 14: None, 15: len(four)}
    assert [sinks[u].getvalue() for u in (12, 13, 14, 15)] == [one, two, b"", four]


def test_body_fetch_of_a_vanished_uid_gives_none() -> None:
    client, _, _ = connected()
    d = client.fetch_body(12, io.BytesIO(), 0, 1024)
    feed(client, b"0001 OK Fetch completed")
    assert run(d) is None


def test_empty_literal_and_flag_updates_in_the_same_response() -> None:
    client, _, _ = connected()
    sink = io.BytesIO()
    d = client.fetch_body(12, sink, 1024, 1024)
    feed(client, b"* 3 FETCH (UID 12 BODY[]<1024> {0}", b")", b"* 5 FETCH (FLAGS (\\Seen))")
    feed(client, b"0001 OK done")
    assert run(d) == 0


def test_connection_lost_mid_literal_fails_the_fetch_and_the_queue() -> None:
    client, _, _ = connected()
    sink = io.BytesIO()
    fetch = client.fetch_body(12, sink, 0, 1 << 20)
    queued = client.noop()
    client.dataReceived(b"* 3 FETCH (UID 12 BODY[]<0> {5000}\r\n" + b"x" * 100)
    client.connectionLost(Failure(error.ConnectionLost("reset by peer")))
    for d in (fetch, queued):
        with pytest.raises(SourceError, match=re.escape("connection to server imap.test:143 lost")):
            run(d)
    later = client.noop()
    with pytest.raises(SourceError):
        run(later)


def test_tls_failure_is_named_as_such() -> None:
    client = IMAPClient(clock=task.Clock(), server="server imap.test:993")
    client.makeConnection(Transport())
    reason = SSL.Error([("SSL routines", "", "certificate verify failed")])
    client.connectionLost(Failure(reason))
    with pytest.raises(SourceError) as info:
        run(client.greeting)
    assert "TLS with server imap.test:993 failed" in str(info.value)
    assert "certificate does not verify" in str(info.value)


def test_bye_then_close_says_bye() -> None:
    client, _, _ = connected()
    d = client.noop()
    feed(client, b"* BYE Server shutting down")
    client.connectionLost(Failure(error.ConnectionDone()))
    with pytest.raises(SourceError, match="BYE Server shutting down"):
        run(d)


# -------------------------------------------------------------------- timeouts


def test_protocol_timeout_fails_the_command_and_aborts() -> None:
    client, transport, clock = connected(timeout=60)
    d = client.noop()
    clock.advance(59)
    assert not d.called
    feed(client, b"* OK [ALERT] still working")  # any answer resets the timer
    clock.advance(59)
    assert not d.called
    clock.advance(2)
    with pytest.raises(
        SourceError, match=re.escape("no answer from server imap.test:143 within 60 s")
    ):
        run(d)
    assert transport.aborted


def test_no_timeout_while_idle_rests_but_after_done() -> None:
    client, transport, clock = connected(timeout=60)
    cmd = client.idle()
    clock.advance(30)
    feed(client, b"+ idling")
    clock.advance(3600)  # an hour of quiet IDLE is fine
    assert not transport.aborted
    client.end_idle(cmd)
    clock.advance(61)  # but DONE wants its OK
    assert transport.aborted
    assert cmd.completion is not None
    with pytest.raises(SourceError, match="no answer"):
        run(cmd.completion)


def test_no_timer_left_when_nothing_is_pending() -> None:
    client, _, clock = connected(timeout=60)
    d = client.noop()
    feed(client, b"0001 OK done")
    run(d)
    assert clock.getDelayedCalls() == []


# ---------------------------------------------------------- login and tracing


def _trace_of(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "postroom.trace")


def test_login_quoted_is_traced_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    client, transport, _ = connected(debug=True)
    d = client.login("agent", 'se"cr\\et')
    assert sent(transport) == [b'0001 LOGIN "agent" "se\\"cr\\\\et"']
    feed(client, b"0001 OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] Logged in")
    run(d)
    trace = _trace_of(caplog)
    assert "0001 LOGIN agent <redacted>" in trace.replace('"', "")
    assert "cr" not in trace.split("LOGIN", 1)[1].split("\n", 1)[0]
    assert "UIDPLUS" in client.capabilities  # from the tagged OK


def test_login_with_literal_plus_is_one_write_and_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    client, transport, _ = connected(caps="IMAP4rev1 LITERAL+", debug=True)
    d = client.login("agent", "pässwörd")
    secret = "pässwörd".encode()
    assert transport.value() == (
        b"0001 LOGIN {5+}\r\nagent {%d+}\r\n" % len(secret) + secret + b"\r\n"
    )
    feed(client, b"0001 OK Logged in")
    run(d)
    trace = _trace_of(caplog)
    assert "pässwörd" not in trace and "agent {" not in trace
    assert "0001 LOGIN {5+}" in trace and "<redacted>" in trace


def test_login_with_synchronising_literals_waits_for_each_continuation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    client, transport, _ = connected(caps="IMAP4rev1", debug=True)
    d = client.login("agent", "pässwörd")
    assert sent(transport) == [b"0001 LOGIN {5}"]
    feed(client, b"+ go on")
    assert sent(transport) == [b"agent {10}"]
    feed(client, b"+ go on")
    assert sent(transport) == ["pässwörd".encode()]
    feed(client, b"0001 OK Logged in")
    run(d)
    assert "pässwörd" not in _trace_of(caplog)


@pytest.mark.parametrize("sasl_ir", [True, False])
def test_authenticate_plain_is_redacted(caplog: pytest.LogCaptureFixture, sasl_ir: bool) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom.trace")
    client, transport, _ = connected(caps="IMAP4rev1" + (" SASL-IR" if sasl_ir else ""), debug=True)
    d = client.authenticate_plain("agent", "hunter2")
    encoded = base64.b64encode(b"\0agent\0hunter2")
    if sasl_ir:
        assert sent(transport) == [b"0001 AUTHENTICATE PLAIN " + encoded]
    else:
        assert sent(transport) == [b"0001 AUTHENTICATE PLAIN"]
        feed(client, b"+ ")
        assert sent(transport) == [encoded]
    feed(client, b"0001 OK Logged in")
    run(d)
    trace = _trace_of(caplog)
    assert encoded.decode() not in trace and "hunter2" not in trace
    assert "<redacted>" in trace


XOAUTH2_IR = base64.b64encode(b"user=agent@example.org\x01auth=Bearer ya29.token\x01\x01")
OAUTHBEARER_IR = base64.b64encode(
    b"n,a=agent@example.org,\x01host=imap.test\x01port=993\x01auth=Bearer ya29.token\x01\x01"
)
ERROR_401 = base64.b64encode(b'{"status":"401","schemes":"bearer","scope":"mail"}')


def bearer(client: IMAPClient, mechanism: str) -> Any:
    return client.authenticate_bearer(
        mechanism, "agent@example.org", "ya29.token", "imap.test", 993
    )


@pytest.mark.parametrize(
    ("mechanism", "initial"), [("XOAUTH2", XOAUTH2_IR), ("OAUTHBEARER", OAUTHBEARER_IR)]
)
def test_bearer_with_sasl_ir_puts_the_exact_response_on_the_command_line(
    mechanism: str, initial: bytes
) -> None:
    client, transport, _ = connected(caps=f"IMAP4rev1 SASL-IR AUTH={mechanism}")
    d = bearer(client, mechanism)
    assert sent(transport) == [b"0001 AUTHENTICATE " + mechanism.encode() + b" " + initial]
    feed(client, b"0001 OK [CAPABILITY IMAP4rev1 IDLE] Logged in")
    run(d)


@pytest.mark.parametrize(
    ("mechanism", "initial"), [("XOAUTH2", XOAUTH2_IR), ("OAUTHBEARER", OAUTHBEARER_IR)]
)
def test_bearer_without_sasl_ir_sends_the_response_on_the_continuation(
    mechanism: str, initial: bytes
) -> None:
    client, transport, _ = connected(caps=f"IMAP4rev1 AUTH={mechanism}")
    d = bearer(client, mechanism)
    assert sent(transport) == [b"0001 AUTHENTICATE " + mechanism.encode()]
    feed(client, b"+ ")
    assert sent(transport) == [initial]
    feed(client, b"0001 OK Logged in")
    run(d)


@pytest.mark.parametrize(
    ("mechanism", "challenge", "reply"),
    [
        ("XOAUTH2", ERROR_401, b"\r\n"),  # empty, as Google and Microsoft document
        ("OAUTHBEARER", base64.b64encode(b'{"status":"invalid_token"}'), b"AQ==\r\n"),  # %x01
    ],
)
def test_refused_token_error_challenge_is_answered_then_no_is_reported(
    mechanism: str, challenge: bytes, reply: bytes
) -> None:
    client, transport, _ = connected(caps=f"IMAP4rev1 SASL-IR AUTH={mechanism}")
    d = bearer(client, mechanism)
    transport.clear()
    feed(client, b"+ " + challenge)
    assert transport.value() == reply  # answered at once: the login never hangs
    transport.clear()
    feed(client, b"0001 NO [AUTHENTICATIONFAILED] Invalid credentials")
    with pytest.raises(IMAPCommandError, match="Invalid credentials") as info:
        run(d)
    assert info.value.challenge == challenge
    assert info.value.code == "AUTHENTICATIONFAILED"


def test_bearer_token_never_reaches_the_trace(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "postroom.trace")
    for caps in ("IMAP4rev1 SASL-IR AUTH=XOAUTH2", "IMAP4rev1 AUTH=XOAUTH2"):
        client, _transport, _ = connected(caps=caps, debug=True)
        d = bearer(client, "XOAUTH2")
        if "SASL-IR" not in caps:
            feed(client, b"+ ")
        feed(client, b"+ " + ERROR_401, b"0001 NO [AUTHENTICATIONFAILED] Invalid")
        with pytest.raises(IMAPCommandError):
            run(d)
    trace = _trace_of(caplog)
    assert "ya29.token" not in trace and XOAUTH2_IR.decode() not in trace
    assert "AUTHENTICATE XOAUTH2 <redacted>" in trace
    assert trace.count("<redacted>") == 4  # IR line, continuation, two error replies


def test_unexpected_continuation_drops_the_connection_clearly() -> None:
    client, transport, _ = connected()
    d = client.noop()
    feed(client, b"+ what?")
    with pytest.raises(SourceError, match="unexpected continuation"):
        run(d)
    assert transport.aborted


def test_clear_text_sent_after_the_starttls_ok_is_discarded() -> None:
    """STARTTLS response injection: bytes behind the OK must not count as TLS-protected."""
    from twisted.internet.interfaces import ITLSTransport
    from zope.interface import implementer

    @implementer(ITLSTransport)
    class TLSTransport(Transport):  # type: ignore[misc]
        def startTLS(self, contextFactory: Any) -> None:
            self.tls = contextFactory

    clock = task.Clock()
    client = IMAPClient(clock=clock, server="server imap.test:143")
    transport = TLSTransport()
    client.makeConnection(transport)
    feed(client, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready")
    d = client.starttls("verifying context")
    assert sent(transport) == [b"0001 STARTTLS"]
    feed(client, b"0001 OK Begin TLS", b"* CAPABILITY IMAP4rev1 AUTH=PLAIN EVIL", b"0002 OK")
    assert transport.tls == "verifying context"
    assert sent(transport) == [b"0002 CAPABILITY"]
    assert "EVIL" not in client.capabilities  # the injected answer to 0002 was dropped
    feed(client, b"* CAPABILITY IMAP4rev1 AUTH=PLAIN", b"0002 OK done")
    assert run(d) == frozenset({"IMAP4REV1", "AUTH=PLAIN"})

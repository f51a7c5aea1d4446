"""Twisted's ``IMAP4Client``, extended where it falls short for a gateway.

What the stock client lacks, and what this subclass does about it:

- **Client IDLE** (RFC 2177): untagged responses are buffered into the
  running command, so ``* N EXISTS`` never reaches anyone while IDLE runs.
  :meth:`IMAPClient._defaultHandler` sees every untagged line as it arrives
  (EXISTS/EXPUNGE tracking, capabilities, BYE) and streams them to an
  :class:`IdleCommand` instead of buffering; :meth:`IMAPClient.idle` /
  :meth:`IMAPClient.end_idle` send ``IDLE`` and ``DONE``.
- **Line length**: 16 KiB lines drop the connection; the limit is raised
  (:attr:`IMAPClient.MAX_LENGTH`) and exceeding it fails the pending
  commands with a clear error instead of a silent disconnect.
- **Big literals**: a FETCH literal is read whole into memory (three times)
  and handed back as ``str``. A :class:`BodyFetchCommand` gets the literal
  of ``BODY[]`` written straight to its file as it arrives, byte for byte.
- **Missing commands**: ``UID STORE/EXPUNGE/MOVE/COPY`` over sequence sets,
  ``AUTHENTICATE PLAIN``/``XOAUTH2``/``OAUTHBEARER`` with SASL-IR, ``LOGIN`` with literals.
- **TLS**: ``login()`` upgrades with an unverified context and falls back to
  clear text; this client never upgrades on its own: :meth:`starttls` takes
  the verifying context the caller built, and the caller decides policy.
- **Timeouts and failures**: a command without an answer within
  ``protocol_timeout`` (on the injected clock) fails with a
  :class:`~postroom.errors.SourceError` and the connection is aborted; a lost
  connection fails every pending command with a SourceError saying why
  (certificate, BYE, line too long...) so nothing ever hangs.
"""

from __future__ import annotations

import base64
import logging
import re
import tempfile
from collections.abc import Callable, Iterable
from typing import IO, Any, Protocol

from twisted.internet import defer, error, interfaces
from twisted.mail import imap4
from twisted.mail.imap4 import Command, parseNestedParens
from twisted.python.failure import Failure

from postroom.api import (
    ConnectionDown,
    ResponseTimer,
    SourceError,
    Tracer,
    error_challenge_reply,
    initial_response,
    is_hostname_mismatch,
    tls_reasons,
)

log = logging.getLogger(__name__)

#: longest response line accepted (the stock 16 KiB drops a ``SEARCH`` of a
#: few thousand UIDs); message bodies come as literals and are not lines
MAX_LINE = 4 * 1024 * 1024

_UNTAGGED_COUNT = re.compile(rb"^(\d+) (EXISTS|EXPUNGE)\b", re.IGNORECASE)
_CAPABILITY_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
_FETCH_LINE = re.compile(rb"\d+ FETCH \(", re.IGNORECASE)
_UID_ITEM = re.compile(rb"[( ]UID (\d+)", re.IGNORECASE)
_BODY_LITERAL = re.compile(rb"BODY\[\](?:<\d+>)? \{\d+\}$", re.IGNORECASE)
_SAFE_QUOTED = re.compile(rb"^[\x01-\x09\x0b\x0c\x0e-\x7f]*$")


class Sink(Protocol):
    """Where a message body goes: a file, or a wrapper that hashes as it writes."""

    def write(self, data: bytes, /) -> Any: ...


class IMAPCommandError(Exception):
    """The server answered a command with ``NO`` or ``BAD``."""

    #: the error challenge of a refused AUTHENTICATE (base64 JSON), if any
    challenge: bytes | None = None

    def __init__(self, command: bytes, status: bytes, text: bytes) -> None:
        self.command = command.decode("ascii", "replace")
        self.status = status.decode("ascii", "replace").upper()
        self.text = text.decode("utf-8", "replace")
        super().__init__(f"{self.command}: {self.status} {self.text}")

    @property
    def code(self) -> str | None:
        """The response code (``TRYCREATE``, ``AUTHENTICATIONFAILED``...) if any."""
        match = re.match(r"\[([A-Za-z0-9-]+)", self.text)
        return match.group(1).upper() if match else None


# --------------------------------------------------------------------- helpers


def quote(value: str | bytes) -> bytes:
    """An IMAP quoted string (only for 7-bit text without CR/LF)."""
    raw = value.encode("ascii") if isinstance(value, str) else value
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def needs_literal(raw: bytes) -> bool:
    return not _SAFE_QUOTED.match(raw)


def mailbox_name(name: str) -> bytes:
    """A folder name as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3)."""
    return quote(name.encode("imap4-utf-7"))


def sequence_set(numbers: Iterable[int]) -> bytes:
    """``[1, 2, 3, 7, 9, 10]`` -> ``b"1:3,7,9:10"`` (sorted, duplicates dropped)."""
    ordered = sorted(set(numbers))
    if not ordered:
        raise ValueError("empty sequence set")
    ranges: list[str] = []
    start = prev = ordered[0]
    for n in ordered[1:]:
        if n == prev + 1:
            prev = n
            continue
        ranges.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = n
    ranges.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(ranges).encode("ascii")


def fetch_items(parsed: list[Any]) -> tuple[int, dict[str, Any]] | None:
    """``[b"5", b"FETCH", [b"UID", b"12", ...]]`` -> ``(5, {"UID": b"12", ...})``.

    Section items such as ``BODY[]<0>`` are split by the parser into several
    tokens; only simple ``NAME value`` pairs are kept, which is all callers need.
    """
    if len(parsed) < 3 or not isinstance(parsed[1], bytes) or parsed[1].upper() != b"FETCH":
        return None
    try:
        seq = int(parsed[0])
    except (TypeError, ValueError):
        return None
    values = parsed[2]
    items: dict[str, Any] = {}
    if not isinstance(values, list):
        return seq, items
    i = 0
    while i + 1 < len(values):
        key = values[i]
        if isinstance(key, bytes) and key.upper() in (b"UID", b"RFC822.SIZE", b"FLAGS"):
            items[key.decode("ascii").upper()] = values[i + 1]
            i += 2
        else:
            i += 1
    return seq, items


def parse_capabilities(text: bytes) -> frozenset[str]:
    return frozenset(word.decode("ascii", "replace").upper() for word in text.split())


# -------------------------------------------------------------------- commands


class RawCommand(Command):
    """A command whose result is every untagged line, parsed, and the tagged line."""

    def finish(self, lastLine: bytes, unusedCallback: Callable[..., Any]) -> None:
        parsed = [parseNestedParens(line) for line in self.lines]
        self.lines = []
        d, self.defer = self.defer, None
        if d is not None:
            d.callback((parsed, lastLine))


class LiteralCommand(RawCommand):
    """A command with literal arguments (``LOGIN`` with non-ASCII credentials).

    ``segments[0]`` is the command text up to the first literal's ``{n}``;
    each later segment is sent on a continuation (or at once with LITERAL+).
    """

    def __init__(self, command: bytes, segments: list[bytes], secret_line: bool = False) -> None:
        super().__init__(command, segments[0], (), self._next)
        self.rest = segments[1:]
        #: the first line itself carries the secret (LITERAL+: all in one write)
        self.secret_line = secret_line
        self.client: IMAPClient | None = None

    def _next(self, _text: bytes) -> None:
        if self.client is not None and self.rest:
            self.client.sendLine(self.rest.pop(0), secret=True)


class AuthenticateCommand(RawCommand):
    """``AUTHENTICATE <mechanism> [initial response]`` (RFC 3501, 4959 SASL-IR).

    Without SASL-IR the response goes out on the first continuation. A later
    continuation is the server's error challenge (a refused OAuth token): it
    is kept in :attr:`challenge` and answered with *error_reply* (see
    :func:`postroom.api.error_challenge_reply`), and the tagged ``NO``
    follows; answering it is what keeps the login from hanging.
    """

    def __init__(
        self, mechanism: bytes, response: bytes, *, sasl_ir: bool, error_reply: bytes = b""
    ) -> None:
        encoded = base64.b64encode(response) if response else b"="
        args = mechanism + (b" " + encoded if sasl_ir else b"")
        super().__init__(b"AUTHENTICATE", args, (), self._next)
        self.pending: bytes | None = None if sasl_ir else encoded
        self.error_reply = error_reply
        #: the server's error challenge (base64, as sent), when it sent one
        self.challenge: bytes | None = None
        self.client: IMAPClient | None = None

    def _next(self, text: bytes) -> None:
        if self.client is None:
            return
        if self.pending is not None:
            line, self.pending = self.pending, None
        else:
            self.challenge = text
            line = base64.b64encode(self.error_reply)
        self.client.sendLine(line, secret=True)


class BodyFetchCommand(RawCommand):
    """``UID FETCH <uids> (UID BODY.PEEK[]<offset.length>)`` into files.

    One command for several messages, so a mailbox's downloads are not one
    round trip each. Each ``BODY[]`` literal goes straight to the sink of its
    UID as it arrives and never enters memory as a whole. Servers send ``UID``
    before the literal when it was asked first (Dovecot, Cyrus, Exchange,
    Gmail do); when one does not, the literal waits in a temporary file until
    its response line names the UID. The Deferred fires with ``{uid: bytes
    written, or None when the server sent no BODY[] for it (gone)}``.
    """

    def __init__(
        self, sinks: dict[int, Sink], offset: int | None = None, length: int | None = None
    ) -> None:
        section = b"BODY.PEEK[]"
        if offset is not None and length is not None:
            section += b"<%d.%d>" % (offset, length)
        super().__init__(b"UID FETCH", sequence_set(sinks) + b" (UID %s)" % section)
        self.sinks = dict(sinks)
        self.written: dict[int, int] = {}
        #: UIDs whose literal arrived whole
        self.complete: set[int] = set()
        self._left = 0
        self.literals = 0
        self._target: Sink | None = None
        self._target_uid: int | None = None
        #: literals that came before their UID, in response order
        self._strays: list[IO[bytes]] = []

    def begin_literal(self, prefix: bytes, octets: int) -> None:
        """A BODY[] literal of *octets* starts; *prefix* is its response line so far."""
        self.literals += 1
        self._left = octets
        match = _UID_ITEM.search(prefix)
        uid = int(match.group(1)) if match else None
        if uid is not None and uid in self.sinks:
            self.complete.discard(uid)
        if uid is not None and uid in self.sinks:
            self._target, self._target_uid = self.sinks[uid], uid
            self.written.setdefault(uid, 0)
        else:
            stray = tempfile.TemporaryFile()  # noqa: SIM115 (closed in finish; unlinked already)
            self._strays.append(stray)
            self._target, self._target_uid = stray, None

    def write(self, data: bytes) -> None:
        assert self._target is not None
        self._target.write(data)
        self._left -= len(data)
        if self._target_uid is not None:
            self.written[self._target_uid] += len(data)
            if self._left <= 0:
                self.complete.add(self._target_uid)

    def culprit(self) -> int | None:
        """The UID whose download a broken connection interrupted: the one
        being received, else the first not received yet (None: all were)."""
        if self._left > 0 and self._target_uid is not None:
            return self._target_uid
        return next((uid for uid in sorted(self.sinks) if uid not in self.complete), None)

    def finish(self, lastLine: bytes, unusedCallback: Callable[..., Any]) -> None:
        found: dict[int, int | None] = dict.fromkeys(self.sinks)
        strays = iter(self._strays)
        for line in self.lines:
            # a regex, not a full parse of the line: this runs once per message
            if not _FETCH_LINE.match(line):
                continue
            match = _UID_ITEM.search(line)
            if match is None:
                continue
            uid = int(match.group(1))
            wanted = uid in self.sinks
            if (not wanted or uid not in self.written) and b"BODY[]" in line.upper():
                stray = next(strays, None)  # its literal came before the UID
                if stray is not None and wanted:
                    stray.seek(0)
                    self.written[uid] = _copy(stray, self.sinks[uid])
            if wanted and uid in self.written:
                found[uid] = self.written[uid]
        for stray in self._strays:
            stray.close()
        self.lines = []
        d, self.defer = self.defer, None
        if d is not None:
            d.callback(found)


def _copy(source: IO[bytes], sink: Sink) -> int:
    size = 0
    for chunk in iter(lambda: source.read(1 << 20), b""):
        sink.write(chunk)
        size += len(chunk)
    return size


class IdleCommand(RawCommand):
    """``IDLE`` (RFC 2177): ``started`` fires on the server's ``+``; untagged
    lines go to ``on_untagged`` as they arrive, never buffered."""

    def __init__(self, on_untagged: Callable[[bytes], None]) -> None:
        super().__init__(b"IDLE", None, (), self._go)
        self.on_untagged = on_untagged
        self.started: defer.Deferred[None] = defer.Deferred()
        self.idling = False
        self.done_wanted = False
        self.done_sent = False
        self.client: IMAPClient | None = None
        self.completion: defer.Deferred[Any] | None = None

    def _go(self, _text: bytes) -> None:
        self.idling = True
        if not self.started.called:
            self.started.callback(None)
        if self.done_wanted and self.client is not None:
            self.client._send_done(self)


# ---------------------------------------------------------------------- client


class IMAPClient(imap4.IMAP4Client):
    """An IMAP4rev1 client for one mailbox connection (see the module docstring)."""

    MAX_LENGTH = MAX_LINE

    def __init__(
        self,
        *,
        clock: Any,
        server: str,
        protocol_timeout: float = 120.0,
        tracer: Tracer | None = None,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.server = server
        self.protocol_timeout = protocol_timeout
        self.tracer = tracer or Tracer(server, False)
        self.capabilities: frozenset[str] = frozenset()
        #: the login's tagged OK carried the new capabilities
        self.capabilities_after_login = False
        #: fires with the greeting's status (``OK`` or ``PREAUTH``)
        self.greeting: defer.Deferred[str] = defer.Deferred()
        #: fires (None) when the connection is gone
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.connected_ = False
        self.exists: int | None = None
        #: called whenever the server says the selected folder grew
        self.on_new_mail: Callable[[], None] | None = None
        self.bye: str | None = None
        self._error: SourceError | None = None
        self._timer = ResponseTimer(clock, protocol_timeout, self._timed_out)
        self._idle: IdleCommand | None = None
        self._sink: BodyFetchCommand | None = None
        self._sink_left = 0

    # -- connection

    def connectionMade(self) -> None:
        self.connected_ = True
        super().connectionMade()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected_ = False
        self._timer.stop()
        self._sink = None
        failure = self._error or self.lost_error(reason)
        self._error = failure
        self._fail_all(failure)
        if not self.greeting.called:
            self.greeting.errback(failure)
        if not self.closed.called:
            self.closed.callback(None)

    def lost_error(self, reason: Failure | None) -> ConnectionDown:
        """Why the connection ended, for the operator (a :class:`ConnectionDown`:
        the kernel abandons the pass and reconnects)."""
        value = reason.value if reason is not None else None
        if self.bye:
            return ConnectionDown(f"{self.server} closed the connection: BYE {self.bye}")
        tls = _tls_reason(value)
        if tls is not None:
            return ConnectionDown(f"TLS with {self.server} failed: {tls}")
        if isinstance(value, error.ConnectionDone | type(None)):
            return ConnectionDown(f"{self.server} closed the connection")
        return ConnectionDown(f"connection to {self.server} lost: {value}")

    def abort(self, failure: SourceError) -> None:
        """Fail everything pending with *failure* and drop the connection."""
        if self._error is None:
            self._error = failure
        self._fail_all(failure)
        if self.transport is not None and self.connected_:
            abort = getattr(self.transport, "abortConnection", None)
            (abort or self.transport.loseConnection)()

    def _fail_all(self, failure: SourceError) -> None:
        pending: list[Command] = [*(self.tags or {}).values(), *(self.queued or [])]
        self.tags = {}
        self.queued = []
        self.waiting = None
        self._idle = None
        for cmd in pending:
            if cmd is not None and cmd.defer is not None:
                d, cmd.defer = cmd.defer, None
                d.errback(failure)

    # -- protocol timeout (on the injected clock)

    def _expecting(self) -> bool:
        """True while a command waits for the server (not while IDLE rests)."""
        if not self.tags:
            return False
        idle = self._idle
        return not (idle is not None and idle.idling and not idle.done_sent)

    def _touch(self) -> None:
        if self.connected_:
            self._timer.touch(self._expecting())

    def _timed_out(self) -> None:
        if not self._expecting():
            return
        names = [
            cmd.command.decode("ascii", "replace")
            for cmd in (self.tags or {}).values()
            if cmd is not None
        ]
        self.abort(
            ConnectionDown(
                f"no answer from {self.server} within {self.protocol_timeout:g} s "
                f"to {' '.join(names) or 'a command'}; connection closed"
            )
        )

    # -- sending

    def sendLine(self, line: bytes, *, secret: bool = False) -> None:
        """Send and trace one line; *secret* lines are traced redacted (after
        the command text, when they carry a literal: ``a1 LOGIN {4+}``)."""
        if secret:
            head, sep, _ = line.partition(b"\r\n")
            if sep:
                self.tracer.sent(head)
            was, self.tracer.in_auth = self.tracer.in_auth, True
            self.tracer.sent(line)
            self.tracer.in_auth = was
        else:
            self.tracer.sent(line)
        super().sendLine(line)
        self._touch()

    def sendCommand(self, cmd: Command) -> defer.Deferred[Any]:
        if self._error is not None or not self.connected_:
            return defer.fail(self._error or ConnectionDown(f"not connected to {self.server}"))
        if isinstance(cmd, LiteralCommand | AuthenticateCommand | IdleCommand):
            cmd.client = self
        d: defer.Deferred[Any] = defer.Deferred()
        cmd.defer = d  # type: ignore[assignment]
        if self.waiting:
            self.queued.append(cmd)
        else:
            self._dispatch(cmd)
        return d

    def _dispatch(self, cmd: Command) -> None:
        tag = self.makeTag()
        self.tags[tag] = cmd
        self.waiting = tag
        self._lastCmd = cmd
        self.sendLine(cmd.format(tag), secret=getattr(cmd, "secret_line", False))

    def command(self, name: bytes, args: bytes | None = None) -> defer.Deferred[Any]:
        """Send *name args*; fires ``(parsed untagged lines, tagged line)``."""
        return self.sendCommand(RawCommand(name, args))

    # -- receiving

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self._touch()

    def lineReceived(self, line: bytes) -> None:
        self.tracer.received(line)
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.abort(
            ConnectionDown(
                f"{self.server} sent a line longer than {self.MAX_LENGTH} bytes; connection closed"
            )
        )

    def _setupForLiteral(self, rest: bytes, octets: int) -> None:
        cmd = self.tags.get(self.waiting) if self.tags and self.waiting else None
        if isinstance(cmd, BodyFetchCommand) and _BODY_LITERAL.search(rest):
            # The message body: straight to the command's file, and an empty
            # string in its place in the response line.
            placeholder = rest[: rest.rfind(b"{")] + b'""'
            if self._parts is None:
                self._parts = [placeholder]
            else:
                self._parts.append(placeholder)
            cmd.begin_literal(rest, octets)
            self._sink = cmd
            self._sink_left = octets
            self.tracer.received(b"{%d octets of message data}" % octets)
            self.setRawMode()
            if octets == 0:
                self._end_sink(b"")
            return
        super()._setupForLiteral(rest, octets)

    def rawDataReceived(self, data: bytes) -> None:
        sink = self._sink
        if sink is None:
            super().rawDataReceived(data)
            return
        take = data[: self._sink_left]
        try:
            sink.write(take)
        except OSError as exc:
            self.abort(ConnectionDown(f"cannot write the download to the spool: {exc}"))
            return
        self._sink_left -= len(take)
        if self._sink_left == 0:
            self._end_sink(data[len(take) :])

    def _end_sink(self, rest: bytes) -> None:
        self._sink = None
        self.setLineMode(rest)

    def response_UNAUTH(self, tag: bytes, rest: bytes) -> None:
        if self.state is not None:
            self._defaultHandler(tag, rest)
            return
        # the greeting: OK, PREAUTH or BYE (RFC 3501 7.1)
        status, _, text = rest.partition(b" ")
        status = status.upper()
        match = _CAPABILITY_CODE.search(text)
        if match:
            self.capabilities = parse_capabilities(match.group(1))
        if status in (b"OK", b"PREAUTH"):
            self.state = "unauth" if status == b"OK" else "auth"
            if not self.greeting.called:
                self.greeting.callback(status.decode())
            return
        self.bye = text.decode("utf-8", "replace") or status.decode("ascii", "replace")
        failure = SourceError(f"{self.server} refused the connection: {self.bye}")
        if not self.greeting.called:
            self.greeting.errback(failure)
        self.abort(failure)

    def _untagged(self, rest: bytes) -> None:
        """Every untagged line, as it arrives: state the stock client never tracks."""
        match = _UNTAGGED_COUNT.match(rest)
        if match:
            number = int(match.group(1))
            if match.group(2).upper() == b"EXISTS":
                grew = self.exists is None or number > self.exists
                self.exists = number
                if grew and self.on_new_mail is not None:
                    self.on_new_mail()
            elif self.exists:
                self.exists -= 1
            return
        upper = rest[:11].upper()
        if upper.startswith(b"CAPABILITY "):
            self.capabilities = parse_capabilities(rest[11:])
        elif upper.startswith(b"BYE"):
            self.bye = rest[4:].decode("utf-8", "replace").strip() or "BYE"

    def _defaultHandler(self, tag: bytes, rest: bytes) -> None:
        if tag == b"*":
            self._untagged(rest)
            cmd = self.tags.get(self.waiting) if self.tags and self.waiting else None
            if isinstance(cmd, IdleCommand):
                cmd.on_untagged(rest)
            elif cmd is not None:
                cmd.lines.append(rest)
            return
        if tag == b"+":
            cmd = self.tags.get(self.waiting) if self.tags and self.waiting else None
            if not isinstance(cmd, LiteralCommand | AuthenticateCommand | IdleCommand):
                self.abort(ConnectionDown(f"{self.server} sent an unexpected continuation"))
                return
            cmd.continuation(rest)
            return
        cmd = self.tags.pop(tag, None) if self.tags else None
        if cmd is None:
            if self._error is None:
                self.abort(ConnectionDown(f"{self.server} answered an unknown command tag {tag!r}"))
            return
        status, _, text = rest.partition(b" ")
        match = _CAPABILITY_CODE.search(text)
        if match:
            self.capabilities = parse_capabilities(match.group(1))
        if isinstance(cmd, IdleCommand):
            self._idle = None
        # Callbacks run with ``waiting`` still set, so what they send is queued
        # behind the commands already waiting: one command on the wire at a time.
        if status.upper() == b"OK":
            cmd.finish(rest, self._extraInfo)
        elif cmd.defer is not None:
            d, cmd.defer = cmd.defer, None
            d.errback(IMAPCommandError(cmd.command, status, text))
        if self.waiting == tag:
            self.waiting = None
            self._flushQueue()
        self._touch()

    def _flushQueue(self) -> None:
        if self.queued:
            self._dispatch(self.queued.pop(0))

    def _extraInfo(self, lines: Any) -> None:
        """Unsolicited responses were already handled by :meth:`_untagged`."""

    # -- commands

    def capability(self) -> defer.Deferred[frozenset[str]]:
        d = self.command(b"CAPABILITY")
        d.addCallback(lambda _: self.capabilities)
        return d

    def starttls(self, context_factory: Any) -> defer.Deferred[frozenset[str]]:
        """``STARTTLS`` with the caller's (verifying) context, then the new CAPABILITY.

        Capabilities seen before TLS are forgotten (RFC 3501 6.2.1): a
        man in the middle could have edited them.
        """

        def upgrade(_: Any) -> defer.Deferred[frozenset[str]]:
            # Whatever arrived after the OK, before the handshake, was sent in
            # clear text by anyone on the path: discard it (response injection).
            self.clearLineBuffer()
            interfaces.ITLSTransport(self.transport).startTLS(context_factory)
            self.startedTLS = True
            self.capabilities = frozenset()
            return self.capability()

        d = self.command(b"STARTTLS")
        d.addCallback(upgrade)
        return d

    def login(self, username: str, password: str) -> defer.Deferred[Any]:
        """``LOGIN`` with quoted strings, or literals for 8-bit or CR/LF values."""
        user, secret = username.encode("utf-8"), password.encode("utf-8")
        if not needs_literal(user) and not needs_literal(secret):
            return self.command(b"LOGIN", quote(user) + b" " + quote(secret))
        plus = "LITERAL+" in self.capabilities
        mark = b"+}" if plus else b"}"
        segments = [b"{%d%s" % (len(user), mark), user + b" {%d%s" % (len(secret), mark), secret]
        if plus:
            # non-synchronising literals: one write, traced redacted after "LOGIN {n+}"
            return self.sendCommand(LiteralCommand(b"LOGIN", [b"\r\n".join(segments)], True))
        return self.sendCommand(LiteralCommand(b"LOGIN", segments))

    def authenticate_plain(self, username: str, password: str) -> defer.Deferred[Any]:
        response = b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8")
        return self.authenticate_sasl(b"PLAIN", response)

    def authenticate_sasl(
        self, mechanism: bytes, response: bytes, error_reply: bytes = b""
    ) -> defer.Deferred[Any]:
        """``AUTHENTICATE`` with *response* as the initial response (SASL-IR
        when the server offers it, else on the first continuation). A ``NO``
        fails with :class:`IMAPCommandError` whose ``challenge`` is the
        server's error challenge (None when there was none)."""
        cmd = AuthenticateCommand(
            mechanism, response, sasl_ir="SASL-IR" in self.capabilities, error_reply=error_reply
        )

        def keep_challenge(failure: Failure) -> Failure:
            if isinstance(failure.value, IMAPCommandError):
                failure.value.challenge = cmd.challenge
            return failure

        return self.sendCommand(cmd).addErrback(keep_challenge)

    def authenticate_bearer(
        self, mechanism: str, username: str, token: str, host: str, port: int
    ) -> defer.Deferred[Any]:
        """``AUTHENTICATE XOAUTH2`` or ``OAUTHBEARER`` with an access token
        (*host* and *port* go into OAUTHBEARER's message; the error challenge
        of a refused token is answered as each mechanism wants)."""
        return self.authenticate_sasl(
            mechanism.encode("ascii"),
            initial_response(mechanism, username, token, host, port),
            error_challenge_reply(mechanism),
        )

    def select_folder(self, folder: str) -> defer.Deferred[dict[str, int]]:
        """``SELECT``; fires ``{"EXISTS": n, "UIDVALIDITY": v, "UIDNEXT": u}``."""

        def parsed(result: tuple[list[Any], bytes]) -> dict[str, int]:
            lines, _tagged = result
            info: dict[str, int] = {}
            for line in lines:
                if len(line) >= 2 and isinstance(line[1], bytes) and line[1].upper() == b"EXISTS":
                    info["EXISTS"] = int(line[0])
                elif (
                    len(line) >= 2
                    and line[0] == b"OK"
                    and isinstance(line[1], list)
                    and len(line[1]) >= 2
                    and line[1][0].upper() in (b"UIDVALIDITY", b"UIDNEXT")
                ):
                    info[line[1][0].decode().upper()] = int(line[1][1])
            self.exists = info.get("EXISTS", 0)
            return info

        d = self.command(b"SELECT", mailbox_name(folder))
        d.addCallback(parsed)
        return d

    def noop(self) -> defer.Deferred[Any]:
        return self.command(b"NOOP")

    def fetch_listing(
        self, first: int, last: int
    ) -> defer.Deferred[list[tuple[int, int, set[str]]]]:
        """``FETCH first:last (UID RFC822.SIZE FLAGS)``: ``(uid, size, flags)`` per message.

        By sequence numbers: one page is at most ``last - first + 1`` short
        lines, whatever the UIDs look like.
        """

        def parsed(result: tuple[list[Any], bytes]) -> list[tuple[int, int, set[str]]]:
            found = []
            for line in result[0]:
                items = fetch_items(line)
                if items is None or "UID" not in items[1]:
                    continue
                values = items[1]
                flags = {
                    f.decode("ascii", "replace")
                    for f in values.get("FLAGS") or []
                    if isinstance(f, bytes)
                }
                size = values.get("RFC822.SIZE")
                found.append((int(values["UID"]), int(size) if size is not None else -1, flags))
            return found

        d = self.command(b"FETCH", b"%d:%d (UID RFC822.SIZE FLAGS)" % (first, last))
        d.addCallback(parsed)
        return d

    def fetch_body(
        self, uid: int, sink: Sink, offset: int | None = None, length: int | None = None
    ) -> defer.Deferred[int | None]:
        """Write (part of) message *uid* into *sink*: the bytes written, or
        None when the message is gone (see :class:`BodyFetchCommand`)."""
        d: defer.Deferred[Any] = self.fetch_bodies({uid: sink}, offset, length)
        return d.addCallback(lambda found: found[uid])

    def fetch_bodies(
        self, sinks: dict[int, Sink], offset: int | None = None, length: int | None = None
    ) -> defer.Deferred[dict[int, int | None]]:
        """Write (the same part of) several messages, each into its sink, in
        one command: ``{uid: bytes written or None}``."""
        return self.sendCommand(BodyFetchCommand(sinks, offset, length))

    def send_body_fetch(self, command: BodyFetchCommand) -> defer.Deferred[dict[int, int | None]]:
        """:meth:`fetch_bodies` for a caller that keeps the command (to ask
        :meth:`BodyFetchCommand.culprit` when the connection breaks)."""
        return self.sendCommand(command)

    def uid_store(self, uids: Iterable[int], change: bytes) -> defer.Deferred[Any]:
        """``UID STORE <set> <change>``, e.g. ``+FLAGS.SILENT (\\Deleted)``."""
        return self.command(b"UID STORE", sequence_set(uids) + b" " + change)

    def uid_expunge(self, uids: Iterable[int]) -> defer.Deferred[Any]:
        """``UID EXPUNGE <set>`` (UIDPLUS): only these, not what others flagged."""
        return self.command(b"UID EXPUNGE", sequence_set(uids))

    def expunge(self) -> defer.Deferred[Any]:
        return self.command(b"EXPUNGE")

    def uid_move(self, uids: Iterable[int], folder: str) -> defer.Deferred[Any]:
        return self.command(b"UID MOVE", sequence_set(uids) + b" " + mailbox_name(folder))

    def uid_copy(self, uids: Iterable[int], folder: str) -> defer.Deferred[Any]:
        return self.command(b"UID COPY", sequence_set(uids) + b" " + mailbox_name(folder))

    def create_folder(self, folder: str) -> defer.Deferred[Any]:
        return self.command(b"CREATE", mailbox_name(folder))

    def idle(self, on_untagged: Callable[[bytes], None] | None = None) -> IdleCommand:
        """Send ``IDLE``; ``cmd.completion`` fires once the server ended it
        (after :meth:`end_idle`, or on its own: an error, a lost connection)."""
        cmd = IdleCommand(on_untagged or (lambda _line: None))
        self._idle = cmd
        cmd.completion = self.sendCommand(cmd)
        return cmd

    def end_idle(self, cmd: IdleCommand) -> None:
        """``DONE`` now, or as soon as the server's ``+`` arrives."""
        if cmd.completion is None or cmd.completion.called:
            return
        if cmd.idling:
            self._send_done(cmd)
        else:
            cmd.done_wanted = True

    def _send_done(self, cmd: IdleCommand) -> None:
        if not cmd.done_sent and self.connected_:
            cmd.done_sent = True
            self.sendLine(b"DONE")

    def logout(self) -> defer.Deferred[Any]:
        d = self.command(b"LOGOUT")

        def close(result: Any) -> Any:
            if self.transport is not None:
                self.transport.loseConnection()
            return result

        d.addBoth(close)
        return d


def _tls_reason(value: Any) -> str | None:
    """A readable reason when *value* is a TLS failure (certificate, host name), else None."""
    if is_hostname_mismatch(value):
        return f"certificate does not match the host name ({value})"
    reasons = tls_reasons(value)
    if reasons is None:
        return None
    text = ", ".join(reasons)
    if "certificate verify failed" in text:
        return f"certificate does not verify ({text})"
    return text

"""Twisted's POP3 client, with the gaps that matter to a gateway closed.

:class:`PostroomPOP3Client` extends :class:`twisted.mail.pop3.AdvancedPOP3Client`:

* **RETR streamed** into a :class:`~postroom_pop3.spool.SpoolWriter`: after the
  ``+OK`` line the protocol leaves line mode and hands the raw bytes to the
  writer, so no line limit applies to message bodies and nothing is held whole;
* **line limit** raised for the responses still read as lines (status lines,
  ``UIDL``/``LIST``/``CAPA`` listings, ``TOP``): a long line no longer drops
  the connection (Twisted's 16 KiB);
* **no silent downgrade**: Twisted's ``login()`` picks APOP from the greeting,
  upgrades with a context that does not verify certificates and falls back to
  clear text when STLS is missing. Here the caller upgrades with
  :meth:`start_tls_verified` (a verifying context, failing when STLS is not
  offered) and :meth:`login_user_pass` refuses clear text unless
  ``allowInsecureLogin`` was set (only for ``pop-connection-security: none``);
* **SASL** (:meth:`authenticate`) with ``+`` continuations and an optional
  initial response: ``AUTH XOAUTH2``/``OAUTHBEARER`` in one line, or in the
  two-line form Office 365 documents; a refused token's error challenge
  (``+ <base64 JSON>``, not ``+OK``) is answered so the ``-ERR`` comes;
* **the protocol timeout** is :class:`postroom.api.ResponseTimer` on the
  injected clock (instead of Twisted's ``TimeoutMixin`` on the global reactor):
  it runs only while an answer is awaited, and a timeout *aborts* the
  connection and fails every waiting Deferred at once, so a silent server or
  a TLS close that never completes cannot leave a caller waiting;
* **traces** through :class:`postroom.net.trace.Tracer` (``PASS`` and SASL
  responses redacted; message bodies summarised, not logged).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error, interfaces
from twisted.internet.protocol import connectionDone
from twisted.mail.pop3 import AdvancedPOP3Client, InsecureAuthenticationDisallowed, LineTooLong
from twisted.python.failure import Failure

from postroom.api import (
    ResponseTimer,
    Tracer,
    error_challenge_reply,
    initial_response,
)
from postroom_pop3.spool import SpoolWriter

OK = b"+OK"

#: longest line read in line mode (status lines, listings, TOP): big enough for
#: any real header line, small enough to stop a server that never sends CRLF
LINE_LIMIT = 1 << 20


class PostroomPOP3Client(AdvancedPOP3Client):
    """One POP3 connection. Commands are queued by the base class (one at a time)."""

    MAX_LENGTH = LINE_LIMIT

    def __init__(
        self,
        *,
        clock: Any,
        timeout: float = 0,
        tracer: Tracer | None = None,
        allow_insecure_login: bool = False,
    ) -> None:
        self.clock = clock
        # the base class tests ``timeout > 0`` before it (re)sets its timer
        self.timeout = timeout  # type: ignore[assignment]
        self._response_timer = ResponseTimer(clock, timeout, self.timeoutConnection)
        self.tracer = tracer if tracer is not None else Tracer("pop3", False)
        self.allowInsecureLogin = allow_insecure_login
        #: fires with the greeting text, or fails when the connection ends first
        self.greeted: defer.Deferred[bytes] = defer.Deferred()
        #: fires (with None) once the transport is gone; the reason is in close_reason
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.close_reason: Failure | None = None
        self.lost = False
        self._pending_sink: SpoolWriter | None = None
        self._raw: SpoolWriter | None = None
        self._sasl_respond: Callable[[bytes], bytes] | None = None
        #: the CAPA answer in force (after STLS: the new one), set by the source
        self.capa: dict[bytes, Any] = {}

    # -- time: the shared response timer on the injected clock

    def _expecting(self) -> bool:
        """An answer is awaited: the greeting, a command's, or a queued command's."""
        return self._waiting is not None or not self.greeted.called or bool(self._blockedQueue)

    def setTimeout(self, period: float | None) -> None:
        """TimeoutMixin's API, as the base class calls it (connect, close)."""
        if period is None:
            self._response_timer.stop()
        else:
            self._response_timer.touch(self._expecting())

    def resetTimeout(self) -> None:
        """Bytes came: the server gets the full time again while an answer is due."""
        self._response_timer.touch(self._expecting())

    def timeoutConnection(self) -> None:
        """No answer within ``protocol-timeout``: fail now, abort the transport.

        A timer that ran out while no command is outstanding (the gateway
        parsing or committing between two commands) is not the server's
        fault: nothing happens, the next command starts it again.
        """
        if not self._expecting():
            return
        self._timedOut = True
        self._give_up(Failure(error.TimeoutError("no answer from the server in time")))

    def _give_up(self, reason: Failure) -> None:
        """Fail every waiter with *reason* and abort (not close) the transport.

        ``loseConnection`` on a TLS transport waits for the peer's close_notify,
        which a dead server never sends; aborting ends it now.
        """
        self._connection_gone(reason)
        transport = self.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()

    # -- connection events

    def serverGreeting(self, greeting: bytes) -> None:
        if not self.greeted.called:
            self.greeted.callback(greeting)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timedOut:
            reason = Failure(error.TimeoutError("no answer from the server in time"))
        elif self._greetingError:
            reason = Failure(
                error.ConnectionRefusedError(
                    "server refused the session: " + self._greetingError.decode("utf-8", "replace")
                )
            )
        elif not isinstance(reason, Failure):
            reason = Failure(reason)
        self._connection_gone(reason)
        self.close_reason = reason
        if not self.closed.called:
            self.closed.callback(None)

    def _connection_gone(self, reason: Failure) -> None:
        if self.lost:
            return
        self.lost = True
        self._response_timer.stop()
        if self._raw is not None:
            self._raw.discard()
            self._raw = None
        self._pending_sink = None
        self._sasl_respond = None
        waiters: list[defer.Deferred[Any]] = []
        if not self.greeted.called:
            waiters.append(self.greeted)
        if self._waiting is not None:
            waiters.append(self._waiting)
            self._waiting = None
        if self._blockedQueue is not None:
            waiters.extend(d for (d, _f, _a) in self._blockedQueue)
            self._blockedQueue = None  # type: ignore[assignment]
        for waiter in waiters:
            waiter.errback(reason)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._give_up(Failure(LineTooLong(f"server sent a line of more than {len(line)} bytes")))

    # -- bytes in: line mode, or raw mode while a RETR body streams to a spool

    def dataReceived(self, data: bytes) -> None:
        """Split lines like ``LineOnlyReceiver``, but switch to raw mode mid-chunk.

        The ``+OK`` of a RETR and the first bytes of the message often come in
        one chunk: whatever follows the line that switched modes goes to the
        spool writer, and whatever follows the body's terminator back to lines.
        """
        buf = self._buffer + data if self._buffer else data
        self._buffer = b""
        start = 0
        while not self.lost:
            if self._raw is not None:
                rest = self._feed_raw(buf[start:] if start else buf)
                if rest is None:
                    return
                buf, start = rest, 0
                continue
            end = buf.find(b"\r\n", start)
            if end < 0:
                break
            line = buf[start:end]
            start = end + 2
            if len(line) > self.MAX_LENGTH:
                self.lineLengthExceeded(line)
                return
            self.lineReceived(line)
        if self.lost:
            return
        self._buffer = buf[start:]
        if len(self._buffer) > self.MAX_LENGTH:
            self.lineLengthExceeded(self._buffer)

    def lineReceived(self, line: bytes) -> None:
        self.tracer.received(line)
        super().lineReceived(line)
        if not self.lost:
            self.resetTimeout()  # the answer may be complete: no timer while none is due

    def sendLine(self, line: bytes) -> None:
        self.tracer.sent(line)
        self._response_timer.touch(True)  # the server gets the full time for each answer
        super().sendLine(line)

    def _feed_raw(self, data: bytes) -> bytes | None:
        sink = self._raw
        assert sink is not None
        self._response_timer.touch(True)  # mid-body: the rest is still due
        try:
            rest = sink.feed(data)
        except OSError as exc:  # disk full, spool removed...
            self._give_up(Failure(exc))
            return None
        if rest is None:
            return None
        self._raw = None
        self.tracer.received(f"[message data: {sink.size} bytes]".encode())
        waiting, self._waiting = self._waiting, None
        self.state = "WAITING"
        self._unblock()
        if waiting is not None:
            waiting.callback(sink)
        if not self.lost:
            self.resetTimeout()
        return rest

    def state_LONG_INITIAL(self, line: bytes) -> str:
        sink, self._pending_sink = self._pending_sink, None
        if sink is not None and line.split(b" ", 1)[0] == OK:
            self._raw = sink
            return "RAW"
        if sink is not None:
            sink.discard()
        result: str = super().state_LONG_INITIAL(line)
        return result

    # -- commands

    def retrieve_to(self, index: int, sink: SpoolWriter) -> defer.Deferred[SpoolWriter]:
        """``RETR`` message *index* (0-based) into *sink*; fires with the sink when done."""
        blocked: defer.Deferred[SpoolWriter] | None = self._blocked(self.retrieve_to, index, sink)
        if blocked is not None:
            return blocked
        self.sendLine(b"RETR %d" % (index + 1,))
        self.state = "LONG_INITIAL"
        self._xform = None
        self._consumer = None
        self._pending_sink = sink
        waiting: defer.Deferred[SpoolWriter] = defer.Deferred()
        self._waiting = waiting
        return waiting

    def start_tls_verified(self, creator: Any) -> defer.Deferred[dict[bytes, Any]]:
        """STLS with *creator* (a verifying connection creator); fires with the new CAPA.

        Fails with ``TLSNotSupportedError`` when the server does not offer STLS:
        the caller must never go on in clear text then.
        """
        if creator is None:
            return defer.fail(ValueError("a verifying TLS connection creator is required"))
        d: defer.Deferred[dict[bytes, Any]] = self.startTLS(creator)
        return d

    @property
    def secure(self) -> bool:
        """True once the transport is encrypted (implicit TLS or after STLS)."""
        return bool(self.startedTLS) or (interfaces.ISSLTransport(self.transport, None) is not None)

    def login_user_pass(self, user: bytes, password: bytes) -> defer.Deferred[bytes]:
        """USER/PASS, refused over clear text unless ``allowInsecureLogin``."""
        if not self.secure and not self.allowInsecureLogin:
            return defer.fail(InsecureAuthenticationDisallowed())
        d: defer.Deferred[bytes] = self.user(user)
        d.addCallback(lambda _: self.password(password))
        return d

    def authenticate(
        self, mechanism: bytes, respond: Callable[[bytes], bytes], initial: bytes | None = None
    ) -> defer.Deferred[bytes]:
        """``AUTH <mechanism> [initial]`` (RFC 5034).

        *initial* (base64) goes on the AUTH line (the one-line form); without
        it the first response goes on its own line after the server's ``+``,
        the two-line form Office 365 documents for XOAUTH2. *respond* gets
        each decoded ``+`` challenge and returns the base64 line to send.
        Only ``+`` or ``+ `` is a challenge: ``+OK`` ends the exchange (poplib
        takes a ``+ <error JSON>`` for success and never answers it). Fires
        with the ``+OK`` text; fails with ServerErrorResponse.
        """
        blocked: defer.Deferred[bytes] | None = self._blocked(
            self.authenticate, mechanism, respond, initial
        )
        if blocked is not None:
            return blocked
        self.sendLine(b"AUTH " + mechanism + (b" " + initial if initial else b""))
        self.state = "AUTH"
        self._sasl_respond = respond
        waiting: defer.Deferred[bytes] = defer.Deferred()
        self._waiting = waiting
        return waiting

    def state_AUTH(self, line: bytes) -> str:
        if line == b"+" or line.startswith(b"+ "):
            respond = self._sasl_respond
            assert respond is not None
            try:
                challenge = base64.b64decode(line[2:], validate=False)
            except (binascii.Error, ValueError):
                challenge = line[2:]
            self.tracer.in_auth = True
            try:
                self.sendLine(respond(challenge))
            finally:
                self.tracer.in_auth = False
            return "AUTH"
        self._sasl_respond = None
        result: str = self.state_SHORT(line)
        return result

    def authenticate_bearer(
        self,
        mechanism: str,
        user: str,
        token: str,
        host: str,
        port: int,
        *,
        two_line: bool = False,
    ) -> tuple[defer.Deferred[bytes], BearerExchange]:
        """``AUTH XOAUTH2`` or ``AUTH OAUTHBEARER`` with an access token: one
        line (SASL-IR) unless *two_line*; the error challenge of a refused
        token is answered, so the ``-ERR`` follows. Returns the Deferred and
        the exchange (which keeps the error challenge, for the message)."""
        exchange = BearerExchange(
            mechanism, base64.b64encode(initial_response(mechanism, user, token, host, port))
        )
        initial = None if two_line else exchange.take_initial()
        return self.authenticate(mechanism.encode("ascii"), exchange.respond, initial), exchange


class BearerExchange:
    """The client's side of one OAuth AUTH: the initial response once, then
    the answer to an error challenge (which it keeps, base64)."""

    def __init__(self, mechanism: str, initial: bytes) -> None:
        self.mechanism = mechanism
        self._initial: bytes | None = initial
        #: the server's error challenge, base64 (None: there was none)
        self.challenge: bytes | None = None

    def take_initial(self) -> bytes | None:
        initial, self._initial = self._initial, None
        return initial

    def respond(self, challenge: bytes) -> bytes:
        initial = self.take_initial()
        if initial is not None:
            return initial  # the two-line form: the server's first "+" is empty
        self.challenge = base64.b64encode(challenge)
        return base64.b64encode(error_challenge_reply(self.mechanism))

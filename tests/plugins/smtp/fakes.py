"""Test doubles for the SMTP sender's unit tests.

These are fakes for the *client's* logic only (what bytes it writes, how it
reads replies, how it maps them to errors, how the pool treats connections);
they are not an SMTP server and prove nothing about interoperability: the
integration tests (``test_smtp_integration.py``) do that against real Postfix
and Dovecot.

* :class:`ScriptedServer` + :class:`FakeSocket`: replaces the TCP socket under
  smtplib, answering each command from a small table, and records every byte
  the client wrote.
* :class:`FakeConnection`: what the pool holds in the pool tests.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from postroom_smtp.connection import TracingSMTP

Reply = tuple[int, str]


@attrs.define
class ScriptedServer:
    """Answers smtplib's commands; ``replies`` overrides by command verb or
    ``"RCPT <address>"``; a callable reply gets the command line."""

    extensions: list[str] = attrs.field(factory=lambda: ["PIPELINING", "SIZE 10240000", "DSN"])
    replies: dict[str, Reply | Callable[[str], Reply]] = attrs.field(factory=dict)
    #: (user, password) accepted by AUTH PLAIN/LOGIN; token for XOAUTH2
    user: str = "agent1"
    password: str = "secret"
    token: str = "tok"
    greeting: Reply = (220, "fake.test ESMTP")
    #: close the connection (EOF) instead of answering this verb ("END": the body)
    hang_up_on: set[str] = attrs.field(factory=set)
    #: never answer this verb: the client's read times out
    stall_on: set[str] = attrs.field(factory=set)
    stalled: bool = False
    written: bytearray = attrs.field(factory=bytearray)
    commands: list[str] = attrs.field(factory=list)
    bodies: list[bytes] = attrs.field(factory=list)
    _in_data: bool = False
    _data: bytearray = attrs.field(factory=bytearray)
    _auth: str | None = None
    #: more bearer tokens accepted besides *token*; tokens presented; answers
    #: to error challenges
    tokens: tuple[str, ...] = ()
    tokens_seen: list[str] = attrs.field(factory=list)
    error_replies: list[str] = attrs.field(factory=list)
    _auth_lines: list[str] = attrs.field(factory=list)
    closed: bool = False

    def handle(self, line: str) -> str | None:
        """The reply text (CRLF-terminated lines) to one command line, or None for EOF."""
        if self._auth is not None:
            return self._auth_step(line)
        verb = line.split(" ", 1)[0].upper()
        self.commands.append(verb + line[len(verb) :])  # smtplib writes "mail", "rcpt"...
        if verb in self.hang_up_on:
            self.closed = True
            return None
        if verb in self.stall_on:
            self.stalled = True
            return ""
        key = verb
        if verb == "RCPT":
            address = line.split(":", 1)[1].split(">", 1)[0].lstrip(" <")
            if f"RCPT {address}" in self.replies:
                key = f"RCPT {address}"
        if key in self.replies:
            reply = self.replies[key]
            code, text = reply(line) if callable(reply) else reply
            if verb == "DATA" and code == 354:
                self._in_data = True
            return _format(code, text)
        if verb == "EHLO":
            return _format(250, "\n".join(["fake.test", *self.extensions]))
        if verb == "HELO":
            return _format(250, "fake.test")
        if verb == "AUTH":
            return self._auth_start(line)
        if verb == "DATA":
            self._in_data = True
            return _format(354, "End data with <CR><LF>.<CR><LF>")
        if verb == "QUIT":
            return _format(221, "Bye")
        return _format(250, "OK")

    def _auth_start(self, line: str) -> str:
        parts = line.split(" ")
        mechanism = parts[1].upper()
        if len(parts) > 2 and mechanism in ("XOAUTH2", "OAUTHBEARER"):
            return self._bearer(mechanism, parts[2])
        if len(parts) > 2:
            return self._auth_check(mechanism, [parts[2]])
        self._auth = mechanism
        self._auth_lines = []
        return _format(334, base64.b64encode(b"Username:").decode())

    def _bearer(self, mechanism: str, response: str) -> str:
        """As Dovecot behind Postfix: a refused token gets ``334 <base64 JSON>``,
        and the 535 only once the client answered it."""
        decoded = base64.b64decode(response)
        fields = dict(f.split(b"=", 1) for f in decoded.split(b"\x01") if b"=" in f)
        if mechanism == "OAUTHBEARER":
            user = decoded.split(b"\x01", 1)[0][len(b"n,a=") : -1].decode()
            status = b'{"status":"invalid_token"}'
        else:
            user = fields.get(b"user", b"").decode()
            status = b'{"status":"401","schemes":"bearer","scope":"mail"}'
        token = fields.get(b"auth", b"").decode().removeprefix("Bearer ")
        self.tokens_seen.append(token)
        if user == self.user and token in (self.token, *self.tokens):
            return _format(235, "2.7.0 Authentication successful")
        self._auth = "ERROR-CHALLENGE"
        return _format(334, base64.b64encode(status).decode())

    def _auth_step(self, line: str) -> str:
        assert self._auth is not None
        if self._auth == "ERROR-CHALLENGE":
            self._auth = None
            self.error_replies.append(line)
            return _format(535, "5.7.8 Error: authentication failed: Invalid token")
        self._auth_lines.append(line)
        if self._auth == "LOGIN" and len(self._auth_lines) == 1:
            return _format(334, base64.b64encode(b"Password:").decode())
        mechanism, self._auth = self._auth, None
        return self._auth_check(mechanism, self._auth_lines)

    def _auth_check(self, mechanism: str, lines: list[str]) -> str:
        decoded = [base64.b64decode(x).decode("utf-8") for x in lines]
        if mechanism == "PLAIN":
            ok = decoded[0] == f"\0{self.user}\0{self.password}"
        elif mechanism == "LOGIN":
            ok = decoded == [self.user, self.password]
        elif mechanism == "XOAUTH2":
            ok = decoded[0] == f"user={self.user}\x01auth=Bearer {self.token}\x01\x01"
        else:
            ok = False
        if ok:
            return _format(235, "2.7.0 Authentication successful")
        return _format(535, "5.7.8 Error: authentication failed: bad credentials")

    def feed(self, data: bytes) -> bytes | None:
        """Bytes the client wrote; returns what the server answers (None: EOF)."""
        self.written += data
        out = bytearray()
        if self._in_data:
            self._data += data
            end = self._data.find(b"\r\n.\r\n")
            if end < 0 and not self._data.startswith(b".\r\n"):
                return bytes(out)
            body = bytes(self._data[: end + 2]) if end >= 0 else b""
            self.bodies.append(body)
            self._in_data = False
            self._data = bytearray()
            if "END" in self.hang_up_on:
                self.closed = True
                return None
            reply = self.replies.get("END")
            if reply is None:
                return _format(250, "2.0.0 Ok: queued as FAKE1").encode()
            code, text = reply(body.decode("latin-1")) if callable(reply) else reply
            return _format(code, text).encode()
        text = data.decode("utf-8")
        assert text.endswith("\r\n"), f"command without CRLF: {text!r}"
        for line in text[:-2].split("\r\n"):
            answer = self.handle(line)
            if answer is None:
                return None
            out += answer.encode()
        return bytes(out)


def _format(code: int, text: str) -> str:
    lines = text.split("\n")
    return "".join(
        f"{code}{'-' if i < len(lines) - 1 else ' '}{line}\r\n" for i, line in enumerate(lines)
    )


class _Reader:
    def __init__(self, sock: FakeSocket) -> None:
        self.sock = sock

    def readline(self, limit: int = -1) -> bytes:
        buf = self.sock.inbox
        end = buf.find(b"\n")
        if end < 0 and self.sock.server.stalled:
            raise TimeoutError("timed out")
        if end < 0:
            if self.sock.server.closed or not buf:
                data = bytes(buf)
                buf.clear()
                return data
            end = len(buf) - 1
        line = bytes(buf[: end + 1])
        del buf[: end + 1]
        return line

    def close(self) -> None:
        pass


class FakeSocket:
    """A socket whose peer is a :class:`ScriptedServer`."""

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.inbox = bytearray(_format(*server.greeting).encode())
        self.closed = False
        self.timeouts: list[float | None] = []

    def sendall(self, data: bytes) -> None:
        if self.server.closed:
            raise BrokenPipeError(32, "Broken pipe")
        answer = self.server.feed(bytes(data))
        if answer is not None:
            self.inbox += answer

    def makefile(self, mode: str) -> _Reader:
        return _Reader(self)

    def settimeout(self, value: float | None) -> None:
        self.timeouts.append(value)

    def close(self) -> None:
        self.closed = True


def client_factory(server: ScriptedServer) -> Callable[..., TracingSMTP]:
    """A ``client_factory`` for ``SMTPConnection.open`` talking to *server*."""

    class ScriptedSMTP(TracingSMTP):
        def _get_socket(self, host: str, port: int, timeout: float) -> Any:
            sock = FakeSocket(server)
            sock.settimeout(self.protocol_timeout)
            self.stage = "greeting"
            return sock

    return ScriptedSMTP


# ------------------------------------------------------------------------ pool


@attrs.define(eq=False)
class FakeConnection:
    """A connection for the pool tests: it only knows whether it is alive."""

    number: int
    alive: bool = True
    closed: bool = False


@attrs.define
class FakeFactory:
    """Opens, checks and disposes of :class:`FakeConnection` objects for the pool.

    ``pending``: when True, opens return Deferreds the test fires itself.
    """

    opened: list[FakeConnection] = attrs.field(factory=list)
    checked: list[FakeConnection] = attrs.field(factory=list)
    disposed: list[FakeConnection] = attrs.field(factory=list)
    fail_next_open: Exception | None = None
    pending: bool = False
    waiting: list[tuple[Deferred[FakeConnection], FakeConnection]] = attrs.field(factory=list)

    def open(self) -> Deferred[FakeConnection]:
        if self.fail_next_open is not None:
            exc, self.fail_next_open = self.fail_next_open, None
            return fail(exc)
        conn = FakeConnection(len(self.opened) + 1)
        self.opened.append(conn)
        if self.pending:
            d: Deferred[FakeConnection] = Deferred()
            self.waiting.append((d, conn))
            return d
        return succeed(conn)

    def finish_open(self, index: int = 0) -> None:
        """Fire the *index*-th pending open."""
        d, conn = self.waiting[index]
        d.callback(conn)

    def check(self, conn: FakeConnection) -> Deferred[bool]:
        self.checked.append(conn)
        return succeed(conn.alive)

    def dispose(self, conn: FakeConnection) -> Deferred[None]:
        conn.closed = True
        self.disposed.append(conn)
        return succeed(None)

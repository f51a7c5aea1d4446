"""A small scripted IMAP server for the unit tests, driven by a fake clock.

It speaks just enough IMAP4rev1 for :class:`postroom_imap.source.IMAPSource`
(greeting, CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE, SELECT, NOOP, FETCH,
UID FETCH with partial bodies, UID STORE/EXPUNGE/MOVE/COPY, EXPUNGE, CREATE,
IDLE/DONE, LOGOUT) over an in-memory transport. What the client writes is
answered on the next ``clock.advance(0)`` (see :func:`settle`), never inside
the client's own write, so the client sees the same ordering as on a socket.
Every command line received is kept in ``commands`` for assertions.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer, error
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

DEFAULT_CAPS = ("IMAP4rev1", "LITERAL+", "SASL-IR", "IDLE", "STARTTLS")
AFTER_LOGIN_CAPS = ("IMAP4rev1", "LITERAL+", "IDLE", "UIDPLUS", "MOVE")


@attrs.define
class Message:
    uid: int
    data: bytes
    flags: set[str] = attrs.field(factory=set)


def settle(clock: Any, rounds: int = 10_000) -> None:
    """Run every call due now (and those they schedule for now) on *clock*."""
    for _ in range(rounds):
        now = clock.seconds()
        if not any(call.getTime() <= now for call in clock.getDelayedCalls()):
            return
        clock.advance(0)
    raise AssertionError("the fake server and client keep talking forever")


def parse_set(text: str, top: int) -> list[int]:
    found: list[int] = []
    for part in text.split(","):
        if ":" in part:
            a, b = part.split(":")
            lo, hi = int(a) if a != "*" else top, int(b) if b != "*" else top
            found.extend(range(min(lo, hi), max(lo, hi) + 1))
        else:
            found.append(int(part) if part != "*" else top)
    return found


@implementer(ITLSTransport)
class FakeTransport(StringTransport):  # type: ignore[misc]
    """StringTransport that feeds the server and can start (pretend) TLS."""

    def __init__(self, server: FakeIMAPServer) -> None:
        super().__init__()
        self.server = server
        self.tls_context: Any = None
        self.closed = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if not self.closed:
            self.server.received(data)

    def startTLS(self, contextFactory: Any) -> None:
        self.tls_context = contextFactory
        self.server.tls = True

    def loseConnection(self) -> None:
        self.server.close(error.ConnectionDone("closed by the client"))

    def abortConnection(self) -> None:
        self.server.close(error.ConnectionAborted("aborted by the client"))


class FakeIMAPServer:
    def __init__(
        self,
        clock: Any,
        *,
        caps: tuple[str, ...] = DEFAULT_CAPS,
        after_login_caps: tuple[str, ...] = AFTER_LOGIN_CAPS,
        users: dict[str, str] | None = None,
        uidvalidity: int = 42,
        greeting: bytes | None = None,
    ) -> None:
        self.clock = clock
        self.caps = caps
        self.after_login_caps = after_login_caps
        self.users = users if users is not None else {"agent": 'pa ss"w\\ord'}
        self.uidvalidity = uidvalidity
        self.greeting = greeting
        self.folders: dict[str, list[Message]] = {"INBOX": []}
        self.next_uid = 1
        self.commands: list[bytes] = []
        self.client: Any = None
        self.transport: FakeTransport | None = None
        self.tls = False
        self.logged_in = False
        self.selected = "INBOX"
        self.idling: bytes | None = None
        #: answer nothing from now on (protocol timeouts)
        self.silent = False
        #: drop the connection when a command line matches (and after *after* bytes)
        self.drop_on: Callable[[bytes], bool] | None = None
        self.drop_after_bytes = 0
        #: with drop_after_bytes: drop only while sending this UID (None: any)
        self.drop_uid: int | None = None
        self._buffer = b""
        self._scheduled = False
        self._literal_left = 0
        self._partial = b""
        self._continuation: Callable[[bytes], None] | None = None
        self.closed = False
        #: bearer tokens presented, in order; answers to error challenges
        self.tokens_seen: list[str] = []
        self.error_replies: list[bytes] = []
        #: answer OAuth logins NO [UNAVAILABLE] (the identity provider is down)
        self.temporary_auth = False

    # -- mailbox content

    def add(self, data: bytes, flags: set[str] | None = None, folder: str = "INBOX") -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.folders.setdefault(folder, []).append(Message(uid, data, set(flags or ())))
        if self.idling is not None and folder == self.selected and not self.closed:
            self.send(b"* %d EXISTS" % len(self.box))
        return uid

    @property
    def box(self) -> list[Message]:
        return self.folders[self.selected]

    def uids(self, folder: str = "INBOX") -> list[int]:
        return [m.uid for m in self.folders.get(folder, [])]

    # -- connection

    def attach(self, client: Any) -> FakeTransport:
        self.client = client
        self.transport = FakeTransport(self)
        client.makeConnection(self.transport)
        if self.greeting is not None:
            self.send(self.greeting)
        else:
            self.send(b"* OK [CAPABILITY " + " ".join(self.caps).encode() + b"] fake ready")
        return self.transport

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.client.dataReceived(data + b"\r\n")

    def send_raw(self, data: bytes) -> None:
        if not self.closed:
            self.client.dataReceived(data)

    def close(self, reason: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.closed = True
        self.clock.callLater(0, self.client.connectionLost, Failure(reason))

    def received(self, data: bytes) -> None:
        self._buffer += data
        if not self._scheduled:
            self._scheduled = True
            self.clock.callLater(0, self._pump)

    def _pump(self) -> None:
        self._scheduled = False
        while not self.closed:
            if self._literal_left:
                if not self._buffer:
                    return
                take = self._buffer[: self._literal_left]
                self._buffer = self._buffer[len(take) :]
                self._partial += take
                self._literal_left -= len(take)
                continue
            if b"\r\n" not in self._buffer:
                return
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            line = self._partial + line
            match = re.search(rb"\{(\d+)(\+?)\}$", line)
            if match:
                self._partial = line + b"\r\n"
                self._literal_left = int(match.group(1))
                if not match.group(2):
                    self.send(b"+ go on")
                continue
            self._partial = b""
            self.commands.append(line)
            self._handle(line)

    # -- commands

    def _handle(self, line: bytes) -> None:
        if self.silent:
            return
        if self.drop_on is not None and self.drop_on(line):
            self.close(error.ConnectionLost("the fake server dropped the connection"))
            return
        if self._continuation is not None:
            handler, self._continuation = self._continuation, None
            handler(line)
            return
        if self.idling is not None:
            if line == b"DONE":
                tag, self.idling = self.idling, None
                self.send(tag + b" OK Idle completed")
            else:
                self.send(b"* BAD expected DONE")
            return
        tag, _, rest = line.partition(b" ")
        name, _, args = rest.partition(b" ")
        name = name.upper()
        if name == b"UID":
            sub, _, args = args.partition(b" ")
            name = b"UID " + sub.upper()
        method = getattr(self, "cmd_" + name.decode().replace(" ", "_"), None)
        if method is None:
            self.send(tag + b" BAD unknown command")
            return
        method(tag, args)

    def ok(self, tag: bytes, text: bytes = b"done") -> None:
        self.send(tag + b" OK " + text)

    def cmd_CAPABILITY(self, tag: bytes, args: bytes) -> None:
        caps = self.after_login_caps if self.logged_in else self.caps
        if self.tls:
            caps = tuple(c for c in caps if c != "STARTTLS")
        self.send(b"* CAPABILITY " + " ".join(caps).encode())
        self.ok(tag)

    def cmd_STARTTLS(self, tag: bytes, args: bytes) -> None:
        if "STARTTLS" not in self.caps:
            self.send(tag + b" BAD no STARTTLS here")
            return
        self.ok(tag, b"Begin TLS negotiation now")

    def _login(self, tag: bytes, user: str, password: str) -> None:
        if self.users.get(user) == password:
            self.logged_in = True
            caps = " ".join(self.after_login_caps).encode()
            self.send(tag + b" OK [CAPABILITY " + caps + b"] Logged in")
        else:
            self.send(tag + b" NO [AUTHENTICATIONFAILED] Authentication failed.")

    def cmd_LOGIN(self, tag: bytes, args: bytes) -> None:
        values = _astrings(args)
        self._login(tag, values[0], values[1])

    def cmd_AUTHENTICATE(self, tag: bytes, args: bytes) -> None:
        mechanism, _, initial = args.partition(b" ")

        def check(response: bytes) -> None:
            decoded = base64.b64decode(response)
            if mechanism.upper() == b"PLAIN":
                _authz, name, password = decoded.split(b"\0")
                self._login(tag, name.decode(), password.decode())
            elif mechanism.upper() in (b"XOAUTH2", b"OAUTHBEARER"):
                fields = dict(f.split(b"=", 1) for f in decoded.split(b"\x01") if b"=" in f)
                if mechanism.upper() == b"OAUTHBEARER":
                    gs2 = decoded.split(b"\x01", 1)[0]  # n,a=user,
                    user = gs2[len(b"n,a=") : -1].decode()
                    status = b'{"status":"invalid_token"}'
                else:
                    user = fields.get(b"user", b"").decode()
                    status = b'{"status":"401","schemes":"bearer","scope":"mail"}'
                token = fields.get(b"auth", b"").decode().removeprefix("Bearer ")
                self.tokens_seen.append(token)
                if self.temporary_auth:
                    self.send(tag + b" NO [UNAVAILABLE] Temporary authentication failure.")
                elif self.users.get(user) == token:
                    self._login(tag, user, token)
                else:

                    def refuse(reply: bytes) -> None:
                        self.error_replies.append(reply)
                        self.send(tag + b" NO [AUTHENTICATIONFAILED] Authentication failed.")

                    self.send(b"+ " + base64.b64encode(status))
                    self._continuation = refuse
            else:
                self.send(tag + b" NO unsupported")

        if initial:
            check(initial)
        else:
            self._continuation = check
            self.send(b"+ ")

    def cmd_SELECT(self, tag: bytes, args: bytes) -> None:
        folder = _astrings(args)[0]
        if folder not in self.folders:
            self.send(tag + b" NO [NONEXISTENT] Mailbox doesn't exist: " + folder.encode())
            return
        self.selected = folder
        self.send(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)")
        self.send(b"* %d EXISTS" % len(self.box))
        self.send(b"* 0 RECENT")
        self.send(b"* OK [UIDVALIDITY %d] UIDs valid" % self.uidvalidity)
        self.send(b"* OK [UIDNEXT %d] Predicted next UID" % self.next_uid)
        self.send(b"* OK [HIGHESTMODSEQ 7] Highest")
        self.ok(tag, b"[READ-WRITE] Select completed")

    def cmd_NOOP(self, tag: bytes, args: bytes) -> None:
        self.send(b"* %d EXISTS" % len(self.box))
        self.ok(tag)

    def cmd_FETCH(self, tag: bytes, args: bytes) -> None:
        spec, _, _items = args.partition(b" ")
        box = self.box
        for seq in parse_set(spec.decode(), len(box)):
            if not 1 <= seq <= len(box):
                self.send(tag + b" BAD Error in IMAP command FETCH: Invalid messageset")
                return
        for seq in parse_set(spec.decode(), len(box)):
            m = box[seq - 1]
            flags = " ".join(sorted(m.flags)).encode()
            self.send(
                b"* %d FETCH (UID %d RFC822.SIZE %d FLAGS (%s))" % (seq, m.uid, len(m.data), flags)
            )
        self.ok(tag, b"Fetch completed")

    def cmd_UID_FETCH(self, tag: bytes, args: bytes) -> None:
        spec, _, items = args.partition(b" ")
        match = re.search(rb"BODY\.PEEK\[\](?:<(\d+)\.(\d+)>)?", items)
        assert match, items
        wanted = set(parse_set(spec.decode(), self.next_uid - 1))
        for seq, m in enumerate(self.box, start=1):
            if m.uid not in wanted:
                continue
            if match.group(1) is not None:
                offset, length = int(match.group(1)), int(match.group(2))
                part = m.data[offset : offset + length]
                origin = b"<%d>" % offset
            else:
                part, origin = m.data, b""
            head = b"* %d FETCH (UID %d BODY[]%s {%d}\r\n" % (seq, m.uid, origin, len(part))
            if self.drop_after_bytes and self.drop_uid in (None, m.uid):
                self.send_raw(head + part[: self.drop_after_bytes])
                self.close(error.ConnectionLost("dropped mid-literal"))
                return
            self.send_raw(head + part + b")\r\n")
        self.ok(tag, b"Fetch completed")

    def _uids(self, spec: bytes) -> set[int]:
        return set(parse_set(spec.decode(), self.next_uid - 1))

    def cmd_UID_STORE(self, tag: bytes, args: bytes) -> None:
        spec, _, change = args.partition(b" ")
        flags = set(re.findall(r"\\\w+", change.decode()))
        for m in self.box:
            if m.uid in self._uids(spec):
                m.flags |= flags
        self.ok(tag, b"Store completed")

    def _expunge(self, which: Callable[[Message], bool], folder: str | None = None) -> None:
        box = self.folders[folder or self.selected]
        for seq in range(len(box), 0, -1):
            if which(box[seq - 1]):
                del box[seq - 1]
                self.send(b"* %d EXPUNGE" % seq)

    def cmd_UID_EXPUNGE(self, tag: bytes, args: bytes) -> None:
        if "UIDPLUS" not in self.after_login_caps:
            self.send(tag + b" BAD unknown command")
            return
        uids = self._uids(args)
        self._expunge(lambda m: m.uid in uids and "\\Deleted" in m.flags)
        self.ok(tag, b"Expunge completed")

    def cmd_EXPUNGE(self, tag: bytes, args: bytes) -> None:
        self._expunge(lambda m: "\\Deleted" in m.flags)
        self.ok(tag, b"Expunge completed")

    def _copy(self, tag: bytes, args: bytes, move: bool) -> None:
        spec, _, folder_arg = args.partition(b" ")
        folder = _astrings(folder_arg)[0]
        if folder not in self.folders:
            self.send(tag + b" NO [TRYCREATE] Mailbox doesn't exist: " + folder.encode())
            return
        uids = self._uids(spec)
        for m in self.box:
            if m.uid in uids:
                self.folders[folder].append(Message(m.uid + 1000, m.data, set(m.flags)))
        if move:
            self._expunge(lambda m: m.uid in uids)
        self.ok(tag, b"Done")

    def cmd_UID_MOVE(self, tag: bytes, args: bytes) -> None:
        if "MOVE" not in self.after_login_caps:
            self.send(tag + b" BAD unknown command")
            return
        self._copy(tag, args, move=True)

    def cmd_UID_COPY(self, tag: bytes, args: bytes) -> None:
        self._copy(tag, args, move=False)

    def cmd_CREATE(self, tag: bytes, args: bytes) -> None:
        self.folders.setdefault(_astrings(args)[0], [])
        self.ok(tag, b"Create completed")

    def cmd_IDLE(self, tag: bytes, args: bytes) -> None:
        self.idling = tag
        self.send(b"+ idling")

    def cmd_LOGOUT(self, tag: bytes, args: bytes) -> None:
        self.send(b"* BYE Logging out")
        self.ok(tag, b"Logout completed")
        self.close(error.ConnectionDone("logged out"))


def _astrings(args: bytes) -> list[str]:
    """Quoted strings, literals (``{n}\\r\\n...``) or atoms, decoded."""
    found: list[str] = []
    i = 0
    while i < len(args):
        c = args[i : i + 1]
        if c == b" ":
            i += 1
        elif c == b'"':
            j, out = i + 1, b""
            while args[j : j + 1] != b'"':
                if args[j : j + 1] == b"\\":
                    j += 1
                out += args[j : j + 1]
                j += 1
            found.append(out.decode())
            i = j + 1
        elif c == b"{":
            end = args.index(b"}", i)
            n = int(args[i + 1 : end].rstrip(b"+"))
            start = end + 3  # "}\r\n"
            found.append(args[start : start + n].decode())
            i = start + n
        else:
            end = args.find(b" ", i)
            end = len(args) if end < 0 else end
            found.append(args[i:end].decode())
            i = end
    return found


class FakeEndpoint:
    """Stands for ``ServerSettings.endpoint``: records the factory and the
    settings it was made for; the test connects (or fails) the attempt."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.factory: Any = None
        self.connecting: defer.Deferred[Any] | None = None
        self.cancelled = False

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        def cancel(_: Any) -> None:
            self.cancelled = True

        self.factory = factory
        self.connecting = defer.Deferred(cancel)
        return self.connecting

    def build(self) -> Any:
        """The client protocol, as the endpoint builds it once connected."""
        client = self.factory.buildProtocol(None)
        assert self.connecting is not None
        self.connecting.callback(client)
        return client

    def fail(self, reason: Exception) -> None:
        assert self.connecting is not None
        self.connecting.errback(Failure(reason))


def connect_source(source: Any, server: FakeIMAPServer, reactor: MemoryReactorClock) -> Any:
    """Start ``source.connect()`` and attach the fake server to the connection it opens."""
    d = source.connect()
    settle(reactor)
    server.attach(source.endpoints[-1].build())
    settle(reactor)
    return d

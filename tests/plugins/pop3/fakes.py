"""A scripted in-memory POP3 server and the doubles the POP3 driver is built with.

The server answers what the client wrote each time the test calls
:meth:`FakePOP3Server.pump`, never from inside ``write`` (the client sets its
state right after sending, as over a real socket). Everything runs on a
``task.Clock``: no reactor, no sockets.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, interfaces, task
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from postroom.config.options import OptionSchema
from postroom.drivers import DriverContext
from postroom_pop3.source import POP3Source
from tests.plugins.fake_auth import FakeAuthenticator as SharedFakeAuthenticator
from tests.plugins.fake_auth import proxy_section


@implementer(interfaces.ITLSTransport)
class TLSStringTransport(StringTransport):  # type: ignore[misc]  # not a whole ITCPTransport
    """A StringTransport that can be asked to start TLS (it only records it)."""

    tls_creator: Any = None

    def startTLS(self, contextFactory: Any) -> None:
        self.tls_creator = contextFactory


@implementer(interfaces.ISSLTransport)
class SSLStringTransport(StringTransport):  # type: ignore[misc]  # not a whole ITCPTransport
    """A StringTransport that says it is encrypted (implicit TLS)."""

    def getPeerCertificate(self) -> Any:
        return None


def stuff(message: bytes) -> bytes:
    """A RETR body as a server sends it: dot-stuffed, CRLF, terminated."""
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    lines = message.split(b"\r\n")[:-1]
    out = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"\r\n".join(out) + b"\r\n.\r\n"


class FakePOP3Server:
    """Enough POP3 (RFC 1939, 2449, 2595, 5034) to drive the client and the source."""

    def __init__(
        self,
        messages: list[tuple[str, bytes]] | None = None,
        *,
        user: str = "agent1",
        password: str = "secret-pw",
        stls: bool = True,
        uidl: bool = True,
        top: bool = True,
        sasl: tuple[str, ...] = ("PLAIN", "XOAUTH2"),
        transport_class: type[StringTransport] = TLSStringTransport,
        greet: bool = True,
        chunk: int | None = None,
    ) -> None:
        self.maildrop: list[tuple[str, bytes]] = list(messages or [])
        self.user = user
        self.password = password
        self.stls = stls
        self.uidl = uidl
        self.top = top
        self.sasl = sasl
        #: more bearer tokens accepted besides *password*; tokens presented;
        #: answers to error challenges; refuse OAuth logins as temporary ([SYS/TEMP])
        self.tokens: tuple[str, ...] = ()
        self.tokens_seen: list[str] = []
        self.error_replies: list[bytes] = []
        self.temporary_auth = False
        #: list the SASL mechanisms in CAPA (AUTH takes them either way)
        self.announce_sasl = True
        self.transport_class = transport_class
        self.greet = greet
        self.chunk = chunk
        self.commands: list[bytes] = []
        self.sessions = 0
        self.connect_calls = 0
        self.proto: Any = None
        self.transport: Any = None
        self._inbuf = b""
        self._session: dict[str, Any] = {}
        #: (command prefix, action): hooks a test sets to misbehave
        self.on: dict[bytes, Callable[[bytes], bytes | None]] = {}
        self.hang = False  # accept the connection, never answer
        self.refuse_connect: BaseException | None = None
        self.never_connect = False

    # -- the endpoint side

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        self.connect_calls += 1
        if self.refuse_connect is not None:
            return defer.fail(self.refuse_connect)
        if self.never_connect:
            return defer.Deferred()
        proto = factory.buildProtocol(None)
        self.transport = self.transport_class()
        self.proto = proto
        self._inbuf = b""
        self.sessions += 1
        self._session = {"state": "AUTHORIZATION", "deleted": set(), "user": None, "tls": False}
        proto.makeConnection(self.transport)
        if self.greet and not self.hang:
            self._send(b"+OK fake POP3 ready\r\n")
        return defer.succeed(proto)

    # -- delivery

    def _send(self, data: bytes) -> None:
        if self.chunk:
            for i in range(0, len(data), self.chunk):
                self.proto.dataReceived(data[i : i + self.chunk])
        else:
            self.proto.dataReceived(data)

    def drop(self) -> None:
        """The server closes the connection without a word."""
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.transport.loseConnection()
        self.proto.connectionLost(Failure(ConnectionLost("server went away")))

    def pump(self, rounds: int = 10000) -> None:
        """Answer every complete command written so far, and what those answers trigger."""
        for _ in range(rounds):
            if self.transport is None or self.hang:
                return
            out = self.transport.value()
            self.transport.clear()
            self._inbuf += out
            if b"\r\n" not in self._inbuf:
                return
            line, self._inbuf = self._inbuf.split(b"\r\n", 1)
            self.commands.append(line)
            reply = self.answer(line)
            if reply is not None:
                self._send(reply)
            if self.transport.disconnecting and self.proto is not None:
                return

    def command_names(self) -> list[str]:
        return [c.split(b" ", 1)[0].decode() if c else "" for c in self.commands]

    # -- the protocol

    def answer(self, line: bytes) -> bytes | None:
        s = self._session
        for prefix, action in self.on.items():
            if line.upper().startswith(prefix):
                return action(line)
        if s.get("sasl"):
            return self._sasl_step(line)
        word, _, arg = line.partition(b" ")
        cmd = word.upper()
        if cmd == b"CAPA":
            caps = [b"USER", b"RESP-CODES", b"PIPELINING"]
            if self.uidl:
                caps.append(b"UIDL")
            if self.top:
                caps.append(b"TOP")
            if self.stls and not s["tls"]:
                caps.append(b"STLS")
            if self.sasl and self.announce_sasl:
                caps.append(b"SASL " + " ".join(self.sasl).encode())
            return b"+OK\r\n" + b"".join(c + b"\r\n" for c in caps) + b".\r\n"
        if cmd == b"STLS":
            if not self.stls or s["tls"]:
                return b"-ERR no TLS\r\n"
            s["tls"] = True
            return b"+OK begin TLS\r\n"
        if cmd == b"QUIT":
            if s["state"] == "TRANSACTION":
                self.maildrop = [m for i, m in enumerate(self.maildrop) if i not in s["deleted"]]
            self.transport.loseConnection()
            return b"+OK bye\r\n"
        if s["state"] == "AUTHORIZATION":
            if cmd == b"USER":
                s["user"] = arg.decode()
                return b"+OK\r\n"
            if cmd == b"PASS":
                if s["user"] == self.user and arg.decode() == self.password:
                    s["state"] = "TRANSACTION"
                    s["snapshot"] = list(self.maildrop)
                    return b"+OK Logged in.\r\n"
                return b"-ERR [AUTH] Authentication failed.\r\n"
            if cmd == b"AUTH":
                mechanism, _, initial = arg.partition(b" ")
                if mechanism.upper().decode() not in self.sasl:
                    return b"-ERR [AUTH] Unsupported authentication mechanism.\r\n"
                s["sasl"] = mechanism.upper().decode()
                if initial:
                    return self._sasl_step(initial)
                return b"+ \r\n"
            return b"-ERR unknown command in AUTHORIZATION\r\n"
        drop = s["snapshot"]
        if cmd == b"UIDL":
            if not self.uidl:
                return b"-ERR Unknown command: UIDL\r\n"
            body = b"".join(
                b"%d %s\r\n" % (i + 1, uid.encode())
                for i, (uid, _m) in enumerate(drop)
                if i not in s["deleted"]
            )
            return b"+OK\r\n" + body + b".\r\n"
        if cmd == b"LIST":
            body = b"".join(
                b"%d %d\r\n" % (i + 1, len(m))
                for i, (_u, m) in enumerate(drop)
                if i not in s["deleted"]
            )
            return b"+OK\r\n" + body + b".\r\n"
        if cmd in (b"RETR", b"TOP", b"DELE"):
            parts = arg.split()
            n = int(parts[0]) - 1
            if n < 0 or n >= len(drop) or n in s["deleted"]:
                return b"-ERR no such message\r\n"
            message = drop[n][1]
            if cmd == b"DELE":
                s["deleted"].add(n)
                return b"+OK deleted\r\n"
            if cmd == b"TOP":
                if not self.top:
                    return b"-ERR TOP is broken\r\n"
                head = message.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                return b"+OK\r\n" + stuff(head)
            return b"+OK %d octets\r\n" % len(message) + stuff(message)
        if cmd == b"NOOP":
            return b"+OK\r\n"
        return b"-ERR unknown command\r\n"

    def _sasl_step(self, line: bytes) -> bytes:
        """The response to AUTH XOAUTH2/OAUTHBEARER, as Dovecot answers it: a
        refused token gets ``+ <base64 JSON>`` and the ``-ERR`` only once the
        client answered that."""
        s = self._session
        if s.get("sasl_failed"):
            s["sasl"] = s["sasl_failed"] = None
            self.error_replies.append(line)
            return b"-ERR [AUTH] Authentication failed.\r\n"
        decoded = base64.b64decode(line)
        fields = dict(f.split(b"=", 1) for f in decoded.split(b"\x01") if b"=" in f)
        if s["sasl"] == "OAUTHBEARER":
            user = decoded.split(b"\x01", 1)[0][len(b"n,a=") : -1].decode()
            status = b'{"status":"invalid_token"}'
        else:
            user = fields.get(b"user", b"").decode()
            status = b'{"status":"401","schemes":"bearer","scope":"mail"}'
        token = fields.get(b"auth", b"").decode().removeprefix("Bearer ")
        self.tokens_seen.append(token)
        if self.temporary_auth:
            s["sasl"] = None
            return b"-ERR [SYS/TEMP] Temporary authentication failure.\r\n"
        if user == self.user and token in (self.password, *self.tokens):
            s["sasl"] = None
            s["state"] = "TRANSACTION"
            s["snapshot"] = list(self.maildrop)
            return b"+OK Logged in.\r\n"
        s["sasl_failed"] = True
        return b"+ " + base64.b64encode(status) + b"\r\n"


class FakeEndpoint:
    def __init__(self, server: FakePOP3Server) -> None:
        self.server = server

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        return self.server.connect(factory)


class FakeMailbox:
    """A mailbox entry with the declared defaults of the pop3 driver's options."""

    def __init__(self, name: str = "box1", **options: Any) -> None:
        schema = OptionSchema()
        POP3Source.postroom_add_options(schema)
        self.name = name
        self.type = "pop3"
        self.lines: dict[str, int] = {}
        self.values: dict[str, Any] = {}
        for option in schema:
            if option.default is not None:
                self.values[option.name] = schema.types.convert(option.default, option)
            else:
                self.values[option.name] = None
        self.values["server"] = "pop.example.test"
        for key, value in options.items():
            name = key.replace("_", ".") if key.startswith("mail_") else key.replace("_", "-")
            self.values[name] = value
            self.lines[name] = 1

    def get(self, name: str) -> Any:
        if name not in self.values:
            raise KeyError(name)
        return self.values[name]


class FakeAuthenticator(SharedFakeAuthenticator):
    def __init__(
        self,
        user: str = "agent1",
        secret: str = "secret-pw",
        mechanism: str = "PLAIN",
        refreshed: tuple[str, ...] = (),
    ) -> None:
        super().__init__(user, secret, mechanism, refreshed, protocol="pop3")


class Config:
    """Stands for the kernel's SiteConfig (weak-referenceable, hashable by identity)."""

    def __init__(self, proxy: dict[str, Any] | None = None) -> None:
        self.proxy = proxy

    def get(self, section: str, name: str) -> Any:
        if section == "proxy":
            return proxy_section(name, self.proxy)
        raise KeyError(f"{section}.{name}")


class Harness:
    """A POP3Source wired to a FakePOP3Server on a task.Clock."""

    def __init__(
        self,
        tmp_path: Path,
        server: FakePOP3Server,
        *,
        config: Any = None,
        authenticator: Any = None,
        **options: Any,
    ) -> None:
        options.setdefault("pop_connection_security", "starttls")
        self.clock = task.Clock()
        self.server = server
        self.events: list[tuple[str, str, str]] = []
        self.authenticator = authenticator or FakeAuthenticator()
        self.config = config if config is not None else Config()
        self.spool = tmp_path / "spool"
        self.context = DriverContext(
            reactor=None,
            clock=self.clock,
            runner=None,
            config=self.config,
            spool_dir=str(self.spool),
            authenticator=self.authenticator,
            auth_event=lambda *event: self.events.append(event),
        )
        self.mailbox = FakeMailbox(**options)
        self.tls_creators: list[Any] = []
        harness = self

        class Source(POP3Source):
            def _endpoint(self) -> Any:
                return FakeEndpoint(server)

            def tls(self) -> Any:
                creator = ("verifying-creator", self.settings.host, self.settings.ca_file)
                harness.tls_creators.append(creator)
                return creator

        self.source = Source(self.mailbox, self.context)

    def settle(self, d: defer.Deferred[Any] | None = None) -> Any:
        """Pump the server until *d* fired; its result (raises its failure)."""
        for _ in range(200):
            self.server.pump()
            self.clock.advance(0)
            if d is not None and d.called:
                break
        if d is None:
            return None
        from tests.conftest import run

        return run(d)

"""Connections through a SOCKS5 or HTTP CONNECT proxy, as Twisted client endpoints.

Contact centres behind a corporate proxy reach their mail servers through it.
:func:`proxied_endpoint` returns an ``IStreamClientEndpoint`` that connects to
the proxy, asks it for a tunnel to the target host and port, and only then
gives the caller's protocol the connection: the protocol sees a plain
connection to the target. For implicit TLS, wrap the endpoint with
``twisted.internet.endpoints.wrapClientTLS``: TLS then runs end to end
through the tunnel, SNI and certificate checked against the mail host, never
against the proxy.

* SOCKS5 (RFC 1928) without authentication or with user name and password
  (RFC 1929); the target name is resolved by the proxy (address type "domain
  name") or here (``resolve_at_proxy=False``: IPv4 or IPv6 address).
* HTTP CONNECT (RFC 9110 section 9.3.6), with Basic proxy credentials.
  tinyproxy answers *wrong* credentials with 401 rather than 407, so both
  mean "the proxy refused our credentials".

Blocking clients (smtplib in a thread) get the same tunnel as a connected
socket from :func:`connect_through_proxy`: the SOCKS5 and CONNECT dialects are
written once and driven either by the Twisted protocol or by a blocking
socket loop.

Failures are :class:`ProxyError` (a :class:`~postroom.errors.ConnectionDown`)
naming the proxy and the reason; the password never appears in a message,
a ``repr`` or a log line.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from postroom.errors import ConnectionDown
from postroom.net.errors import describe_connection_error

PROXY_KINDS = ("socks5", "http")
#: the most an HTTP proxy's answer to CONNECT may take before the tunnel (bytes)
MAX_HTTP_HEADER = 65536

SOCKS_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by the proxy's rules",
    3: "network unreachable from the proxy",
    4: "host unreachable from the proxy",
    5: "connection refused by the target",
    6: "TTL expired",
    7: "command not supported by the proxy",
    8: "address type not supported by the proxy",
}


@attrs.frozen
class ProxySettings:
    """A proxy and how to talk to it. The password is left out of ``repr``."""

    #: ``socks5`` or ``http`` (HTTP CONNECT)
    kind: str
    host: str
    port: int
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    #: SOCKS5: send the target's name for the proxy to resolve (else resolve here)
    resolve_at_proxy: bool = True

    def __attrs_post_init__(self) -> None:
        if self.kind not in PROXY_KINDS:
            raise ValueError(f"proxy kind must be one of {', '.join(PROXY_KINDS)}: {self.kind!r}")
        if not self.host:
            raise ValueError("proxy host is empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"proxy port out of range: {self.port}")
        if self.user and self.password is None:
            raise ValueError(f"proxy user {self.user!r} has no password")
        if (
            self.kind == "socks5"
            and self.user is not None
            and (not 0 < len(self.user.encode()) < 256 or len((self.password or "").encode()) > 255)
        ):
            raise ValueError("SOCKS5 user name and password must be 1 to 255 bytes")

    @property
    def where(self) -> str:
        """``host:port`` of the proxy, for messages."""
        return _hostport(self.host, self.port)

    @property
    def has_credentials(self) -> bool:
        return bool(self.user)


class ProxyError(ConnectionDown):
    """The proxy could not be reached, refused us or could not reach the target.

    ``proxy`` is ``host:port`` of the proxy, ``target`` that of the server
    asked for, ``reason`` the cause in words (never a password).
    """

    def __init__(self, settings: ProxySettings, target: str, reason: str) -> None:
        self.proxy = settings.where
        self.kind = settings.kind
        self.target = target
        self.reason = reason
        label = "SOCKS5" if settings.kind == "socks5" else "HTTP"
        super().__init__(f"{label} proxy {self.proxy} (to {target}): {reason}")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class _Refused(Exception):
    """The handshake failed; the message is the reason for :class:`ProxyError`."""


class _Buffered:
    """What a dialect reads the proxy's answer from and writes its requests to.

    A dialect (:class:`_Socks5`, :class:`_HttpConnect`) only calls
    :meth:`write`, :meth:`take`, :meth:`peek`, reads ``buffer``, sets ``step``
    (the function that goes on when more bytes came; True: call it again) and
    calls :meth:`established`; the Twisted protocol and the blocking loop
    provide them.
    """

    buffer: bytes
    step: Callable[[], bool]

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def established(self) -> None:
        raise NotImplementedError

    def take(self, size: int) -> bytes | None:
        """The next *size* bytes of the proxy's answer, or None until they came."""
        if len(self.buffer) < size:
            return None
        chunk, self.buffer = self.buffer[:size], self.buffer[size:]
        return chunk

    def peek(self, size: int) -> bytes | None:
        return self.buffer[:size] if len(self.buffer) >= size else None


class _Handshake(_Buffered, Protocol):
    """Talks to the proxy until the tunnel stands, then passes everything on.

    Like ``twisted.protocols.policies.ProtocolWrapper``, it stays the
    transport's protocol: after the handshake it forwards received bytes and
    the connection's end to the caller's protocol, which writes to the
    transport directly.
    """

    def __init__(self, tunnel: _Tunnel) -> None:
        self.tunnel = tunnel
        self.buffer = b""
        self.inner: Any = None
        self.step: Callable[[], bool] = self._nothing

    def _nothing(self) -> bool:
        return False

    @property
    def link(self) -> Any:
        """The connection to the proxy (then the tunnel)."""
        return self.transport

    def connectionMade(self) -> None:
        self.tunnel.handshake_started(self)
        try:
            self.step = self.tunnel.dialect.start(self)
        except _Refused as exc:
            self.fail(str(exc))

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        self.buffer += data
        try:
            while self.inner is None and self.step():
                pass
        except _Refused as exc:
            self.fail(str(exc))

    def write(self, data: bytes) -> None:
        self.link.write(data)

    def fail(self, reason: str) -> None:
        self.step = self._nothing
        self.tunnel.failed(reason)
        self.link.abortConnection()

    def established(self) -> None:
        """The tunnel stands: build the caller's protocol on this transport."""
        inner = self.tunnel.factory.buildProtocol(self.link.getPeer())
        if inner is None:
            self.tunnel.failed("the caller's factory built no protocol")
            self.link.loseConnection()
            return
        self.inner = inner
        rest, self.buffer = self.buffer, b""
        inner.makeConnection(self.link)
        self.tunnel.succeeded(inner)
        if rest:
            inner.dataReceived(rest)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)
        else:
            self.tunnel.failed("the proxy closed the connection during the handshake")


class _Socks5:
    """RFC 1928 CONNECT, with RFC 1929 user name and password."""

    def __init__(self, settings: ProxySettings, host: str, port: int) -> None:
        self.settings = settings
        self.host = host
        self.port = port

    def start(self, proto: _Buffered) -> Callable[[], bool]:
        self.proto = proto
        methods = b"\x00\x02" if self.settings.has_credentials else b"\x00"
        self._write(b"\x05" + bytes([len(methods)]) + methods)
        return self._method

    def _write(self, data: bytes) -> None:
        self.proto.write(data)

    def _method(self) -> bool:
        answer = self.proto.take(2)
        if answer is None:
            return False
        version, method = answer
        if version != 5:
            raise _Refused(f"not a SOCKS5 proxy (version byte {version})")
        if method == 0xFF:
            if self.settings.has_credentials:
                raise _Refused("the proxy accepts none of our authentication methods")
            raise _Refused("the proxy requires credentials (none configured)")
        if method == 0x02:
            if not self.settings.has_credentials:
                raise _Refused("the proxy asks for credentials we did not offer")
            user = (self.settings.user or "").encode()
            password = (self.settings.password or "").encode()
            self._write(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
            self.proto.step = self._auth
            return True
        if method == 0x00:
            return self._request()
        raise _Refused(f"the proxy chose an authentication method we did not offer ({method})")

    def _auth(self) -> bool:
        answer = self.proto.take(2)
        if answer is None:
            return False
        if answer[1] != 0:
            raise _Refused(f"the proxy refused our credentials (user {self.settings.user!r})")
        return self._request()

    def _request(self) -> bool:
        address = _ip(self.host)
        if isinstance(address, ipaddress.IPv4Address):
            target = b"\x01" + address.packed
        elif isinstance(address, ipaddress.IPv6Address):
            target = b"\x04" + address.packed
        else:
            name = self.host.encode("idna")
            if len(name) > 255:
                raise _Refused("target host name longer than 255 bytes")
            target = b"\x03" + bytes([len(name)]) + name
        self._write(b"\x05\x01\x00" + target + struct.pack("!H", self.port))
        self.proto.step = self._reply
        return True

    def _reply(self) -> bool:
        head = self.proto.peek(5)
        if head is None:
            return False
        version, code, _reserved, kind, first = head
        if version != 5:
            raise _Refused(f"not a SOCKS5 answer (version byte {version})")
        if code != 0:
            raise _Refused(SOCKS_REPLIES.get(code, f"SOCKS reply code {code}"))
        sizes = {1: 4, 4: 16, 3: 1 + first}
        if kind not in sizes:
            raise _Refused(f"SOCKS reply with unknown address type {kind}")
        if self.proto.take(4 + sizes[kind] + 2) is None:
            return False
        self.proto.established()
        return False


class _HttpConnect:
    """HTTP CONNECT, with Basic proxy credentials."""

    def __init__(self, settings: ProxySettings, host: str, port: int) -> None:
        self.settings = settings
        self.authority = _hostport(host, port)

    def start(self, proto: _Buffered) -> Callable[[], bool]:
        self.proto = proto
        lines = [f"CONNECT {self.authority} HTTP/1.1", f"Host: {self.authority}"]
        if self.settings.has_credentials:
            pair = f"{self.settings.user}:{self.settings.password or ''}".encode()
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(pair).decode("ascii"))
        proto.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self._answer

    def _answer(self) -> bool:
        buffer = self.proto.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HTTP_HEADER:
                raise _Refused("the proxy's answer to CONNECT is too long")
            return False
        head = self.proto.take(end + 4) or b""
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise _Refused(f"not an HTTP proxy (answered {status_line[:60]!r})")
        status = int(parts[1])
        said = f"{status} {parts[2] if len(parts) > 2 else ''}".strip()
        if 200 <= status < 300:
            self.proto.established()
            return False
        if status in (401, 407):
            if self.settings.has_credentials:
                raise _Refused(
                    f"the proxy refused our credentials (user {self.settings.user!r}): {said}"
                )
            raise _Refused(f"the proxy requires credentials (none configured): {said}")
        if status == 403:
            raise _Refused(f"the proxy forbids a tunnel to {self.authority}: {said}")
        if status in (502, 503, 504):
            raise _Refused(f"the proxy could not reach {self.authority}: {said}")
        raise _Refused(f"the proxy answered CONNECT with {said}")


class _Tunnel(ClientFactory):
    """One connection attempt: builds the handshake and settles *done* once."""

    def __init__(
        self,
        settings: ProxySettings,
        target: str,
        dialect: _Socks5 | _HttpConnect,
        factory: Factory,
        done: defer.Deferred[Any],
    ) -> None:
        self.settings = settings
        self.target = target
        self.dialect = dialect
        self.factory = factory
        self.done = done
        self.handshake: _Handshake | None = None

    def buildProtocol(self, addr: Any) -> _Handshake:
        return _Handshake(self)

    def handshake_started(self, proto: _Handshake) -> None:
        self.handshake = proto

    def failed(self, reason: str) -> None:
        if not self.done.called:
            self.done.errback(ProxyError(self.settings, self.target, reason))

    def succeeded(self, inner: Any) -> None:
        if not self.done.called:
            self.done.callback(inner)


@implementer(IStreamClientEndpoint)
class ProxiedEndpoint:
    """Connects to *host*:*port* through the proxy of *settings*.

    *timeout* (seconds, on *clock*) limits reaching the proxy and the
    handshake together; *proxy_endpoint* replaces the plain TCP endpoint to
    the proxy (tests); *resolve* turns a host name into an address when the
    name is resolved here (default: the reactor's resolver, IPv4).
    """

    def __init__(
        self,
        reactor: Any,
        settings: ProxySettings,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        clock: Any = None,
        proxy_endpoint: Any = None,
        resolve: Callable[[str], defer.Deferred[str]] | None = None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.host = host
        self.port = port
        self.timeout = timeout
        self.clock = clock if clock is not None else reactor
        self.proxy_endpoint = proxy_endpoint or _endpoint_to(reactor, settings.host, settings.port)
        self.resolve = resolve or reactor.resolve

    @property
    def target(self) -> str:
        return _hostport(self.host, self.port)

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        """Fires with the caller's protocol once the tunnel stands, or fails
        with :class:`ProxyError`."""
        return defer.ensureDeferred(self._connect(protocolFactory))

    async def _connect(self, factory: Factory) -> Any:
        host = self.host
        if not (self.settings.resolve_at_proxy or _ip(host)):
            try:
                host = await self.resolve(host)
            except Exception as exc:
                reason = describe_connection_error(exc) or str(exc)
                raise ProxyError(
                    self.settings, self.target, f"cannot resolve {self.host}: {reason}"
                ) from None
        dialect = _dialect(self.settings, host, self.port)

        def abandon(_: object) -> None:
            if tunnel.handshake is not None and tunnel.handshake.inner is None:
                tunnel.handshake.link.abortConnection()

        done: defer.Deferred[Any] = defer.Deferred(abandon)
        tunnel = _Tunnel(self.settings, self.target, dialect, factory, done)
        connecting = self.proxy_endpoint.connect(tunnel)
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            if not connecting.called:
                connecting.cancel()
            elif tunnel.handshake is not None and tunnel.handshake.inner is None:
                tunnel.handshake.link.abortConnection()
            tunnel.failed(f"no tunnel within {self.timeout:g} s")

        call = self.clock.callLater(self.timeout, expire)
        try:
            try:
                await connecting
            except Exception as exc:
                if expired:
                    return await done
                if isinstance(exc, defer.CancelledError):
                    raise  # the caller gave up
                reason = describe_connection_error(exc) or str(exc) or type(exc).__name__
                raise ProxyError(
                    self.settings, self.target, f"cannot reach the proxy: {reason}"
                ) from None
            return await done
        finally:
            if call.active():
                call.cancel()


def _endpoint_to(reactor: Any, host: str, port: int) -> Any:
    address = _ip(host)
    if isinstance(address, ipaddress.IPv4Address):
        return endpoints.TCP4ClientEndpoint(reactor, host, port)
    if isinstance(address, ipaddress.IPv6Address):
        return endpoints.TCP6ClientEndpoint(reactor, host, port)
    return endpoints.HostnameEndpoint(reactor, host.encode("idna"), port)


def proxied_endpoint(
    reactor: Any, settings: ProxySettings, host: str, port: int, **options: Any
) -> ProxiedEndpoint:
    """The endpoint to *host*:*port* through *settings*' proxy; *options*:
    ``timeout``, ``clock``, ``proxy_endpoint``, ``resolve`` (see
    :class:`ProxiedEndpoint`)."""
    return ProxiedEndpoint(reactor, settings, host, port, **options)


def _dialect(settings: ProxySettings, host: str, port: int) -> _Socks5 | _HttpConnect:
    if settings.kind == "socks5":
        return _Socks5(settings, host, port)
    return _HttpConnect(settings, host, port)


class _BlockingHandshake(_Buffered):
    """The dialects over a blocking socket, within a deadline.

    The proxy's answer is read one byte at a time: the tunnel's first bytes
    (an SMTP greeting sent as soon as the tunnel stands) must stay in the
    socket for the caller, and a handshake is a few dozen bytes.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""
        self.done = False

    def write(self, data: bytes) -> None:
        self._limit()
        self.sock.sendall(data)

    def established(self) -> None:
        self.done = True

    def _limit(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("handshake deadline")
        self.sock.settimeout(left)

    def run(self, dialect: _Socks5 | _HttpConnect) -> None:
        self.step = dialect.start(self)
        while not self.done:
            self._limit()
            byte = self.sock.recv(1)
            if not byte:
                raise _Refused("the proxy closed the connection during the handshake")
            self.buffer += byte
            while not self.done and self.step():
                pass


def connect_through_proxy(
    settings: ProxySettings, host: str, port: int, timeout: float = 30.0
) -> socket.socket:
    """A blocking socket tunnelled to *host*:*port* through the proxy (for
    smtplib and other clients that run in a thread); the same handshakes as
    :class:`ProxiedEndpoint`. *timeout* (seconds) limits reaching the proxy
    and the handshake together; the socket is returned with that timeout
    still set. Raises :class:`ProxyError`."""
    target = _hostport(host, port)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((settings.host, settings.port), timeout)
    except OSError as exc:
        reason = describe_connection_error(exc) or str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        raise ProxyError(settings, target, f"cannot reach the proxy: {reason}") from None
    try:
        address = host
        if not (settings.resolve_at_proxy or _ip(host)):
            try:
                address = socket.gethostbyname(host)
            except OSError as exc:
                raise _Refused(f"cannot resolve {host}: {exc.strerror or exc}") from None
        _BlockingHandshake(sock, deadline).run(_dialect(settings, address, port))
        sock.settimeout(max(0.001, deadline - time.monotonic()))
    except _Refused as exc:
        sock.close()
        raise ProxyError(settings, target, str(exc)) from None
    except TimeoutError:
        sock.close()
        raise ProxyError(settings, target, f"no tunnel within {timeout:g} s") from None
    except OSError as exc:
        sock.close()
        reason = describe_connection_error(exc) or str(exc) or type(exc).__name__
        raise ProxyError(settings, target, f"the connection to the proxy broke: {reason}") from None
    return sock

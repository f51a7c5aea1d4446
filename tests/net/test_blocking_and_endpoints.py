"""The blocking tunnel (``connect_through_proxy``, for smtplib in a thread) and
``ServerSettings.endpoint`` / ``connect_socket``: one way to connect for every
protocol, directly or through the proxy, TLS end to end.

The blocking tunnel talks to a scripted proxy on a loopback socket (a thread
that reads what the client must send and answers); waits are bounded by
socket timeouts, never by sleeping.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock

from postroom.api import ProxiedEndpoint, ProxyError, ProxySettings, ServerSettings
from postroom.net.proxy import connect_through_proxy

SECRET = "pr0xy-s3cret"
SOCKS_OK = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"
GREETING = b"220 mail.example.test ESMTP\r\n"


class ScriptedProxy:
    """Accepts one connection; for each step reads exactly the bytes the client
    must send (kept in ``received``) and writes the answer. Closes after the
    last step unless *stay* (then it waits for the client to close)."""

    def __init__(self, steps: list[tuple[int, bytes]], stay: bool = True) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.steps = steps
        self.stay = stay
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        with conn:
            for size, answer in self.steps:
                data = b""
                while len(data) < size:
                    chunk = conn.recv(size - len(data))
                    if not chunk:
                        return
                    data += chunk
                self.received.append(data)
                if answer:
                    conn.sendall(answer)
            if self.stay:
                conn.recv(1)  # until the client closes

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def proxy_factory() -> Iterator[Any]:
    made: list[ScriptedProxy] = []

    def make(steps: list[tuple[int, bytes]], stay: bool = True) -> ScriptedProxy:
        proxy = ScriptedProxy(steps, stay)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def settings(kind: str, port: int, **kw: Any) -> ProxySettings:
    return ProxySettings(kind=kind, host="127.0.0.1", port=port, **kw)


def test_socks5_with_credentials_leaves_the_servers_first_bytes_in_the_socket(
    proxy_factory: Any,
) -> None:
    name = b"mail.example.test"
    request = b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x02\x4b"
    proxy = proxy_factory(
        [
            (4, b"\x05\x02"),
            (3 + 5 + len(SECRET), b"\x01\x00"),
            # the reply and the server's greeting in one write
            (len(request), SOCKS_OK + GREETING),
        ]
    )
    sock = connect_through_proxy(
        settings("socks5", proxy.port, user="agent", password=SECRET), "mail.example.test", 587, 10
    )
    with sock:
        assert sock.recv(100) == GREETING  # nothing of it was read by the handshake
    assert proxy.received == [
        b"\x05\x02\x00\x02",
        b"\x01\x05agent" + bytes([len(SECRET)]) + SECRET.encode(),
        request,
    ]


def test_http_connect_with_basic_credentials(proxy_factory: Any) -> None:
    import base64

    head = (
        b"CONNECT mail.example.test:587 HTTP/1.1\r\nHost: mail.example.test:587\r\n"
        b"Proxy-Authorization: Basic " + base64.b64encode(f"agent:{SECRET}".encode()) + b"\r\n\r\n"
    )
    proxy = proxy_factory([(len(head), b"HTTP/1.1 200 Connection established\r\n\r\n" + GREETING)])
    sock = connect_through_proxy(
        settings("http", proxy.port, user="agent", password=SECRET), "mail.example.test", 587, 10
    )
    with sock:
        assert sock.recv(100) == GREETING
    assert proxy.received == [head]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTTP/1.1 401 Unauthorized\r\n\r\n", "the proxy refused our credentials (user 'agent')"),
        (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "refused our credentials"),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", "could not reach mail.example.test:587"),
    ],
)
def test_http_refusals_name_the_proxy_never_the_password(
    proxy_factory: Any, answer: bytes, reason: str
) -> None:
    proxy = proxy_factory([(1, b"")], stay=False)
    proxy.steps[0] = (1, answer)
    with pytest.raises(ProxyError) as info:
        connect_through_proxy(
            settings("http", proxy.port, user="agent", password=SECRET),
            "mail.example.test",
            587,
            10,
        )
    assert str(info.value).startswith(
        f"HTTP proxy 127.0.0.1:{proxy.port} (to mail.example.test:587): "
    )
    assert reason in str(info.value)
    assert SECRET not in str(info.value)


def test_socks5_wrong_credentials(proxy_factory: Any) -> None:
    proxy = proxy_factory([(4, b"\x05\x02"), (3 + 5 + len(SECRET), b"\x01\x01")], stay=False)
    with pytest.raises(ProxyError, match="the proxy refused our credentials") as info:
        connect_through_proxy(
            settings("socks5", proxy.port, user="agent", password=SECRET), "mail.example.test", 587
        )
    assert SECRET not in str(info.value)


def test_proxy_closing_during_the_handshake(proxy_factory: Any) -> None:
    proxy = proxy_factory([(3, b"")], stay=False)
    with pytest.raises(ProxyError, match="closed the connection during the handshake"):
        connect_through_proxy(settings("socks5", proxy.port), "mail.example.test", 587, 10)


def test_silent_proxy_times_out(proxy_factory: Any) -> None:
    proxy = proxy_factory([(3, b"")], stay=True)
    with pytest.raises(ProxyError, match=r"no tunnel within 0\.3 s"):
        connect_through_proxy(settings("socks5", proxy.port), "mail.example.test", 587, 0.3)


def test_unreachable_proxy() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProxyError) as info:
        connect_through_proxy(settings("socks5", port), "mail.example.test", 587, 5)
    assert str(info.value) == (
        f"SOCKS5 proxy 127.0.0.1:{port} (to mail.example.test:587): "
        "cannot reach the proxy: Connection refused"
    )


def test_local_resolution_sends_the_address(proxy_factory: Any) -> None:
    request = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x02\x4b"
    proxy = proxy_factory([(3, b"\x05\x00"), (len(request), SOCKS_OK)])
    sock = connect_through_proxy(
        settings("socks5", proxy.port, resolve_at_proxy=False), "localhost", 587, 10
    )
    sock.close()
    assert proxy.received[1] == request


# ---------------------------------------------------------- ServerSettings


class Nothing(Protocol):
    pass


def server(**kw: Any) -> ServerSettings:
    fields: dict[str, Any] = {"host": "imap.example.test", "port": 993, "security": "ssl"}
    return ServerSettings(**(fields | kw))


def test_direct_endpoint_connects_to_the_server_with_the_connect_timeout() -> None:
    endpoint = server(security="starttls", port=143, connect_timeout=12.5).endpoint(
        MemoryReactorClock()
    )
    assert isinstance(endpoint, HostnameEndpoint)
    reactor = MemoryReactorClock()
    server(security="starttls", port=143, connect_timeout=12.5).endpoint(reactor).connect(
        Factory.forProtocol(Nothing)
    )
    reactor.advance(0)
    _host, port, _factory, timeout, _bind = reactor.tcpClients[0]
    assert (port, timeout) == (143, 12)


def test_ssl_wraps_the_endpoint_in_tls_checked_against_the_mail_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []

    def fake_tls(host: str, ca_file: Any = None) -> Any:
        seen.append(host)
        from twisted.internet import ssl

        return ssl.optionsForClientTLS(host)

    monkeypatch.setattr("postroom.net.server.twisted_client_tls", fake_tls)
    proxy = ProxySettings(kind="socks5", host="proxy.example.test", port=1080)
    reactor = MemoryReactorClock()
    endpoint = server(proxy=proxy).endpoint(reactor)
    assert seen == ["imap.example.test"]  # SNI and certificate: the mail host, not the proxy
    endpoint.connect(Factory.forProtocol(Nothing))
    reactor.advance(0)
    _host, port, factory, _timeout, _bind = reactor.tcpClients[0]
    assert port == 1080  # TCP goes to the proxy
    # on it the tunnel's handshake, then TLS (to the mail host), then the caller's protocol
    handshake = factory.buildProtocol(None)._wrappedProtocol  # type: ignore[union-attr]
    assert type(handshake).__name__ == "_Handshake"


def test_proxy_endpoint_targets_the_server_with_the_connect_timeout_on_the_clock() -> None:
    proxy = ProxySettings(kind="http", host="proxy.example.test", port=3128)
    reactor, clock = MemoryReactorClock(), MemoryReactorClock()
    endpoint = server(security="none", port=143, connect_timeout=7, proxy=proxy).endpoint(
        reactor, clock
    )
    assert isinstance(endpoint, ProxiedEndpoint)
    assert (endpoint.host, endpoint.port, endpoint.timeout) == ("imap.example.test", 143, 7)
    assert endpoint.clock is clock and endpoint.settings is proxy


def test_connect_socket_goes_through_the_proxy(proxy_factory: Any) -> None:
    name = b"smtp.example.test"
    request = b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x02\x4b"
    proxy = proxy_factory([(3, b"\x05\x00"), (len(request), SOCKS_OK + GREETING)])
    settings_ = ServerSettings(
        host="smtp.example.test",
        port=587,
        security="starttls",
        proxy=ProxySettings(kind="socks5", host="127.0.0.1", port=proxy.port),
    )
    with settings_.connect_socket() as sock:
        assert sock.recv(100) == GREETING
    assert proxy.received[1] == request


def test_repr_of_settings_hides_the_proxy_password() -> None:
    proxy = ProxySettings(kind="socks5", host="p", port=1, user="u", password=SECRET)
    assert SECRET not in repr(server(proxy=proxy))

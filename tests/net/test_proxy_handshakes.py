"""SOCKS5 and HTTP CONNECT handshakes of ``proxied_endpoint``, on in-memory transports.

The connection to the proxy is a ``StringTransport``: each test checks the
bytes sent and feeds the proxy's answer, so every reply path runs without a
network, and the time limit runs on a ``task.Clock``.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from twisted.internet import defer, error, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from postroom.api import ConnectionDown, ProxyError, ProxySettings, proxied_endpoint

SECRET = "s3cret-Pa55"


class Recorder(Protocol):
    """The caller's protocol: what it received and whether it was connected."""

    def __init__(self) -> None:
        self.received = b""
        self.made = False
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


class FakeProxyEndpoint:
    """Stands for the TCP endpoint to the proxy: connects at once to a
    StringTransport, or fails, or hangs (``outcome``)."""

    def __init__(self, outcome: str = "connect") -> None:
        self.outcome = outcome
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 1080))
        self.protocol: Any = None
        self.pending: defer.Deferred[Any] | None = None
        self.cancelled = False

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        if self.outcome == "refused":
            return defer.fail(error.ConnectionRefusedError("Connection refused"))
        if self.outcome == "hang":

            def cancel(_: object) -> None:
                self.cancelled = True

            self.pending = defer.Deferred(cancel)
            return self.pending
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        return defer.succeed(self.protocol)

    def sent(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def answer(self, data: bytes) -> None:
        self.protocol.dataReceived(data)


class Attempt:
    """One ``connect`` through a fake proxy: its result so far and the parts."""

    def __init__(
        self,
        settings: ProxySettings,
        host: str = "mail.example.test",
        port: int = 993,
        outcome: str = "connect",
        resolve: Any = None,
    ) -> None:
        self.clock = task.Clock()
        self.proxy = FakeProxyEndpoint(outcome)
        self.app = Recorder()
        endpoint = proxied_endpoint(
            MemoryReactorClock(),
            settings,
            host,
            port,
            timeout=30,
            clock=self.clock,
            proxy_endpoint=self.proxy,
            resolve=resolve or (lambda name: defer.fail(AssertionError("no resolution"))),
        )
        self.results: list[Any] = []
        self.connecting = endpoint.connect(Factory.forProtocol(lambda: self.app))
        self.connecting.addBoth(self.results.append)

    @property
    def done(self) -> bool:
        return bool(self.results)

    def error(self) -> ProxyError:
        assert self.results, "the attempt has not finished"
        result = self.results[0]
        assert isinstance(result, Failure), f"the tunnel stood: {result!r}"
        assert isinstance(result.value, ProxyError)
        assert SECRET not in str(result.value)
        return result.value

    def connected(self) -> Recorder:
        assert self.results == [self.app]
        assert self.app.made
        return self.app


def socks(**kw: Any) -> ProxySettings:
    return ProxySettings(kind="socks5", host="192.0.2.9", port=1080, **kw)


def http(**kw: Any) -> ProxySettings:
    return ProxySettings(kind="http", host="192.0.2.9", port=3128, **kw)


CREDENTIALS = {"user": "agent", "password": SECRET}
SOCKS_OK_IPV4 = b"\x05\x00\x00\x01\xc0\x00\x02\x09\x04\x38"
DOMAIN_REQUEST = b"\x05\x01\x00\x03\x11mail.example.test\x03\xe1"


# --- SOCKS5 -----------------------------------------------------------------


def test_socks5_without_credentials_tunnels_by_name() -> None:
    attempt = Attempt(socks())
    assert attempt.proxy.sent() == b"\x05\x01\x00"
    attempt.proxy.answer(b"\x05\x00")
    assert attempt.proxy.sent() == DOMAIN_REQUEST
    assert not attempt.done
    attempt.proxy.answer(SOCKS_OK_IPV4 + b"* OK ready\r\n")
    app = attempt.connected()
    assert app.received == b"* OK ready\r\n"
    app.transport.write(b"a1 CAPABILITY\r\n")  # type: ignore[union-attr]
    assert attempt.proxy.sent() == b"a1 CAPABILITY\r\n"
    attempt.proxy.answer(b"* CAPABILITY IMAP4rev1\r\n")
    assert app.received.endswith(b"* CAPABILITY IMAP4rev1\r\n")
    assert attempt.clock.getDelayedCalls() == []


def test_socks5_with_credentials_sends_rfc1929_subnegotiation() -> None:
    attempt = Attempt(socks(**CREDENTIALS))
    assert attempt.proxy.sent() == b"\x05\x02\x00\x02"
    attempt.proxy.answer(b"\x05\x02")
    assert attempt.proxy.sent() == b"\x01\x05agent\x0b" + SECRET.encode()
    attempt.proxy.answer(b"\x01\x00")
    assert attempt.proxy.sent() == DOMAIN_REQUEST
    attempt.proxy.answer(SOCKS_OK_IPV4)
    attempt.connected()


def test_socks5_answers_may_come_byte_by_byte() -> None:
    attempt = Attempt(socks(**CREDENTIALS))
    for byte in b"\x05\x02\x01\x00":
        attempt.proxy.answer(bytes([byte]))
    assert attempt.proxy.sent().endswith(DOMAIN_REQUEST)
    for byte in b"\x05\x00\x00\x03\x04host\x00\x19":
        assert not attempt.done
        attempt.proxy.answer(bytes([byte]))
    attempt.proxy.answer(b"+OK")
    assert attempt.connected().received == b"+OK"


def test_socks5_reply_with_ipv6_bound_address() -> None:
    attempt = Attempt(socks())
    attempt.proxy.answer(b"\x05\x00")
    attempt.proxy.answer(b"\x05\x00\x00\x04" + bytes(16) + b"\x00\x19")
    attempt.connected()


def test_socks5_wrong_credentials() -> None:
    attempt = Attempt(socks(**CREDENTIALS))
    attempt.proxy.answer(b"\x05\x02\x01\x01")
    err = attempt.error()
    assert str(err) == (
        "SOCKS5 proxy 192.0.2.9:1080 (to mail.example.test:993): "
        "the proxy refused our credentials (user 'agent')"
    )
    assert isinstance(err, ConnectionDown)
    assert (err.proxy, err.target, err.kind) == (
        "192.0.2.9:1080",
        "mail.example.test:993",
        "socks5",
    )
    assert attempt.proxy.transport.disconnecting


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({}, "the proxy requires credentials (none configured)"),
        (CREDENTIALS, "the proxy accepts none of our authentication methods"),
    ],
)
def test_socks5_no_acceptable_method(kw: dict[str, str], reason: str) -> None:
    attempt = Attempt(socks(**kw))
    attempt.proxy.answer(b"\x05\xff")
    assert attempt.error().reason == reason


def test_socks5_asking_credentials_we_did_not_offer() -> None:
    attempt = Attempt(socks())
    attempt.proxy.answer(b"\x05\x02")
    assert attempt.error().reason == "the proxy asks for credentials we did not offer"
    assert attempt.proxy.sent() == b"\x05\x01\x00"  # no sub-negotiation sent


def test_socks5_unknown_method() -> None:
    attempt = Attempt(socks())
    attempt.proxy.answer(b"\x05\x01")
    assert "method we did not offer (1)" in attempt.error().reason


@pytest.mark.parametrize("answer", [b"\x04\x00", b"HTTP/1.1 400 Bad\r\n"])
def test_socks5_talking_to_something_else(answer: bytes) -> None:
    attempt = Attempt(socks())
    attempt.proxy.answer(answer)
    assert attempt.error().reason.startswith("not a SOCKS5 proxy")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1, "general SOCKS server failure"),
        (2, "connection not allowed by the proxy's rules"),
        (3, "network unreachable from the proxy"),
        (4, "host unreachable from the proxy"),
        (5, "connection refused by the target"),
        (6, "TTL expired"),
        (7, "command not supported by the proxy"),
        (8, "address type not supported by the proxy"),
        (42, "SOCKS reply code 42"),
    ],
)
def test_socks5_reply_codes(code: int, reason: str) -> None:
    attempt = Attempt(socks())
    attempt.proxy.answer(b"\x05\x00")
    attempt.proxy.answer(b"\x05" + bytes([code]) + b"\x00\x01" + bytes(6))
    assert attempt.error().reason == reason
    assert attempt.proxy.transport.disconnecting
    assert not attempt.app.made


def test_socks5_reply_with_unknown_address_type() -> None:
    attempt = Attempt(socks())
    attempt.proxy.answer(b"\x05\x00")
    attempt.proxy.answer(b"\x05\x00\x00\x07\x00")
    assert attempt.error().reason == "SOCKS reply with unknown address type 7"


def test_socks5_resolves_locally_when_asked() -> None:
    asked: list[str] = []

    def resolve(name: str) -> defer.Deferred[str]:
        asked.append(name)
        return defer.succeed("192.0.2.25")

    attempt = Attempt(socks(resolve_at_proxy=False), port=25, resolve=resolve)
    attempt.proxy.answer(b"\x05\x00")
    assert asked == ["mail.example.test"]
    assert attempt.proxy.sent() == b"\x05\x01\x00\x05\x01\x00\x01\xc0\x00\x02\x19\x00\x19"


def test_socks5_local_resolution_failure() -> None:
    attempt = Attempt(
        socks(resolve_at_proxy=False),
        resolve=lambda name: defer.fail(error.DNSLookupError(name)),
    )
    assert attempt.error().reason == "cannot resolve mail.example.test: host name not found"


@pytest.mark.parametrize(
    ("host", "request_"),
    [
        ("192.0.2.7", b"\x05\x01\x00\x01\xc0\x00\x02\x07\x03\xe1"),
        (
            "2001:db8::7",
            b"\x05\x01\x00\x04" + bytes.fromhex("20010db8" + "00" * 10 + "0007") + b"\x03\xe1",
        ),
    ],
)
def test_socks5_address_literals_are_sent_as_addresses(host: str, request_: bytes) -> None:
    attempt = Attempt(socks(), host=host)
    attempt.proxy.answer(b"\x05\x00")
    assert attempt.proxy.sent() == b"\x05\x01\x00" + request_


# --- HTTP CONNECT -----------------------------------------------------------


def test_http_connect_without_credentials() -> None:
    attempt = Attempt(http())
    assert attempt.proxy.sent() == (
        b"CONNECT mail.example.test:993 HTTP/1.1\r\nHost: mail.example.test:993\r\n\r\n"
    )
    attempt.proxy.answer(b"HTTP/1.1 200 Connection established\r\n")
    assert not attempt.done
    attempt.proxy.answer(b"Proxy-agent: tinyproxy\r\n\r\n* OK hi\r\n")
    assert attempt.connected().received == b"* OK hi\r\n"


def test_http_connect_with_basic_credentials() -> None:
    attempt = Attempt(http(**CREDENTIALS))
    token = base64.b64encode(f"agent:{SECRET}".encode()).decode()
    assert attempt.proxy.sent() == (
        b"CONNECT mail.example.test:993 HTTP/1.1\r\nHost: mail.example.test:993\r\n"
        b"Proxy-Authorization: Basic " + token.encode() + b"\r\n\r\n"
    )
    attempt.proxy.answer(b"HTTP/1.0 200 OK\r\n\r\n")
    attempt.connected()


def test_http_connect_ipv6_target_is_bracketed() -> None:
    attempt = Attempt(http(), host="2001:db8::7", port=587)
    assert attempt.proxy.sent().startswith(b"CONNECT [2001:db8::7]:587 HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("kw", "status", "reason"),
    [
        ({}, "407 Proxy Authentication Required",
         "the proxy requires credentials (none configured): 407 Proxy Authentication Required"),
        (CREDENTIALS, "407 Proxy Authentication Required",
         "the proxy refused our credentials (user 'agent'): 407 Proxy Authentication Required"),
        # tinyproxy's answer to wrong credentials
        (CREDENTIALS, "401 Unauthorized",
         "the proxy refused our credentials (user 'agent'): 401 Unauthorized"),
        ({}, "403 Forbidden",
         "the proxy forbids a tunnel to mail.example.test:993: 403 Forbidden"),
        ({}, "502 Bad Gateway",
         "the proxy could not reach mail.example.test:993: 502 Bad Gateway"),
        ({}, "503 Service Unavailable",
         "the proxy could not reach mail.example.test:993: 503 Service Unavailable"),
        ({}, "504 Gateway Timeout",
         "the proxy could not reach mail.example.test:993: 504 Gateway Timeout"),
        ({}, "500 Internal Error", "the proxy answered CONNECT with 500 Internal Error"),
    ],
)  # fmt: skip
def test_http_connect_refusals(kw: dict[str, str], status: str, reason: str) -> None:
    attempt = Attempt(http(**kw))
    attempt.proxy.answer(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
    err = attempt.error()
    assert err.reason == reason
    assert str(err).startswith("HTTP proxy 192.0.2.9:3128 (to mail.example.test:993): ")
    assert attempt.proxy.transport.disconnecting
    assert not attempt.app.made


def test_http_connect_not_an_http_proxy() -> None:
    attempt = Attempt(http())
    attempt.proxy.answer(b"\x05\x00\r\n\r\n")
    assert attempt.error().reason.startswith("not an HTTP proxy")


def test_http_connect_endless_header() -> None:
    attempt = Attempt(http())
    attempt.proxy.answer(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000)
    assert attempt.error().reason == "the proxy's answer to CONNECT is too long"


# --- both kinds: reaching the proxy, losing it, time limit -------------------


@pytest.mark.parametrize("settings", [socks(), http()])
def test_proxy_unreachable(settings: ProxySettings) -> None:
    attempt = Attempt(settings, outcome="refused")
    assert attempt.error().reason == (
        "cannot reach the proxy: connection refused (Connection was refused by other side: "
        "Connection refused.)"
    )


@pytest.mark.parametrize("settings", [socks(), http()])
def test_proxy_closes_during_handshake(settings: ProxySettings) -> None:
    attempt = Attempt(settings)
    attempt.proxy.protocol.connectionLost(Failure(error.ConnectionDone()))
    assert attempt.error().reason == "the proxy closed the connection during the handshake"


@pytest.mark.parametrize("settings", [socks(**CREDENTIALS), http(**CREDENTIALS)])
def test_silent_proxy_times_out_on_the_clock(settings: ProxySettings) -> None:
    attempt = Attempt(settings)
    attempt.clock.advance(29.9)
    assert not attempt.done
    attempt.clock.advance(0.1)
    assert attempt.error().reason == "no tunnel within 30 s"
    assert attempt.proxy.transport.disconnecting


def test_connecting_to_the_proxy_times_out_on_the_clock() -> None:
    attempt = Attempt(socks(), outcome="hang")
    attempt.clock.advance(30)
    assert attempt.error().reason == "no tunnel within 30 s"
    assert attempt.proxy.cancelled


def test_caller_cancels_while_connecting_to_the_proxy() -> None:
    attempt = Attempt(socks(), outcome="hang")
    attempt.connecting.cancel()
    assert attempt.proxy.cancelled
    assert isinstance(attempt.results[0], Failure)
    assert attempt.results[0].check(defer.CancelledError)
    assert attempt.clock.getDelayedCalls() == []


@pytest.mark.parametrize("settings", [socks(), http()])
def test_caller_cancels_during_the_handshake(settings: ProxySettings) -> None:
    attempt = Attempt(settings)
    attempt.connecting.cancel()
    assert attempt.results[0].check(defer.CancelledError)
    assert attempt.proxy.transport.disconnecting
    attempt.proxy.protocol.connectionLost(Failure(error.ConnectionAborted()))
    assert len(attempt.results) == 1 and not attempt.app.made
    assert attempt.clock.getDelayedCalls() == []


def test_tunnel_end_reaches_the_callers_protocol() -> None:
    attempt = Attempt(http())
    attempt.proxy.answer(b"HTTP/1.1 200 OK\r\n\r\n")
    app = attempt.connected()
    attempt.proxy.protocol.connectionLost(Failure(error.ConnectionDone()))
    assert app.lost is not None and app.lost.check(error.ConnectionDone)
    assert attempt.results == [app]  # the attempt stays a success


def test_default_endpoint_connects_to_the_proxy_address() -> None:
    reactor = MemoryReactorClock()
    endpoint = proxied_endpoint(reactor, socks(), "mail.example.test", 993)
    endpoint.connect(Factory.forProtocol(Recorder))
    assert [(h, p) for h, p, *_ in reactor.tcpClients] == [("192.0.2.9", 1080)]


# --- settings ---------------------------------------------------------------


def test_settings_repr_hides_the_password() -> None:
    settings = socks(**CREDENTIALS)
    assert SECRET not in repr(settings)
    assert "agent" in repr(settings)
    assert settings.where == "192.0.2.9:1080"
    assert ProxySettings(kind="http", host="::1", port=8080).where == "[::1]:8080"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"kind": "socks4"}, "proxy kind must be one of socks5, http: 'socks4'"),
        ({"host": ""}, "proxy host is empty"),
        ({"port": 0}, "proxy port out of range: 0"),
        ({"port": 65536}, "proxy port out of range: 65536"),
        ({"user": "agent"}, "proxy user 'agent' has no password"),
        (
            {"user": "u" * 256, "password": "p"},
            "SOCKS5 user name and password must be 1 to 255 bytes",
        ),
    ],
)
def test_settings_refuse_bad_values(kw: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"kind": "socks5", "host": "proxy.example", "port": 1080} | kw
    with pytest.raises(ValueError) as caught:
        ProxySettings(**values)
    assert str(caught.value) == message

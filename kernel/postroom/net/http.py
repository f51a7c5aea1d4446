"""HTTPS requests with Twisted: certificates verified, through the site's proxy, on a deadline.

Token endpoints, Microsoft Graph and any later HTTP-speaking driver need the
same four things, so they share :class:`HTTPClient`:

* **HTTPS only**, the certificate checked against the URL's host name and
  the system's CAs or a CA file: every such request carries a password, a
  client secret or a bearer token;
* **through the proxy** (:class:`~postroom.net.proxy.ProxySettings`) when
  there is one. Twisted's ``ProxyAgent`` speaks plain HTTP to a proxy and
  cannot tunnel, so an ``Agent`` built with
  :meth:`~twisted.web.client.Agent.usingEndpointFactory` opens every
  connection with :func:`~postroom.net.proxy.proxied_endpoint` and runs TLS
  end to end inside the tunnel. ``$https_proxy`` and ``$no_proxy`` are not
  read: the site file says what goes where;
* **a deadline** on the injected clock for the whole request, answer
  included, so a server that stops talking cannot hang a mailbox;
* **a cap** on an answer kept in memory; a large body (a message's MIME) is
  streamed into a *sink* (e.g. a :class:`~postroom.sources.spool.SpoolFile`)
  instead, or, with ``truncate``, only its beginning is read (a webhook's
  answer matters for its status, not its body).

A request that got no answer fails with :class:`HTTPUnavailable` (a
:class:`~postroom.errors.ConnectionDown`) naming the host or the proxy and
the reason, never a header or the body; any HTTP answer, error status or not,
is returned for the caller to read.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any
from typing import Protocol as TypingProtocol
from urllib.parse import urlsplit

import attrs
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from postroom.errors import ConnectionDown
from postroom.net.errors import describe_connection_error
from postroom.net.proxy import ProxyError, ProxySettings, proxied_endpoint
from postroom.net.tls import twisted_client_tls

#: whether this Twisted's TLS wrapper takes the reactor whose timers it uses
_TLS_TAKES_CLOCK = "clock" in inspect.signature(wrapClientTLS).parameters
#: the most an answer kept in memory may hold
MAX_BODY = 1024 * 1024
#: seconds for one request, connection and answer together
DEFAULT_TIMEOUT = 30.0
USER_AGENT = "postroom"
#: open connections kept per host by a ``persistent`` client
MAX_PERSISTENT = 4
#: seconds an idle kept connection stays open: shorter than servers' own idle
#: timeouts, so a request rarely meets a connection the server already closed
IDLE_CONNECTION_SECONDS = 30.0


class HTTPUnavailable(ConnectionDown):
    """No usable answer: the server or the proxy could not be reached, TLS
    failed, the deadline passed, the connection broke or the answer was too long."""


class Sink(TypingProtocol):
    """Where a streamed body goes (a spool file, a hash)."""

    def write(self, data: bytes) -> Any: ...


@attrs.frozen
class HTTPResponse:
    """An answer: status, headers (names in lower case, the last value of
    each) and the body (``b""`` when it was streamed into a sink; ``size``
    counts it either way). ``truncated``: the body is only the first
    ``max_body`` bytes of a longer one (``request(truncate=True)``)."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = attrs.field(default=b"", repr=False)
    size: int = 0
    truncated: bool = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def https_host(url: str) -> str:
    """``host[:port]`` of an ``https://`` URL, for messages; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"expected an https:// URL, not {url!r}")
    return parts.hostname + (f":{parts.port}" if parts.port else "")


class _Receive(Protocol):
    """Takes a body into memory (up to a cap) or into a sink; with *truncate*,
    a body over the cap ends at the cap (the rest is not read)."""

    def __init__(
        self,
        done: defer.Deferred[tuple[bytes, int, bool]],
        cap: int,
        sink: Any,
        truncate: bool = False,
    ) -> None:
        self.done = done
        self.cap = cap
        self.sink = sink
        self.truncate = truncate
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        try:
            if self.sink is not None:
                self.sink.write(data)
                return
            if self.size > self.cap and self.truncate:
                self.parts.append(data[: len(data) - (self.size - self.cap)])
                self.done.callback((b"".join(self.parts), self.size, True))
                self._stop()
                return
            if self.size > self.cap:
                raise ValueError(f"answer longer than {self.cap} bytes")
        except Exception as exc:  # the sink refused (full disk, over its limit), or too long
            self.done.errback(exc)
            self._stop()
            return
        self.parts.append(data)

    def _stop(self) -> None:
        """Read no more: the connection is dropped (never reused)."""
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.done.called or reason is None:
            return
        if reason.check(ResponseDone) or reason.check(PotentialDataLoss):
            self.done.callback((b"".join(self.parts), self.size, False))
        else:
            self.done.errback(reason)


@implementer(IBodyProducer)
class _Body:
    """A request body already in memory, written at once. Twisted's
    ``FileBodyProducer`` would feed it through the *global* reactor's
    cooperator, which a client on another reactor (an embedding
    application's, a test's) never runs."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        """Nothing left to pause: the body was written at once."""

    def resumeProducing(self) -> None:
        """Nothing left to resume."""

    def stopProducing(self) -> None:
        """Nothing left to stop."""


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Where the Agent connects: straight to the host, or through the proxy;
    TLS wrapped around either, verified against the URL's host."""

    def __init__(
        self,
        reactor: Any,
        clock: Any,
        proxy: ProxySettings | None,
        ca_file: str | None,
        timeout: float,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.proxy = proxy
        self.ca_file = ca_file
        self.timeout = timeout

    def endpointForURI(self, uri: Any) -> Any:
        host = uri.host.decode("idna") if isinstance(uri.host, bytes) else str(uri.host)
        port = int(uri.port)
        if self.proxy is not None:
            inner: Any = proxied_endpoint(
                self.reactor, self.proxy, host, port, timeout=self.timeout, clock=self.clock
            )
        else:
            inner = HostnameEndpoint(self.reactor, host.encode("idna"), port, timeout=self.timeout)
        creator = twisted_client_tls(host, self.ca_file)
        if _TLS_TAKES_CLOCK:
            # TLS batches small writes on a timer: on this reactor, not the global
            # one (which an embedding application's or a test's reactor is not)
            return wrapClientTLS(creator, inner, clock=self.reactor)
        return wrapClientTLS(creator, inner)


class HTTPClient:
    """HTTPS requests of one driver (or of every token request of a gateway)."""

    def __init__(
        self,
        reactor: Any,
        clock: Any = None,
        *,
        proxy: ProxySettings | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        persistent: bool = False,
    ) -> None:
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.proxy = proxy
        self.ca_file = os.fspath(ca_file) if ca_file else None
        self.timeout = timeout
        #: keep connections open between requests (one TLS handshake, not one
        #: per request); :meth:`close` closes them
        self.persistent = persistent
        self._pools: dict[tuple[str | None, float], HTTPConnectionPool] = {}
        #: requests sent (metrics, tests)
        self.requests = 0

    def _agent(self, trust: str | None, timeout: float) -> Agent:
        """An Agent for one trust root; with ``persistent``, over a pool of its
        own (a connection verified against one CA file is never reused for another)."""
        endpoints = _Endpoints(self.reactor, self.clock, self.proxy, trust, timeout)
        if not self.persistent:
            return Agent.usingEndpointFactory(self.reactor, endpoints)
        pool = self._pools.get((trust, timeout))
        if pool is None:
            pool = HTTPConnectionPool(self.reactor, persistent=True)
            pool.maxPersistentPerHost = MAX_PERSISTENT
            pool.cachedConnectionTimeout = IDLE_CONNECTION_SECONDS  # type: ignore[assignment]
            self._pools[(trust, timeout)] = pool
        return Agent.usingEndpointFactory(self.reactor, endpoints, pool=pool)

    def close(self) -> defer.Deferred[None]:
        """Close the connections kept open (``persistent``); fires once they are."""
        pools, self._pools = list(self._pools.values()), {}
        closing = [pool.closeCachedConnections() for pool in pools]
        return defer.DeferredList(closing).addCallback(lambda _: None)

    def __repr__(self) -> str:
        via = f"via {self.proxy.kind} proxy {self.proxy.where}" if self.proxy else "direct"
        return f"HTTPClient({via})"

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        sink: Sink | None = None,
        max_body: int = MAX_BODY,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        truncate: bool = False,
    ) -> defer.Deferred[HTTPResponse]:
        """*method* *url* (https only) with *headers* and *body*.

        The answer's body is kept (up to *max_body* bytes) or, with a *sink*,
        written into it as it arrives. A longer body fails the request, or,
        with *truncate*, is cut at *max_body* bytes (``truncated``; the rest
        is not read and the connection is dropped). *ca_file* replaces the
        client's for this request; *timeout* its deadline. Fails with
        :class:`HTTPUnavailable` when no usable answer came, with ValueError
        for a URL that is not ``https://``."""
        where = https_host(url)
        deadline = timeout if timeout is not None else self.timeout
        return defer.ensureDeferred(
            self._request(
                method, url, where, headers or {}, body, sink, max_body, ca_file, deadline,
                truncate,
            )
        )

    async def _request(
        self,
        method: str,
        url: str,
        where: str,
        headers: Mapping[str, str],
        body: bytes | None,
        sink: Sink | None,
        max_body: int,
        ca_file: Any,
        timeout: float,
        truncate: bool = False,
    ) -> HTTPResponse:
        raw = Headers({b"User-Agent": [USER_AGENT.encode()]})
        for name, value in headers.items():
            raw.setRawHeaders(name.encode("ascii"), [value.encode("latin-1")])
        trust = os.fspath(ca_file) if ca_file else self.ca_file
        agent = self._agent(trust, timeout)
        producer = _Body(body) if body is not None else None
        self.requests += 1
        pending = agent.request(method.encode("ascii"), url.encode("ascii"), raw, producer)
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            pending.cancel()
            if receiving is not None and not receiving.called:
                receiving.cancel()

        receiving: defer.Deferred[tuple[bytes, int, bool]] | None = None
        call = self.clock.callLater(timeout, expire)
        try:
            response = await pending
            receiving = defer.Deferred()
            response.deliverBody(_Receive(receiving, max_body, sink, truncate))
            data, size, truncated = await receiving
            answer_headers = {
                name.decode("latin-1").lower(): values[-1].decode("latin-1")
                for name, values in response.headers.getAllRawHeaders()
                if values
            }
            return HTTPResponse(int(response.code), answer_headers, data, size, truncated)
        except Exception as exc:
            if timed_out:
                reason = f"no complete answer within {timeout:g} s"
            else:
                reason = failure_reason(exc)
            raise HTTPUnavailable(f"{where}: {reason}") from None
        finally:
            if call.active():
                call.cancel()


def failure_reason(exc: BaseException) -> str:
    """A readable cause, unwrapping Twisted's ``ResponseNeverReceived`` and friends."""
    if isinstance(exc, ProxyError):
        return str(exc)
    inner = getattr(exc, "reasons", None)
    if inner:
        first = inner[0]
        value = getattr(first, "value", first)
        if isinstance(value, ProxyError):
            return str(value)
        described = describe_connection_error(value)
        if described:
            return described
        return f"{type(value).__name__}: {value}"
    return describe_connection_error(exc) or f"{type(exc).__name__}: {exc}"


__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BODY",
    "HTTPClient",
    "HTTPResponse",
    "HTTPUnavailable",
    "https_host",
]

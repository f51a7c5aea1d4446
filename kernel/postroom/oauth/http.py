"""Token requests over HTTPS with Twisted: certificates verified, through the site's proxy.

Every OAuth auth driver POSTs one form to one token endpoint and reads a
small JSON answer. :class:`TokenHTTP` does exactly that and no more:

* HTTPS only (a token endpoint over clear text would send client secrets and
  passwords in clear), the certificate checked against the endpoint's host
  name and the system's CAs or ``token-ca-file``;
* through the ``proxy`` section's SOCKS5 or HTTP CONNECT proxy when there is
  one: Twisted's ``ProxyAgent`` speaks plain HTTP to a proxy and cannot
  tunnel, so an ``Agent`` built with :meth:`Agent.usingEndpointFactory` opens
  every connection with :func:`~postroom.net.proxy.proxied_endpoint` and runs
  TLS end to end inside the tunnel (``$https_proxy`` and ``$no_proxy`` are
  not read: the site file says what goes where);
* a deadline on the injected clock for the whole request, and a cap on the
  answer's size (a hostile or broken endpoint can neither hang a mailbox nor
  fill memory).

Failures are :class:`~postroom.tokens.TokenError`\\s of kind ``temporary``
(the endpoint could not be reached or answered nothing usable); an HTTP
answer, error or not, is returned to the driver, which classifies it.
"""

from __future__ import annotations

import os
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from postroom.net.errors import describe_connection_error
from postroom.net.proxy import ProxyError, ProxySettings, proxied_endpoint
from postroom.net.tls import twisted_client_tls
from postroom.tokens import TokenError, TokenFailure

#: the most a token endpoint's answer may hold (Azure's are ~5 KB)
MAX_ANSWER = 256 * 1024
#: seconds for one token request, connection and answer together
DEFAULT_TIMEOUT = 30.0
USER_AGENT = "postroom"
#: the headers of every token request (a driver may add its own)
FORM_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/json",
    "User-Agent": USER_AGENT,
}


@attrs.frozen
class TokenAnswer:
    """What a token endpoint said: HTTP status and body (JSON, usually)."""

    status: int
    body: bytes = attrs.field(repr=False)


class _Collect(Protocol):
    """Reads a response body up to :data:`MAX_ANSWER` bytes."""

    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_ANSWER:
            if not self.done.called:
                self.done.errback(ValueError(f"answer longer than {MAX_ANSWER} bytes"))
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.done.called or reason is None:
            return
        if reason.check(ResponseDone) or reason.check(_PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


from twisted.web.http import PotentialDataLoss as _PotentialDataLoss  # noqa: E402


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Where the Agent connects: straight to the host, or through the proxy;
    TLS wrapped around either, verified against the URL's host."""

    def __init__(
        self, reactor: Any, clock: Any, proxy: ProxySettings | None, ca_file: str | None,
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
        return wrapClientTLS(twisted_client_tls(host, self.ca_file), inner)


class TokenHTTP:
    """POSTs forms to token endpoints (one instance per kernel: one connection pool)."""

    def __init__(
        self,
        reactor: Any,
        clock: Any = None,
        *,
        proxy: ProxySettings | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.proxy = proxy
        self.timeout = timeout
        #: requests sent (metrics, tests)
        self.requests = 0

    def __repr__(self) -> str:
        via = f" via {self.proxy.kind} proxy {self.proxy.where}" if self.proxy else ""
        return f"TokenHTTP({via.strip() or 'direct'})"

    def _agent(self, ca_file: str | None) -> Agent:
        return Agent.usingEndpointFactory(
            self.reactor, _Endpoints(self.reactor, self.clock, self.proxy, ca_file, self.timeout)
        )

    def post_form(
        self,
        url: str,
        body: str,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> defer.Deferred[TokenAnswer]:
        """POST ``application/x-www-form-urlencoded`` *body* to *url* (https only).

        Fires with the :class:`TokenAnswer` whatever the status; fails with a
        temporary :class:`TokenError` when no answer came (naming the host, or
        the proxy, never the body)."""
        return defer.ensureDeferred(self._post(url, body, ca_file, headers or {}))

    async def _post(
        self, url: str, body: str, ca_file: Any, headers: dict[str, str]
    ) -> TokenAnswer:
        where = https_target(url)
        all_headers = Headers({k.encode(): [v.encode()] for k, v in FORM_HEADERS.items()})
        for name, value in headers.items():
            all_headers.setRawHeaders(name.encode("ascii"), [value.encode("latin-1")])
        agent = self._agent(os.fspath(ca_file) if ca_file else None)
        self.requests += 1
        request = agent.request(
            b"POST", url.encode("ascii"), all_headers, FileBodyProducer(BytesIO(body.encode()))
        )
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            request.cancel()

        call = self.clock.callLater(self.timeout, expire)
        try:
            response = await request
            done: defer.Deferred[bytes] = defer.Deferred()
            response.deliverBody(_Collect(done))
            data = await done
            return TokenAnswer(int(response.code), data)
        except TokenError:
            raise
        except Exception as exc:
            if timed_out:
                reason = f"no answer within {self.timeout:g} s"
            elif isinstance(exc, ProxyError):
                reason = str(exc)
            else:
                reason = _reason(exc)
            raise TokenError(
                TokenFailure.TEMPORARY, f"token endpoint {where}: {reason}"
            ) from None
        finally:
            if call.active():
                call.cancel()


def https_target(url: str) -> str:
    """``host[:port]`` of a token endpoint URL, for messages; a
    :class:`~postroom.tokens.TokenError` unless it is ``https://`` (a clear-text
    endpoint would carry passwords and client secrets in clear)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise TokenError(
            TokenFailure.GRANT, f"the token endpoint must be an https:// URL, not {url!r}"
        )
    return parts.hostname + (f":{parts.port}" if parts.port else "")


def _reason(exc: BaseException) -> str:
    """A readable cause, unwrapping Twisted's ``ResponseNeverReceived`` and friends."""
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


__all__ = ["FORM_HEADERS", "MAX_ANSWER", "TokenAnswer", "TokenHTTP", "https_target"]

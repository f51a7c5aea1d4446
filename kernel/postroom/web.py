"""The HTTP API: health, metrics, sending and reading interactions (Twisted web, JSON).

========================  ==============================================================
``GET /health``           without a token: ``{"status": "up"}`` (200) or ``"down"``
                          (503) only, for load balancers (:func:`_bare_health`; ``HEAD``
                          too: the status alone); with
                          the token or the scrape token: per mailbox: state
                          (``auth-failed`` after refused logins), connected, last
                          success, last error, next attempt, counters;
                          ``smtp_client``: the sender's login state; 200 when every
                          mailbox is connected and the sender's login is not refused,
                          else 503
``GET /metrics``          Prometheus text format (the token or the scrape token)
``POST /send``            queue an outbound e-mail (JSON body, the schema
                          ``postroom/schemas/send-request.json``, or a
                          ``multipart/form-data`` upload: :mod:`postroom.uploads`); 202
                          with the outbound interaction, 400 ``{"error": ..., "field":
                          ...}`` when refused
``POST /render``          the same body, nothing queued or sent: 200 with what would be
                          sent (:meth:`postroom.pipeline.outbound.Preview.as_json`), the
                          same 400s
``GET /interactions...``  listing, one interaction, its files, its raw message:
                          :mod:`postroom.interaction_routes`
``POST /interactions/ID/  put its refused and failed hand-off targets (or the one named,
retry-handoff``           ``{"target": ...}``) back to pending and retry them at once
``GET /events``           server-sent events (:mod:`postroom.events`, docs/events.md)
``/outbox...``            the outbox: list, show, retry, cancel (:mod:`postroom.outboxroutes`)
========================  ==============================================================

Plugins add routes (``postroom_register_routes``, :mod:`postroom.routes`); they
are served after the kernel's, behind the same token and body limit.

:class:`ApiService` serves it as a child service of the gateway, started and
stopped with it, bound to ``http.bind`` (127.0.0.1 by default). When ``http.token`` is set every
request must carry ``Authorization: Bearer <token>``; binding to anything but
a loopback address without a token is refused at start-up, and so is a token
shorter than :data:`MIN_TOKEN_LENGTH` characters or with blanks. Two
exceptions to the token (:func:`access`): a request without an
``Authorization`` header may read the bare ``GET /health``, and the read-only
``http.scrape-token`` reads ``GET /health`` and ``GET /metrics``, nothing else
(403); neither may send a body.

Twisted reads a request's whole body before the resource sees it, so the token
and the body's length are checked earlier, by :class:`ApiRequest`, as soon as
the headers are in: a request without the token, or announcing a body over
:data:`MAX_BODY`, is answered (401, 413) and its connection closed before any
byte of the body is read; a chunked body is cut off at the same limit as it
arrives.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from twisted.application import service
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.web import http, resource, server
from zope.interface import implementer

from postroom.errors import ConfigError
from postroom.events import events_route
from postroom.interaction_routes import ROUTES as INTERACTION_ROUTES
from postroom.interaction_routes import Download, error_body
from postroom.kernel import token_problem
from postroom.loginpolicy import REFUSED_STATES
from postroom.outboxroutes import OUTBOX_ROUTES
from postroom.plugins.facade import PluginFailure, resolve
from postroom.routes import (
    HTTPError,
    Response,
    Route,
    RouteError,
    RouteRequest,
    RouteTable,
    Stream,
    StreamHandle,
    json_bytes,
)
from postroom.sendrequest import RequestError, parse_json, request_from_json
from postroom.uploads import is_form, request_from_form
from postroom.views import interaction_json

if TYPE_CHECKING:
    from postroom.services.gateway import Gateway

log = logging.getLogger(__name__)

MAX_BODY = 25 * 1024 * 1024  # a send request with its HTML body (files: see max_body)

#: what a request's credentials allow (:func:`access`): everything (the API
#: token, or none configured), reading /health and /metrics (the scrape token),
#: the bare /health (no ``Authorization`` header)
FULL, SCRAPE, ANONYMOUS = "full", "scrape", "anonymous"
#: what the scrape token reads
SCRAPE_ROUTES = frozenset({("GET", "/health"), ("GET", "/metrics")})


def bearer_matches(values: list[bytes] | None, token: bytes) -> bool:
    """Whether the ``Authorization`` header *values* carry exactly the bearer *token*.

    Compared as bytes in constant time: a malformed header (another scheme,
    non-ASCII bytes, two headers) is simply not the token.
    """
    if not values or len(values) != 1:
        return False
    scheme, blank, given = values[0].partition(b" ")
    return (
        bool(blank)
        and scheme.lower() == b"bearer"
        and hmac.compare_digest(given.strip(b" "), token)
    )


def access(headers: Any, token: bytes | None, scrape_token: bytes | None) -> str | None:
    """What the request with *headers* may do: :data:`FULL`, :data:`SCRAPE`,
    :data:`ANONYMOUS`, or None (a token that is neither: 401)."""
    if token is None:
        return FULL
    values = headers.getRawHeaders(b"authorization")
    if not values:
        return ANONYMOUS
    if bearer_matches(values, token):
        return FULL
    if scrape_token is not None and bearer_matches(values, scrape_token):
        return SCRAPE
    return None


class ApiRequest(server.Request):
    """A request refused as soon as its headers are in when it lacks the token or
    announces too large a body; a chunked body is cut off at the limit.

    The answer is written straight to the connection, which is then closed: the
    channel has not parsed the request line into the request yet, and the body
    that follows must never be read.
    """

    refused: int | None = None  #: the status of an early refusal
    _received = 0

    @property
    def _site(self) -> ApiSite:
        site: ApiSite = self.channel.site  # type: ignore[attr-defined]  # set by the Site
        return site

    def gotLength(self, length: int | None) -> None:
        site = self._site
        allowed = site.access(self.requestHeaders)
        if allowed is None or (allowed == ANONYMOUS and length != 0):
            self._refuse(401, "a valid bearer token is required")
        elif allowed == SCRAPE and length != 0:
            self._refuse(403, "the scrape token reads GET /health and /metrics only")
        elif length is not None and length > site.max_body:
            self._refuse(413, f"request body over {site.max_body} bytes")
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused is not None:
            return
        self._received += len(data)
        if self._received > self._site.max_body:
            self._refuse(413, f"request body over {self._site.max_body} bytes")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused is None:
            super().requestReceived(command, path, version)

    def _refuse(self, code: int, message: str) -> None:
        self.refused = code
        if self.content is not None:
            self.content.close()
        self.content = io.BytesIO()  # for the channel's bookkeeping; never written
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        body = json.dumps({"error": message}).encode()
        head = [
            f"HTTP/1.1 {code} {http.RESPONSES[code].decode()}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if code == 401:
            head.append('WWW-Authenticate: Bearer realm="postroom"')
        transport = self.channel.transport
        if transport is not None:
            transport.write("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        self.channel.loseConnection()


class ApiSite(server.Site):
    """The API's site: its requests are :class:`ApiRequest`, checked early."""

    requestFactory = ApiRequest
    displayTracebacks = False
    noisy = False  # no "Starting factory" lines: the API says where it listens

    def __init__(
        self,
        gateway: Gateway,
        token: str | None,
        max_body: int = MAX_BODY,
        routes: RouteTable | None = None,
        scrape_token: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Twisted would parse a form body itself (the whole body, nested
        # multiparts too, with the email package) before the resource sees it:
        # forms are read by postroom.uploads, in one bounded pass.
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(Api(gateway, token, max_body, routes, scrape_token), **kwargs)
        self.token = token.encode("utf-8") if token else None
        self.scrape_token = scrape_token.encode("utf-8") if scrape_token else None
        self.max_body = max_body

    def access(self, headers: Any) -> str | None:
        return access(headers, self.token, self.scrape_token)

    def log(self, request: Any) -> None:
        """The access log: a DEBUG line per request (Twisted's is an INFO line,
        and a load balancer polls ``/health`` every few seconds)."""
        if log.isEnabledFor(logging.DEBUG):
            client = getattr(request.getClientAddress(), "host", "-")
            method = request.method.decode("latin-1")
            uri = request.uri.decode("utf-8", "replace")
            log.debug("%s %s %s %d", client, method, uri, request.code)

    def authorised(self, headers: Any) -> bool:
        """Whether *headers* carry the API token (or none is needed)."""
        return self.access(headers) == FULL


def route_table(gateway: Gateway) -> RouteTable:
    """The kernel's routes and the plugins' (``postroom_register_routes``).

    Raises ConfigError naming the plugin for a route that is malformed or
    clashes with another: the API would serve it wrongly, so nothing starts.
    """
    kernel = gateway.kernel
    try:
        return RouteTable.build(KERNEL_ROUTES, kernel.hooks.register_routes(kernel.ctx))
    except PluginFailure as exc:
        raise ConfigError(str(exc)) from exc
    except RouteError as exc:
        raise ConfigError(f"HTTP API routes: {exc}") from None


class Api(resource.Resource):
    """One resource for the whole API: a route table picks the handler."""

    isLeaf = True

    def __init__(
        self,
        gateway: Gateway,
        token: str | None,
        max_body: int = MAX_BODY,
        routes: RouteTable | None = None,
        scrape_token: str | None = None,
    ) -> None:
        super().__init__()
        self.gateway = gateway
        self.token = token.encode("utf-8") if token else None
        self.scrape_token = scrape_token.encode("utf-8") if scrape_token else None
        self.max_body = max_body
        self.routes = routes if routes is not None else route_table(gateway)

    def render(self, request: Any) -> Any:
        d = ensureDeferred(self._handle(request))
        d.addErrback(lambda f: log.error("HTTP handler failed: %s", f.getTraceback()))
        return server.NOT_DONE_YET

    async def _allowed(self, request: Any) -> Response | None:
        """Checked again here, in case the resource is served by another site:
        raises the 401 or 403; the bare health answer for a request without a
        token; None when the request goes to its route."""
        allowed = access(request.requestHeaders, self.token, self.scrape_token)
        method = request.method.decode("latin-1")
        path = request.path.decode("utf-8", "replace")
        if allowed == ANONYMOUS and path == "/health" and method in ("GET", "HEAD"):
            return await _bare_health(self.gateway)
        if allowed in (None, ANONYMOUS):
            raise HTTPError(401, "a valid bearer token is required")
        if allowed == SCRAPE and (method, path) not in SCRAPE_ROUTES:
            raise HTTPError(403, "the scrape token reads GET /health and /metrics only")
        return None

    async def _handle(self, request: Any) -> None:
        try:
            answer = await self._allowed(request) or await self._route(request)
            if isinstance(answer, Stream):
                await _stream(request, answer)
                return
            if isinstance(answer, Download):
                self._download(request, answer)
                return
            code, body, content_type = answer.status, answer.body, answer.content_type
        except HTTPError as exc:
            code, body, content_type = exc.code, error_body(exc), "application/json"
        except RequestError as exc:  # a send request refused: nothing was queued
            code, content_type = 400, "application/json"
            body = _json({"error": str(exc), "field": exc.field})
        except Exception as exc:
            log.exception(
                "HTTP %s %s failed",
                request.method.decode("latin-1"),
                request.path.decode("utf-8", "replace"),
            )
            code, body = 500, _json({"error": f"{type(exc).__name__}: {exc}"})
            content_type = "application/json"
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setResponseCode(code)
        request.setHeader(b"content-type", content_type.encode())
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()

    def _download(self, request: Any, answer: Download) -> None:
        """Stream a download from its file (with back-pressure), then close it.
        ``nosniff``: a browser must not take a file for HTML and run it."""
        if request.finished or getattr(request, "_disconnected", False):
            answer.file.close()
            return
        request.setResponseCode(200)
        request.setHeader(b"content-type", answer.content_type.encode("latin-1"))
        request.setHeader(b"content-length", str(answer.size).encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", b"default-src 'none'; sandbox")
        for name, value in answer.headers:
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        FileProducer(request, answer.file).start()

    async def _route(self, request: Any) -> Response | Stream | Download:
        method = request.method.decode("latin-1")
        path = request.path.decode("utf-8", "replace")
        route, url_vars = self.routes.find(method, path)
        raw = request.content.read(self.max_body + 1) if request.content is not None else b""
        if len(raw) > self.max_body:
            raise HTTPError(413, f"request body over {self.max_body} bytes")
        # from the URI alone: Twisted's request.args also holds a form-encoded body
        query = parse_qs(urlsplit(request.uri.decode("utf-8", "replace")).query)
        route_request = RouteRequest(
            method=method,
            path=path,
            url_vars=url_vars,
            query=query,
            body=raw,
            ctx=self.gateway.kernel.ctx,
            gateway=self.gateway,
            content_type=request.getHeader(b"content-type"),
            headers={
                name.decode("latin-1").lower(): values[-1].decode("latin-1")
                for name, values in request.requestHeaders.getAllRawHeaders()
            },
        )
        answer = await resolve(route.handler(route_request))
        return (
            answer
            if isinstance(answer, Response | Stream | Download)
            else Response.json(answer)
        )


@implementer(IPushProducer)
class _StreamAnswer:
    """A :class:`Stream` on a Twisted request: the sink it writes to, and the
    producer the connection pauses when the client reads too slowly."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.handle: StreamHandle | None = None
        self.ended = False

    def write(self, data: bytes) -> None:
        if not self.ended:
            self.request.write(data)

    def drop(self) -> None:
        """End the answer now, unsent bytes and all (a client too slow to keep up)."""
        if self.ended:
            return
        self.ended = True
        transport = self.request.channel.transport if self.request.channel else None
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        elif transport is not None:
            transport.loseConnection()

    def pauseProducing(self) -> None:
        if self.handle is not None:
            self.handle.pause()

    def resumeProducing(self) -> None:
        if self.handle is not None:
            self.handle.resume()

    def stopProducing(self) -> None:
        self._gone(None)

    def _gone(self, _: Any) -> None:
        self.ended = True
        if self.handle is not None:
            self.handle.close()


async def _stream(request: Any, answer: Stream) -> None:
    """Serve a :class:`Stream`: the headers, then what it writes until either side ends."""
    request.setResponseCode(200)
    request.setHeader(b"content-type", answer.content_type.encode())
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-accel-buffering", b"no")  # proxies: pass each event on at once
    sink = _StreamAnswer(request)
    sink.handle = await answer.start(sink)  # HTTPError: answered as usual by the caller
    if request.finished or getattr(request, "_disconnected", False):
        sink.handle.close()
        return
    request.registerProducer(sink, True)
    request.write(b": stream open\n\n")  # the headers go now
    request.notifyFinish().addBoth(sink._gone)
    if not sink.ended:
        sink.handle.resume()  # ready: the stream may write


@implementer(IPushProducer)
class FileProducer:
    """Writes a file to a request in pieces as fast as the client reads it:
    paused when the connection's buffer fills, resumed when it drains (a push
    producer: no cooperator, so it runs on whichever reactor serves the API)."""

    PIECE = 64 * 1024

    def __init__(self, request: Any, file: Any) -> None:
        self.request = request
        self.file = file
        self.paused = False
        self.done = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addBoth(lambda _: self._close())
        self._pump()

    def _pump(self) -> None:
        while not self.paused and not self.done:
            data = self.file.read(self.PIECE)
            if not data:
                self.done = True
                self.request.unregisterProducer()
                self.request.finish()
                return
            self.request.write(data)  # may pause us at once

    def _close(self) -> None:
        self.done = True
        self.file.close()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._close()


# -- the kernel's routes


def _health(request: RouteRequest) -> Response:
    gateway = request.gateway
    mailboxes = gateway.health()
    smtp_client = gateway.outbound.health()
    ok = all(m["connected"] and not m.get("stuck") for m in mailboxes.values())
    if smtp_client is not None and smtp_client["state"] in REFUSED_STATES:
        ok = False  # nothing is sent until the password is fixed
    body: dict[str, Any] = {"status": "ok" if ok else "degraded", "mailboxes": mailboxes}
    if smtp_client is not None:
        body["smtp_client"] = smtp_client
    return Response.json(body, 200 if ok else 503)


async def _bare_health(gateway: Gateway) -> Response:
    """Up or down, for a load balancer (no token, no details): up while the
    gateway runs and its store answers a query. Mailboxes or a sender in
    trouble do not make it down: the API still takes sends and answers reads."""
    up = bool(gateway.running)
    if up:
        try:
            await gateway.kernel.store.get_cursor(HEALTH_PROBE)
        except Exception as exc:
            log.warning("health: the store does not answer: %s", exc)
            up = False
    return Response.json({"status": "up" if up else "down"}, 200 if up else 503)


#: the mailbox name the bare health check reads a cursor of (none has it: a
#: mailbox name is a word; the read only proves the store answers)
HEALTH_PROBE = " health probe "


def _metrics(request: RouteRequest) -> Response:
    return Response(200, request.gateway.kernel.metrics.render(), "text/plain; version=0.0.4")


def _send_request(request: RouteRequest) -> Any:
    """The send request of a ``POST /send`` or ``/render`` body: JSON, or a form with files."""
    forbidden = request.gateway.outbound.forbidden
    if is_form(request.content_type):
        assert request.content_type is not None
        return request_from_form(request.content_type, request.body, forbidden)
    return request_from_json(parse_json(request.body), forbidden)


async def _send(request: RouteRequest) -> Response:
    interaction = await request.gateway.send(_send_request(request))
    return Response.json(interaction_json(interaction), 202)


async def _render(request: RouteRequest) -> Response:
    """What ``POST /send`` would queue and send, nothing queued or sent."""
    preview = await request.gateway.preview(_send_request(request))
    return Response.json(preview.as_json())


#: the kernel's own routes; plugins' may not clash with them
KERNEL_ROUTES = (
    Route("GET", "/health", _health),
    Route("GET", "/metrics", _metrics),
    Route("POST", "/send", _send),
    Route("POST", "/render", _render),
    *INTERACTION_ROUTES,
    Route("GET", "/events", events_route),
    *OUTBOX_ROUTES,
)


def _json(data: Any) -> bytes:
    return json_bytes(data)


def max_body(gateway: Gateway) -> int:
    """The largest request body the site takes: a send request with its HTML,
    and the site's largest total of files in base64."""
    files = int(gateway.kernel.config.get("email-processing", "outbound-attachments-max-total"))
    return MAX_BODY + -(-files * 4 // 3) + 64 * 1024


def site_for(gateway: Gateway, token: str | None = None, **kwargs: Any) -> ApiSite:
    """The API's site (keywords: ``max_body``, ``routes`` (a :class:`RouteTable`;
    default: the kernel's and the plugins'), and Twisted's, e.g. ``reactor``)."""
    return ApiSite(gateway, token, **kwargs)


def check_token(token: str | None) -> None:
    """Refuse a token that protects nothing (at start-up, for embedding applications)."""
    problem = token_problem(token)
    if problem is not None:
        raise ConfigError(problem, option="http.token")


def check_scrape_token(token: str | None, scrape_token: str | None) -> None:
    """Refuse a scrape token that is weak, the API token itself, or alone (with
    no API token every request reads everything: it would protect nothing)."""
    if scrape_token is None:
        return
    problem = token_problem(scrape_token)
    if problem is None and token is None:
        problem = "a scrape token needs http.token: without it the whole API is open"
    elif problem is None and token is not None and scrape_token == token:
        problem = "the scrape token must differ from http.token"
    if problem is not None:
        raise ConfigError(problem, option="http.scrape-token")


def check_exposure(bind: str, token: str | None) -> None:
    """Refuse an API reachable from other hosts without a token."""
    try:
        loopback = ipaddress.ip_address(bind).is_loopback
    except ValueError:
        loopback = bind == "localhost"
    if not loopback and not token:
        raise ConfigError(
            f"http.bind is {bind!r}, reachable from other hosts: set http.token too",
            option="http.token",
        )


class ApiService(service.Service):
    """The API as a child service of the gateway: it listens when the gateway's
    children start (after the store is open) and closes its port when they stop.

    An embedding application that adds the gateway to its own service tree gets
    the API with it; no port outlives the gateway.
    """

    name = "http"

    def __init__(
        self,
        gateway: Gateway,
        bind: str,
        port: int,
        token: str | None,
        scrape_token: str | None = None,
    ) -> None:
        check_token(token)
        check_exposure(bind, token)
        check_scrape_token(token, scrape_token)
        #: the routes, collected (and checked) before anything starts
        self.routes = route_table(gateway)
        self.gateway = gateway
        self.bind = bind
        self.port_number = port
        self.token = token
        self.scrape_token = scrape_token
        #: the listening port while the service runs
        self.port: Any = None

    def startService(self) -> None:
        reactor = self.gateway.kernel.reactor
        site = site_for(
            self.gateway, self.token, reactor=reactor, routes=self.routes,
            max_body=max_body(self.gateway), scrape_token=self.scrape_token,
        )  # fmt: skip
        self.port = reactor.listenTCP(self.port_number, site, interface=self.bind)
        super().startService()
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        log.info(
            "HTTP API listening on http://%s:%d (%s)", host, self.port.getHost().port,
            "token required" if self.token else "no token: loopback only",
        )  # fmt: skip

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def api_service(gateway: Gateway) -> ApiService | None:
    """The API of the ``http`` section (bind, port, token), or None for port 0.

    Refuses a weak token and a non-loopback bind without a token
    (ConfigError naming ``http.token``) when it is made, before anything starts.
    """
    config = gateway.kernel.config
    port = int(config.get("http", "port") or 0)
    if not port:
        return None
    secret = config.get("http", "token")
    token = secret.reveal() if secret is not None else None
    scrape = config.get("http", "scrape-token")
    scrape_token = scrape.reveal() if scrape is not None else None
    return ApiService(gateway, str(config.get("http", "bind")), port, token, scrape_token)

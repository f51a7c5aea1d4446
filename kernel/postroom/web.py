"""The HTTP API: health, metrics, sending and reading interactions (Twisted web, JSON).

========================  ==============================================================
``GET /health``           per mailbox: connected, last success, last error, counters;
                          200 when every mailbox is connected, else 503
``GET /metrics``          Prometheus text format
``POST /send``            queue an outbound e-mail (JSON body, see :func:`request_from_json`);
                          202 with the outbound interaction
``GET /interactions/ID``  an interaction (the ``postroom ingest --json`` shape) with its
                          hand-off and outbox state
========================  ==============================================================

Bound to ``http.bind`` (127.0.0.1 by default). When ``http.token`` is set every
request must carry ``Authorization: Bearer <token>``; binding to anything but
a loopback address without a token is refused at start-up.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import ensureDeferred
from twisted.web import resource, server

from postroom.cli.output import interaction_json
from postroom.errors import ConfigError
from postroom.model import OutboundRequest

if TYPE_CHECKING:
    from postroom.services.gateway import Gateway

log = logging.getLogger(__name__)

MAX_BODY = 25 * 1024 * 1024  # a send request with its HTML body


class HTTPError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def request_from_json(data: Any) -> OutboundRequest:
    """Build an OutboundRequest from the JSON body of ``POST /send``.

    Keys: ``to`` (required), ``cc``, ``bcc`` (lists of addresses), ``subject``,
    ``text``, ``html``, ``from``, ``headers`` (object), ``in_reply_to``
    (the interaction id being answered), ``attached_data`` (object),
    ``automatic`` (bool), ``options`` (object, for plugins: e.g. DSN requests).
    """
    if not isinstance(data, dict):
        raise HTTPError(400, "the body must be a JSON object")
    known = {
        "to",
        "cc",
        "bcc",
        "subject",
        "text",
        "html",
        "from",
        "headers",
        "in_reply_to",
        "attached_data",
        "automatic",
        "options",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise HTTPError(400, f"unknown key(s): {', '.join(unknown)}")

    def addresses(key: str) -> list[str]:
        value = data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise HTTPError(400, f"{key!r} must be a list of addresses")
        return value

    def mapping(key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise HTTPError(400, f"{key!r} must be an object")
        return value

    to = addresses("to")
    if not to:
        raise HTTPError(400, "'to' needs at least one address")
    return OutboundRequest(
        to=to,
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        subject=str(data.get("subject", "")),
        text=data.get("text"),
        html=data.get("html"),
        from_addr=data.get("from"),
        headers={str(k): str(v) for k, v in mapping("headers").items()},
        in_reply_to=data.get("in_reply_to"),
        attached_data=mapping("attached_data"),
        automatic=bool(data.get("automatic", False)),
        options=mapping("options"),
    )


class Api(resource.Resource):
    """One resource for the whole API: routing is a handful of paths."""

    isLeaf = True

    def __init__(self, gateway: Gateway, token: str | None) -> None:
        super().__init__()
        self.gateway = gateway
        self.token = token

    def render(self, request: Any) -> Any:
        d = ensureDeferred(self._handle(request))
        d.addErrback(lambda f: log.error("HTTP handler failed: %s", f.getTraceback()))
        return server.NOT_DONE_YET

    def _authorised(self, request: Any) -> bool:
        if not self.token:
            return True
        header = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given, self.token)

    async def _handle(self, request: Any) -> None:
        try:
            if not self._authorised(request):
                raise HTTPError(401, "a valid bearer token is required")
            code, body, content_type = await self._route(request)
        except HTTPError as exc:
            code, body, content_type = exc.code, _json({"error": str(exc)}), "application/json"
        except ValueError as exc:  # e.g. header injection in a send request
            code, body, content_type = 400, _json({"error": str(exc)}), "application/json"
        except Exception as exc:
            log.exception("HTTP %s %s failed", request.method, request.path)
            code, body = 500, _json({"error": f"{type(exc).__name__}: {exc}"})
            content_type = "application/json"
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setResponseCode(code)
        request.setHeader(b"content-type", content_type.encode())
        request.write(body)
        request.finish()

    async def _route(self, request: Any) -> tuple[int, bytes, str]:
        method = request.method.decode()
        parts = [p for p in request.path.decode("utf-8", "replace").split("/") if p]
        if parts == ["health"] and method == "GET":
            mailboxes = self.gateway.health()
            ok = all(m["connected"] and not m.get("stuck") for m in mailboxes.values())
            body = {"status": "ok" if ok else "degraded", "mailboxes": mailboxes}
            return (200 if ok else 503), _json(body), "application/json"
        if parts == ["metrics"] and method == "GET":
            return 200, self.gateway.kernel.metrics.render(), "text/plain; version=0.0.4"
        if parts == ["send"] and method == "POST":
            raw = request.content.read(MAX_BODY + 1)
            if len(raw) > MAX_BODY:
                raise HTTPError(413, "request body too large")
            try:
                data = json.loads(raw or b"null")
            except ValueError as exc:
                raise HTTPError(400, f"the body is not JSON: {exc}") from exc
            interaction = await self.gateway.send(request_from_json(data))
            return 202, _json(interaction_json(interaction)), "application/json"
        if len(parts) == 2 and parts[0] == "interactions" and method == "GET":
            return 200, _json(await self._interaction(parts[1])), "application/json"
        raise HTTPError(404 if method in ("GET", "POST") else 405, "no such endpoint")

    async def _interaction(self, interaction_id: str) -> dict[str, Any]:
        store = self.gateway.kernel.store
        # The outbox entry first: a send changes it and the interaction's status
        # together, so the status read after it is never older than its state.
        entry = await store.get_outbox(interaction_id)
        interaction = await store.get_interaction(interaction_id)
        if interaction is None:
            raise HTTPError(404, f"no interaction {interaction_id}")
        status = await store.handoff_status(interaction_id)
        if status is not None:
            interaction.handoff_state = status[0]
        data = interaction_json(interaction)
        if entry is not None:
            data["outbox"] = {
                "state": entry.state,
                "attempts": entry.attempts,
                "last_error": entry.last_error,
                "next_attempt_at": entry.next_attempt_at.isoformat()
                if entry.next_attempt_at
                else None,
            }
        return data


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, default=_default).encode()


def _default(value: Any) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value)
    return str(value)


def site_for(gateway: Gateway, token: str | None = None) -> server.Site:
    site = server.Site(Api(gateway, token))
    site.displayTracebacks = False
    return site


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


def start_web(gateway: Gateway, reactor: Any) -> Any:
    """Listen on the ``http`` section's bind address and port (port 0 disables)."""
    config = gateway.kernel.config
    port = int(config.get("http", "port") or 0)
    if not port:
        return None
    bind = str(config.get("http", "bind"))
    secret = config.get("http", "token")
    token = secret.reveal() if secret is not None else None
    check_exposure(bind, token)
    return reactor.listenTCP(port, site_for(gateway, token), interface=bind)

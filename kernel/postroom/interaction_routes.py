"""The HTTP API's interaction routes (:mod:`postroom.interaction_api` over HTTP).

==========================================  ============================================
``GET /interactions``                       a listing, newest first:
                                            ``{"interactions": [...], "next": cursor}``;
                                            filters ``status``, ``type``, ``subtype``,
                                            ``mailbox``, ``since``, ``until``,
                                            ``sender``, ``text``; ``limit`` (1-1000,
                                            default 100), ``after`` (a ``next``)
``GET /interactions/{id}``                  one interaction with its bodies, hand-off
                                            and outbox state
``GET /interactions/{id}/attachments/{n}``  file *n* (0 first) as a download
``GET /interactions/{id}/raw``              the message as received (``message/rfc822``);
                                            410 when retention or an erasure purged it
``POST /interactions/{id}/retry-handoff``   its refused and failed hand-off targets (or
                                            ``{"target": ...}``) retried at once
                                            (:mod:`postroom.handoffs`)
==========================================  ============================================

``{id}`` may be a unique prefix of at least 6 characters: 404 when nothing
matches, 409 ``{"error": ..., "candidates": [...]}`` when several do. A bad
filter is a 400 ``{"error": ..., "field": "since"}``.

Downloads are spooled to a temporary file first (the store checks the raw
message whole against its SHA-256 before any byte is sent) and then streamed
from it with back-pressure: never whole in memory.
"""

from __future__ import annotations

import io
from typing import IO, Any

import attrs

from postroom.handoffs import retry_handoff_route
from postroom.ids import AmbiguousId, UnknownId
from postroom.interaction_api import (
    LIST_OPTIONS,
    NoSuchFile,
    QueryError,
    RawGone,
    attachment_of,
    content_disposition,
    download_type,
    encode_cursor,
    list_query,
    resolve_id,
    show,
    spool_raw,
)
from postroom.routes import HTTPError, Response, Route, RouteRequest, json_bytes
from postroom.views import interaction_json, source_of

#: the most interactions one ``GET /interactions`` answers
MAX_HTTP_LIMIT = 1000


@attrs.frozen
class Download:
    """A body streamed from an open file (the API closes it when done)."""

    file: IO[bytes]
    size: int
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


def _refused(exc: Exception) -> HTTPError:
    if isinstance(exc, AmbiguousId):
        return JSONError(409, {"error": str(exc), "candidates": exc.candidates})
    if isinstance(exc, QueryError):
        return JSONError(400, {"error": str(exc), "field": exc.option})
    if isinstance(exc, RawGone):
        return HTTPError(410, str(exc))
    return HTTPError(404, str(exc))


class JSONError(HTTPError):
    """An error answer with more than ``{"error": ...}``."""

    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(code, str(body["error"]))
        self.body = body


def _one(query: Any, name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise JSONError(400, {"error": f"{name}: given {len(values)} times", "field": name})
    return str(values[0])


async def _list(request: RouteRequest) -> Response:
    kernel = request.gateway.kernel
    values = {name: _one(request.query, name) for name in LIST_OPTIONS}
    try:
        filters, limit, after = list_query(values, MAX_HTTP_LIMIT)
    except QueryError as exc:
        raise _refused(exc) from None
    page = await kernel.store.find_interactions(filters, limit, after)
    return Response.json(
        {
            "interactions": [
                interaction_json(i, source_of(i, kernel.config)) for i in page.interactions
            ],
            "next": encode_cursor(page.next) if page.next is not None else None,
        }
    )


async def _show(request: RouteRequest) -> Response:
    try:
        return Response.json(await show(request.gateway.kernel, request.url_vars["id"]))
    except (UnknownId, AmbiguousId) as exc:
        raise _refused(exc) from None


async def _attachment(request: RouteRequest) -> Download:
    try:
        listed, data = await attachment_of(
            request.gateway.kernel, request.url_vars["id"], request.url_vars["n"]
        )
    except (UnknownId, AmbiguousId, NoSuchFile) as exc:
        raise _refused(exc) from None
    return Download(
        io.BytesIO(data),
        len(data),
        download_type(listed),
        (("Content-Disposition", content_disposition(listed)),),
    )


async def _raw(request: RouteRequest) -> Download:
    kernel = request.gateway.kernel
    try:
        interaction_id, spool = await spool_raw(kernel, request.url_vars["id"])
    except (UnknownId, AmbiguousId, RawGone) as exc:
        raise _refused(exc) from None
    spool.seek(0, 2)
    size = spool.tell()
    spool.seek(0)
    name = f"{interaction_id}.eml"
    return Download(
        spool, size, "message/rfc822", (("Content-Disposition", f'attachment; filename="{name}"'),)
    )


async def _retry_handoff(request: RouteRequest) -> dict[str, Any]:
    try:
        interaction_id = await resolve_id(request.gateway.kernel, request.url_vars["id"])
    except (UnknownId, AmbiguousId) as exc:
        raise _refused(exc) from None
    return await retry_handoff_route(request, interaction_id)


#: the interaction routes, added to the kernel's (:data:`postroom.web.KERNEL_ROUTES`)
ROUTES = (
    Route("GET", "/interactions", _list),
    Route("GET", "/interactions/{id}", _show),
    Route("GET", "/interactions/{id}/attachments/{n}", _attachment),
    Route("GET", "/interactions/{id}/raw", _raw),
    Route("POST", "/interactions/{id}/retry-handoff", _retry_handoff),
)


def error_body(exc: HTTPError) -> bytes:
    """The JSON of an error answer."""
    body = exc.body if isinstance(exc, JSONError) else {"error": str(exc)}
    return json_bytes(body)

"""The outbox over HTTP (behind the API's token, as every route):

=============================  =========================================================
``GET /outbox``                entries in queueing order: ``?state=`` (queued, sending,
                               sent, failed, cancelled), ``?limit=`` (1-1000, 100),
                               ``?after=`` (the ``next`` of the page before);
                               ``{"entries": [...], "next": cursor or null}``
``GET /outbox/{id}``           one entry with its history, its interaction's status and
                               its recipients' delivery status
``POST /outbox/{id}/retry``    a queued or failed entry becomes due now (the gateway is
                               woken): 200 with the entry; 409 when it is being sent,
                               sent or cancelled
``POST /outbox/{id}/cancel``   a queued or failed entry is cancelled: 200; 409 likewise
=============================  =========================================================

``{id}`` is an entry's id or the start of exactly one (404: none, 409: several,
the candidates named).
"""

from __future__ import annotations

from typing import Any

from postroom import outboxops
from postroom.errors import OutboxConflict
from postroom.ids import AmbiguousId
from postroom.model import OutboxState
from postroom.outboxview import outbox_json
from postroom.routes import HTTPError, Route, RouteRequest
from postroom.store.sql.outboxops import MAX_PAGE


def _one(request: RouteRequest, name: str) -> str | None:
    values = request.query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise HTTPError(400, f"?{name}= is given {len(values)} times")
    return values[0]


async def _list(request: RouteRequest) -> dict[str, Any]:
    state = _one(request, "state")
    if state is not None and state not in {s.value for s in OutboxState}:
        raise HTTPError(400, f"state: one of {', '.join(s.value for s in OutboxState)}")
    limit_text = _one(request, "limit") or "100"
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise HTTPError(400, f"limit: a whole number from 1 to {MAX_PAGE}")
    after = _one(request, "after")
    if after is not None and not after.isdigit():
        raise HTTPError(400, "after: the 'next' of the page before")
    entries, cursor = await request.gateway.kernel.store.list_outbox_page(
        state, int(limit_text), after
    )
    return {"entries": [outbox_json(e) for e in entries], "next": cursor}


async def _guarded(coroutine: Any) -> Any:
    try:
        return await coroutine
    except outboxops.UnknownEntry as exc:
        raise HTTPError(404, str(exc)) from None
    except (AmbiguousId, OutboxConflict) as exc:
        raise HTTPError(409, str(exc)) from None


async def _show(request: RouteRequest) -> dict[str, Any]:
    store = request.gateway.kernel.store

    async def show() -> dict[str, Any]:
        entry_id = await outboxops.resolve_entry_id(store, request.url_vars["id"])
        return await outboxops.entry_details(store, entry_id)

    result: dict[str, Any] = await _guarded(show())
    return result


async def _retry(request: RouteRequest) -> dict[str, Any]:
    result: dict[str, Any] = await _guarded(
        outboxops.retry(request.gateway.kernel.store, request.url_vars["id"])
    )
    request.gateway.outbound.wake()  # due now: don't wait for the next poll
    return result


async def _cancel(request: RouteRequest) -> dict[str, Any]:
    result: dict[str, Any] = await _guarded(
        outboxops.cancel(request.gateway.kernel.store, request.url_vars["id"])
    )
    return result


OUTBOX_ROUTES = (
    Route("GET", "/outbox", _list),
    Route("GET", "/outbox/{id}", _show),
    Route("POST", "/outbox/{id}/retry", _retry),
    Route("POST", "/outbox/{id}/cancel", _cancel),
)

"""An interaction's hand-off as people see it and retry it: the same for the
CLI (``postroom interactions show``, ``retry-handoff``) and the HTTP API
(``GET /interactions/{id}``, ``POST /interactions/{id}/retry-handoff``)."""

from __future__ import annotations

from typing import Any

from postroom.routes import HTTPError, RouteRequest
from postroom.sendrequest import RequestError


async def handoff_detail(
    store: Any, interaction_id: str, status: tuple[str, int, str | None] | None = None
) -> dict[str, Any] | None:
    """``{"state", "attempts", "last_error", "targets": [...]}``: the overall
    hand-off and each target's (``target``, ``state``, ``attempts``,
    ``last_error``, ``updated_at``); None when the interaction has no hand-off."""
    if status is None:
        status = await store.handoff_status(interaction_id)
        if status is None:
            return None
    targets = await store.handoff_targets(interaction_id)
    state, attempts, last_error = status
    return {
        "state": state,
        "attempts": attempts,
        "last_error": last_error,
        "targets": [
            {
                "target": t.target,
                "state": t.state,
                "attempts": t.attempts,
                "last_error": t.last_error,
                "updated_at": t.updated_at.isoformat() if t.updated_at else None,
            }
            for t in targets
        ],
    }


async def retry_handoff(store: Any, interaction_id: str, target: str | None) -> list[str]:
    """Put the refused and failed targets (or *target*) back to pending; the
    targets put back. KeyError: no such interaction; ValueError: not a target
    of it, or done already."""
    result: list[str] = await store.retry_handoff(interaction_id, target)
    return result


async def retry_handoff_route(request: RouteRequest, interaction_id: str) -> dict[str, Any]:
    """``POST /interactions/{id}/retry-handoff`` (optional body ``{"target": name}``)
    for the interaction *interaction_id* (the route resolved the id's prefix):
    the targets put back to pending, whose retry starts at once, and the hand-off."""
    target = None
    if request.body.strip():
        body = request.json()
        if not isinstance(body, dict) or set(body) - {"target"}:
            raise RequestError('the body is {"target": NAME} or nothing', "target")
        target = body.get("target")
        if target is not None and not isinstance(target, str):
            raise RequestError("target is a plugin name (a string)", "target")
    gateway = request.gateway
    store = gateway.kernel.store
    try:
        again = await retry_handoff(store, interaction_id, target)
    except KeyError:
        raise HTTPError(404, f"no interaction {interaction_id} with a hand-off") from None
    except ValueError as exc:
        raise HTTPError(409, str(exc)) from None
    started = await gateway.handoff.retry_now(interaction_id)
    return {
        "id": interaction_id,
        "retried": again,
        "started": started,
        "handoff": await handoff_detail(store, interaction_id),
    }

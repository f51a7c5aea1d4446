"""Outbox operations, the same for ``postroom outbox`` and ``/outbox``: find an
entry by its id or an unambiguous prefix, show it, retry it, cancel it.

The store makes each change one conditional update
(:mod:`postroom.store.sql.outboxops`); a running gateway's outbox worker polls
the store for due entries, so a retry made by another process is sent at its
next poll (``poll_interval``, a second), one made over HTTP at once.
"""

from __future__ import annotations

from typing import Any

from postroom.errors import PostroomError
from postroom.ids import UnknownId, resolve_id
from postroom.outboxview import delivery_json, outbox_json


class UnknownEntry(PostroomError):
    """No outbox entry has this id (or starts with this prefix)."""


async def resolve_entry_id(store: Any, text: str) -> str:
    """The id of the entry *text* names: an interaction id or a unique prefix
    (:func:`postroom.ids.resolve_id`; AmbiguousId lists the candidates) of an
    outbound interaction that has an outbox entry."""
    try:
        entry_id = await resolve_id(store, text)
    except UnknownId:
        raise UnknownEntry(f"no outbox entry {text.strip()!r}") from None
    if await store.get_outbox(entry_id) is None:
        raise UnknownEntry(f"interaction {entry_id} has no outbox entry (not outbound mail)")
    return entry_id


async def entry_details(store: Any, entry_id: str) -> dict[str, Any]:
    """The entry, its history, and its interaction's status and recipients'
    delivery status (what ``outbox show`` and ``GET /outbox/{id}`` give)."""
    entry = await store.get_outbox(entry_id)
    if entry is None:
        raise UnknownEntry(f"no outbox entry {entry_id!r}")
    data = outbox_json(entry, await store.outbox_history(entry_id))
    interaction = await store.get_interaction(entry_id)
    data["status"] = interaction.status if interaction is not None else None
    data["delivery"] = delivery_json(interaction.delivery) if interaction is not None else []
    return data


async def retry(store: Any, text: str) -> dict[str, Any]:
    """Make the entry due now (see ``IStore.retry_outbound``); its JSON."""
    entry_id = await resolve_entry_id(store, text)
    try:
        entry = await store.retry_outbound(entry_id)
    except KeyError:
        raise UnknownEntry(f"no outbox entry {entry_id!r}") from None
    return outbox_json(entry)


async def cancel(store: Any, text: str) -> dict[str, Any]:
    """Cancel the entry (see ``IStore.cancel_outbound``); its JSON."""
    entry_id = await resolve_entry_id(store, text)
    try:
        entry = await store.cancel_outbound(entry_id)
    except KeyError:
        raise UnknownEntry(f"no outbox entry {entry_id!r}") from None
    return outbox_json(entry)

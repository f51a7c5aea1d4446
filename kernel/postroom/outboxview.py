"""The JSON shape of an outbox entry and its history, and of a recipient's delivery
status: one for the CLI (``postroom outbox``, ``interactions show``) and the HTTP
API (``/outbox``, ``GET /interactions/{id}``'s ``outbox``).

Documented in ``kernel/postroom/schemas/interaction.json`` (``outbox``,
``delivery``) and docs/outbound.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from postroom.model import OutboxAttempt, OutboxEntry, RecipientDelivery


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def outbox_json(
    entry: OutboxEntry, history: Sequence[OutboxAttempt] | None = None
) -> dict[str, Any]:
    """An outbox entry; with its *history* when given."""
    data: dict[str, Any] = {
        "id": entry.id,
        "message_id": entry.message_id,
        "state": entry.state,
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "next_attempt_at": _iso(entry.next_attempt_at),
        "created_at": entry.created_at.isoformat(),
        "updated_at": _iso(entry.updated_at),
        "mailbox": entry.request.mailbox,
        "subject": entry.request.subject,
        "to": list(entry.request.to),
        "cc": list(entry.request.cc),
        "bcc": list(entry.request.bcc),
    }
    if history is not None:
        data["history"] = [attempt_json(line) for line in history]
    return data


def attempt_json(line: OutboxAttempt) -> dict[str, Any]:
    return {
        "at": line.at.isoformat(),
        "result": line.result,
        "error": line.error,
        "reply": line.reply,
        "refused": dict(line.refused),
        "counted": line.counted,
    }


def delivery_json(rows: Sequence[RecipientDelivery]) -> list[dict[str, Any]]:
    return [
        {
            "recipient": row.recipient,
            "status": row.status,
            "time": row.time.isoformat(),
            "report_id": row.report_id,
            "action": row.action,
            "diagnostic": row.diagnostic,
        }
        for row in rows
    ]


async def with_outbox(store: Any, data: dict[str, Any]) -> dict[str, Any]:
    """*data* (an interaction's JSON) with ``outbox``, its entry and history,
    when the interaction has one."""
    entry = await store.get_outbox(data["id"])
    if entry is not None:
        data["outbox"] = outbox_json(entry, await store.outbox_history(entry.id))
    return data

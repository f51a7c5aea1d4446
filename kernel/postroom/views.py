"""The JSON shape of an interaction: one for the CLI and the HTTP API.

It is documented as a JSON Schema in ``kernel/postroom/schemas/interaction.json``
(tests validate against it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from postroom.model import Interaction, InteractionType
from postroom.outboxview import delivery_json

if TYPE_CHECKING:
    from postroom.config.site import SiteConfig


def interaction_json(interaction: Interaction, source: str | None = None) -> dict[str, Any]:
    return {
        "source": source,
        "id": interaction.id,
        "type": interaction.type,
        "subtype": interaction.subtype,
        "status": interaction.status,
        "parent_id": interaction.parent_id,
        "duplicate_of": interaction.duplicate_of,
        "mailbox": interaction.mailbox,
        "message_id": interaction.message_id,
        "subject": interaction.subject,
        "from": interaction.from_addr,
        "to": list(interaction.to),
        "cc": list(interaction.cc),
        "reply_to": list(interaction.reply_to),
        "references": list(interaction.references),
        "date": interaction.date.isoformat() if interaction.date is not None else None,
        "attachments": [
            {
                "filename": a.filename,
                "safe_filename": a.safe_filename,
                "content_type": a.content_type,
                "size": a.size,
            }
            for a in interaction.attachments
        ],
        "attached_data": dict(interaction.attached_data),
        # outbound interactions are not handed to routing: they have no hand-off
        "handoff_state": interaction.handoff_state
        if interaction.type == InteractionType.INBOUND.value
        else None,
        "created_at": interaction.created_at.isoformat(),
        # outbound: where each recipient stands (docs/outbound.md, delivery status)
        "delivery": delivery_json(interaction.delivery)
        if interaction.type == InteractionType.OUTBOUND.value
        else None,
    }


def api_base_url(config: SiteConfig) -> str | None:
    """Where other systems reach this gateway's HTTP API (``http.public-url``, or
    ``http://<bind>:<port>`` for a single bind address), or None."""
    public = config.get("http", "public-url")
    if public:
        return str(public).rstrip("/")
    port = int(config.get("http", "port"))
    bind = str(config.get("http", "bind"))
    if port == 0 or bind in ("", "0.0.0.0", "::"):
        return None
    host = f"[{bind}]" if ":" in bind else bind
    return f"http://{host}:{port}"


def handoff_json(interaction: Interaction, config: SiteConfig) -> dict[str, Any]:
    """What a hand-off target sends on: the interaction's JSON and ``raw_url``,
    the raw message by reference (``GET /interactions/{id}/raw``, behind the
    API's token), so a large message never travels through the broker. The
    hand-off's own state is left out: it is not news to the receiver, and a
    retried message must carry the same body as the first attempt."""
    data = interaction_json(interaction)
    data.pop("handoff_state", None)
    base = api_base_url(config)
    data["raw_url"] = f"{base}/interactions/{interaction.id}/raw" if base else None
    return data

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


def _person(address: str, names: dict[str, str]) -> dict[str, Any]:
    return {"address": address, "name": names.get(address)}


def body_json(interaction: Interaction) -> dict[str, Any]:
    """``text`` (the mail's text part, else a rendering of its HTML:
    ``text_from_html``) and ``html`` sanitised for display
    (:mod:`postroom.display`); the original is in the raw message."""
    from postroom.display import html_to_text, sanitise_html

    text, html = interaction.text, interaction.html
    from_html = not text and bool(html)
    if from_html:
        assert html is not None
        text = html_to_text(html)
    return {
        "text": text,
        "text_from_html": from_html,
        "html": sanitise_html(html) if html else None,
    }


def interaction_json(
    interaction: Interaction, source: str | None = None, bodies: bool = False
) -> dict[str, Any]:
    """The interaction's JSON; with *bodies*, its text and sanitised HTML too
    (a listing leaves them out)."""
    names = interaction.names
    data = {
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
        "addresses": {
            "from": _person(interaction.from_addr, names) if interaction.from_addr else None,
            "to": [_person(a, names) for a in interaction.to],
            "cc": [_person(a, names) for a in interaction.cc],
            "reply_to": [_person(a, names) for a in interaction.reply_to],
        },
        "attachments": [
            {
                "index": n,
                "filename": a.filename,
                "safe_filename": a.safe_filename,
                "content_type": a.content_type,
                "size": a.size,
                # what an HTML body's cid: image names (<...> included)
                "content_id": a.content_id,
            }
            for n, a in enumerate(interaction.attachments)
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
    if bodies:
        data.update(body_json(interaction))
    return data


def source_of(interaction: Interaction, config: SiteConfig) -> str | None:
    """Where a stored interaction came from: ``<driver>:<mailbox>`` for inbound
    mail (``imap:support``), ``outbox`` for mail the gateway sent; None when
    its mailbox is no longer in the site."""
    if interaction.type == "Outbound":
        return "outbox"
    for mailbox in config.mailboxes:
        if mailbox.name == interaction.mailbox:
            return f"{mailbox.type}:{mailbox.name}"
    return None


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
    data = interaction_json(interaction, source_of(interaction, config), bodies=True)
    data.pop("handoff_state", None)
    base = api_base_url(config)
    data["raw_url"] = f"{base}/interactions/{interaction.id}/raw" if base else None
    return data

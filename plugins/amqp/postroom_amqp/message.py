"""One interaction as one AMQP message: the hand-off JSON and its properties.

The body is ``postroom.api.handoff_json`` (the interaction's JSON with
``raw_url``, the raw message by reference), UTF-8 JSON. The properties let a
consumer route and deduplicate without parsing it: ``message_id`` is the
interaction id (the same on every retry), ``type`` says what the body is,
``headers`` carry the interaction's type and subtype for a headers exchange.
"""

from __future__ import annotations

import json
from typing import Any

import pika

from postroom.api import Interaction, handoff_json

CONTENT_TYPE = "application/json"
MESSAGE_TYPE = "postroom.interaction"
APP_ID = "postroom"
PERSISTENT = 2  # delivery_mode: written to disk by a durable queue


def body_of(interaction: Interaction, config: Any) -> bytes:
    data = handoff_json(interaction, config)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def properties_of(interaction: Interaction, now: float) -> pika.BasicProperties:
    """*now*: the publish time, seconds since the epoch (the kernel's clock)."""
    return pika.BasicProperties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=interaction.id,
        type=MESSAGE_TYPE,
        app_id=APP_ID,
        timestamp=int(now),
        headers={
            "postroom-type": interaction.type,
            "postroom-subtype": interaction.subtype,
        },
    )

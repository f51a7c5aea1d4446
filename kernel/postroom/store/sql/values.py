"""Values as the SQL store keeps them: JSON text for lists, mappings and requests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from postroom.model import OutboundAttachment, OutboundRequest


def to_json(value: Any) -> str:
    """Compact JSON, non-ASCII kept as is; NaN refused (no database reads it back)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the keys *cls* knows: rows written by a newer version still load."""
    names = {field.name for field in attrs.fields(cls)}
    return {key: value for key, value in data.items() if key in names}


def request_to_json(request: OutboundRequest) -> str:
    """The request as JSON, its files without their bytes (the outbox keeps those apart)."""
    return to_json(attrs.asdict(request, filter=lambda field, _value: field.name != "data"))


def request_from_json(text: str) -> OutboundRequest:
    fields = known_fields(OutboundRequest, json.loads(text))
    fields["attachments"] = [
        OutboundAttachment(**known_fields(OutboundAttachment, item))
        for item in fields.get("attachments", [])
    ]
    return OutboundRequest(**fields)

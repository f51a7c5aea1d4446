"""Finding the report parts of a parsed message: the report, its
delivery-status body, and the returned (original) message.

Works on :class:`postroom.model.ParsedMessage` parts in pre-order: a part's
children follow it with ``depth + 1``; an attached ``message/rfc822`` part is
followed by the attached message's root, whose headers are that message's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.parser import HeaderParser
from email.policy import compat32

from postroom.api import ParsedMessage, Part, parse_message_ids
from postroom_dsn.fields import looks_like_delivery_status

DELIVERY_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
#: parts holding a whole returned message
MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
#: parts holding only the returned message's header block (the product's
#: documentation names the first, real MTAs send the second; RFC 6522, RFC 6533)
HEADER_TYPES = frozenset(
    {"message/rfc822-headers", "text/rfc822-headers", "message/global-headers"}
)
RETURNED_TYPES = MESSAGE_TYPES | HEADER_TYPES

_FIRST_BRACKETED = re.compile(r"<[^<>]*+>")


def message_id_of(value: str) -> list[str]:
    """The id a Message-ID field names: its first ``<id>``, else its first
    token (a list of one, or empty).

    A Message-ID field names one message; only that piece is parsed, so a
    field holding thousands of ids costs no more than its length to scan (and
    gives no thousand store look-ups).
    """
    bracketed = _FIRST_BRACKETED.search(value)
    return parse_message_ids(bracketed.group(0) if bracketed else value, single=True)[:1]


def children(message: ParsedMessage, index: int) -> Iterator[tuple[int, Part]]:
    """The direct children of ``message.parts[index]``, with their indexes."""
    parent = message.parts[index]
    for position in range(index + 1, len(message.parts)):
        part = message.parts[position]
        if part.depth <= parent.depth:
            return
        if part.depth == parent.depth + 1:
            yield position, part


def find_report(message: ParsedMessage) -> tuple[int, Part] | None:
    """The outermost ``multipart/report`` (a bounce of a bounce counts by the
    outer one; a bounce forwarded inside ``message/rfc822`` is found one level
    deeper)."""
    for index, part in enumerate(message.parts):
        if part.content_type == "multipart/report":
            return index, part
    return None


def report_type(part: Part) -> str:
    return (part.param("report-type") or "").strip().lower()


def delivery_status_text(message: ParsedMessage, report: int | None) -> str | None:
    """The delivery-status body: the report's ``message/delivery-status`` child
    wherever it stands, else a child mislabelled ``text/plain`` that reads as
    one, else (no report) the first delivery-status part anywhere."""
    if report is not None:
        kids = [part for _, part in children(message, report)]
        for part in kids:
            if part.content_type in DELIVERY_STATUS_TYPES and part.text:
                return part.text
        for part in kids:
            if (
                part.content_type == "text/plain"
                and part.text
                and looks_like_delivery_status(part.text)
            ):
                return part.text
    for part in message.parts:
        if part.content_type in DELIVERY_STATUS_TYPES and part.text:
            return part.text
    return None


def _header_block_ids(text: str) -> list[str]:
    headers = HeaderParser(policy=compat32).parsestr(text.lstrip("\r\n"), headersonly=True)
    value = headers.get("Message-ID")
    return message_id_of(str(value)) if value is not None else []


def returned_message_ids(message: ParsedMessage) -> list[str]:
    """Message-IDs of the returned messages, outermost first, each once."""
    found: dict[str, None] = {}
    parts = message.parts
    for index, part in enumerate(parts):
        ids: list[str] = []
        if part.content_type in MESSAGE_TYPES:
            inner = parts[index + 1] if index + 1 < len(parts) else None
            if inner is not None and inner.depth == part.depth + 1:
                value = inner.header("Message-ID")
                ids = message_id_of(value) if value else []
        elif part.content_type in HEADER_TYPES and part.text:
            ids = _header_block_ids(part.text)
        found.update(dict.fromkeys(ids))
    return list(found)


def has_part(message: ParsedMessage, types: frozenset[str]) -> bool:
    return any(part.content_type in types for part in message.parts)

"""Finding and reading a message disposition notification (RFC 8098, RFC 3798).

Pure functions over a :class:`~postroom.api.ParsedMessage`, run by
``postroom_analyze`` in the worker process that parsed the message
(:mod:`postroom_mdn.analysis`); the gateway's hooks only read what they found.
Each part is looked at a bounded number of times, so the time grows linearly
with the number of parts and the size of their text.

Real receipts are not all shaped like the RFC's example, so the reader is
lenient where clients are sloppy and strict where a mistake would misfile
mail:

* the report is the first ``multipart/report`` of the message itself (never
  one inside a returned ``message/rfc822``); its ``report-type`` decides, in
  any case and quoted or not. Another report type (``delivery-status``,
  ``feedback-report``) is not an MDN. A report without ``report-type`` is one
  when it holds a disposition part, and so is a message without any report
  that holds a ``message/disposition-notification`` part (wrong outer type);
* the disposition part may be anywhere in the report and may be sent as
  ``text/plain``: the first part typed ``message/(global-)disposition-notification``
  wins, else the first textual part whose fields include ``Disposition``.
"""

from __future__ import annotations

import re

import attrs

from postroom.api import (
    ParsedMessage,
    Part,
    parse_addresses,
    parse_message_ids,
    strip_comments,
)
from postroom_mdn.fields import first, parse_fields

REPORT = "multipart/report"
MDN_REPORT_TYPE = "disposition-notification"
DISPOSITION_TYPES = frozenset(
    {"message/disposition-notification", "message/global-disposition-notification"}
)
ENCAPSULATING_TYPES = frozenset({"message/rfc822", "message/global"})
#: parts that hold the returned message's header block as text
HEADER_TYPES = frozenset(
    {"text/rfc822-headers", "message/rfc822-headers", "message/global-headers"}
)

#: RFC 8098 / RFC 3798 field names, as the RFC spells them: raw keys use these
#: spellings whatever case the client wrote, so a routing strategy can rely on
#: ``_MDNRawInfo.Original-Message-ID``; other (extension) fields keep theirs.
KNOWN_FIELDS = {
    name.lower(): name
    for name in (
        "Reporting-UA",
        "MDN-Gateway",
        "Original-Recipient",
        "Final-Recipient",
        "Original-Message-ID",
        "Disposition",
        "Failure",
        "Error",
        "Warning",
    )
}

ACTION_MODES = {"manual": "manual-action", "automatic": "automatic-action"}
SENDING_MODES = {"manual": "MDN-sent-manually", "automatic": "MDN-sent-automatically"}
#: RFC 8098 types, and RFC 3798 / RFC 2298 ones older clients still send
DISPOSITION_TYPE_NAMES = ("displayed", "deleted", "dispatched", "processed", "denied", "failed")

_ACTION = re.compile(r"\b(manual|automatic)[ \t]*-[ \t]*action\b", re.IGNORECASE)
_SENDING = re.compile(r"\bmdn[ \t]*-[ \t]*sent[ \t]*-[ \t]*(manual|automatic)", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ANY_TYPE = re.compile(r"\b(" + "|".join(DISPOSITION_TYPE_NAMES) + r")\b", re.IGNORECASE)
_FIRST_BRACKETED = re.compile(r"<[^<>]*+>")

#: several fields of one name (``Error``, ``Warning``) are kept in one raw value
REPEAT_SEPARATOR = "\n"


@attrs.frozen
class Disposition:
    """The ``Disposition`` field, canonical spellings; None where it says nothing."""

    action_mode: str | None = None
    sending_mode: str | None = None
    type: str | None = None
    modifiers: tuple[str, ...] = ()


@attrs.frozen
class MDN:
    """What a receipt says. ``fields`` are ``(canonical name, raw value)`` in order."""

    fields: tuple[tuple[str, str], ...]
    disposition: Disposition
    recipient: str | None
    original_message_id: str | None


# ------------------------------------------------------------------ fields


def parse_disposition(value: str) -> Disposition:
    """Read ``mode/sending-mode; type/modifier, ...`` as clients write it.

    Comments, case, blanks and a missing ``;`` are tolerated; unrecognised
    modes keep the client's token, so nothing the client said is lost.
    """
    text = " ".join(strip_comments(value).split())
    mode_text, semicolon, rest = text.partition(";")
    if not semicolon:
        # no separator: look for the parts where they are
        mode_text, rest = text, ""
    action = _ACTION.search(mode_text)
    sending = _SENDING.search(mode_text)
    action_mode = ACTION_MODES[action.group(1).lower()] if action else None
    sending_mode = SENDING_MODES[sending.group(1).lower()] if sending else None
    if action is None or sending is None:
        written = [p.strip() for p in mode_text.split("/", 1)] if semicolon else []
        if action is None and written and written[0]:
            action_mode = written[0]
        if sending is None and len(written) > 1 and written[1]:
            sending_mode = written[1]
    dtype: str | None = None
    modifiers: tuple[str, ...] = ()
    if semicolon:
        type_text, slash, modifier_text = rest.partition("/")
        token = _TOKEN.search(type_text)
        dtype = token.group(0).lower() if token else None
        if slash:
            modifiers = tuple(m.strip().lower() for m in modifier_text.split(",") if m.strip())
    else:
        found = _ANY_TYPE.search(text)
        dtype = found.group(1).lower() if found else None
    return Disposition(action_mode, sending_mode, dtype, modifiers)


def first_message_id(value: str) -> str | None:
    """The id a Message-ID field names: its first ``<id>``, else its first token.

    Only that piece is parsed: a field of thousands of ids names one message,
    and parsing them all would cost more than the field's length.
    """
    bracketed = _FIRST_BRACKETED.search(value)
    ids = parse_message_ids(bracketed.group(0) if bracketed else value, single=True)
    return ids[0] if ids else None


def recipient_address(value: str) -> str | None:
    """The bare address of ``rfc822; someone@example.com`` (any address type)."""
    text = strip_comments(value).strip()
    kind, semicolon, rest = text.partition(";")
    if semicolon and "@" not in kind:
        text = rest.strip()
    found = parse_addresses(text)
    if found:
        return found[0].addr
    return text or None


def canonical_fields(fields: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """RFC spellings for known names; repeated names joined (first position kept)."""
    merged: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for name, value in fields:
        key = name.lower()
        names.setdefault(key, KNOWN_FIELDS.get(key, name))
        merged.setdefault(key, []).append(value)
    return tuple((names[key], REPEAT_SEPARATOR.join(values)) for key, values in merged.items())


# -------------------------------------------------------------- the tree


def _subtree_end(parts: list[Part], index: int) -> int:
    """The index after the last part under ``parts[index]`` (pre-order: the
    following deeper ones).

    Depth, not the IMAP path, tells: an attached message's root part has the
    same path as the ``message/rfc822`` part that holds it.
    """
    depth = parts[index].depth
    end = index + 1
    while end < len(parts) and parts[end].depth > depth:
        end += 1
    return end


def _own_parts(parts: list[Part]) -> list[int]:
    """Indexes of the parts of the message itself, not of a message it returns
    or forwards (whose parts are skipped, each once)."""
    own: list[int] = []
    index = 0
    while index < len(parts):
        own.append(index)
        if parts[index].content_type in ENCAPSULATING_TYPES:
            index = _subtree_end(parts, index)
        else:
            index += 1
    return own


def _report_type(part: Part) -> str:
    return (part.param("report-type") or "").strip().strip('"').strip().lower()


def _disposition_fields(candidates: list[Part]) -> list[tuple[str, str]] | None:
    for part in candidates:
        if part.content_type in DISPOSITION_TYPES:
            return parse_fields(part.text or "")
    for part in candidates:
        if part.text and part.content_type.startswith("text/"):
            fields = parse_fields(part.text)
            if first(fields, "Disposition") is not None:
                return fields
    return None


def _returned_message_id(scope: list[int], every: list[Part]) -> str | None:
    """The Message-ID of the returned message or header block, if any."""
    for index in scope:
        part = every[index]
        value = None
        if part.content_type in ENCAPSULATING_TYPES:
            # the returned message's own headers are on its root part, next in pre-order
            below = index + 1 < len(every) and every[index + 1].depth > part.depth
            value = every[index + 1].header("Message-ID") if below else None
        elif part.content_type in HEADER_TYPES and part.text:
            value = first(parse_fields(part.text), "Message-ID")
        found = first_message_id(value) if value else None
        if found:
            return found
    return None


def read_mdn(message: ParsedMessage) -> MDN | None:
    """The receipt *message* is, or None when it is not one."""
    if message.is_wrapped:
        return None
    parts = message.parts
    own = _own_parts(parts)
    report = next((i for i in own if parts[i].content_type == REPORT), None)
    if report is not None:
        end = _subtree_end(parts, report)
        # the report's own parts: those of the message itself below it
        scope = [i for i in own if report < i < end]
        kind = _report_type(parts[report])
        if kind and kind != MDN_REPORT_TYPE:
            return None
        raw = _disposition_fields([parts[i] for i in scope])
        if raw is None and not kind:
            return None
    else:
        scope = own
        if not any(parts[i].content_type in DISPOSITION_TYPES for i in own):
            return None
        raw = _disposition_fields([parts[i] for i in scope])
    fields = canonical_fields(raw or [])
    values = {name.lower(): value for name, value in fields}
    disposition = parse_disposition(values.get("disposition", ""))
    recipient = None
    for name in ("final-recipient", "original-recipient"):
        if values.get(name):
            recipient = recipient_address(values[name])
            if recipient:
                break
    if recipient is None:
        # the reader of the original sends the receipt: the best guess left
        recipient = message.from_addr
    original = None
    if values.get("original-message-id"):
        original = first_message_id(values["original-message-id"])
    if original is None:
        original = _returned_message_id(scope, message.parts)
    return MDN(fields, disposition, recipient, original)


# ------------------------------------------------------------ attached data

INFO = "_MDNInfo."
RAW_INFO = "_MDNRawInfo."


def attached_data(mdn: MDN) -> dict[str, str]:
    """The specification's keys (section 2): ``_MDNInfo.*`` then ``_MDNRawInfo.*``."""
    data: dict[str, str] = {}
    info = {
        "ActionMode": mdn.disposition.action_mode,
        "SendingMode": mdn.disposition.sending_mode,
        "DispositionType": mdn.disposition.type,
        "Recipient": mdn.recipient,
    }
    for key, value in info.items():
        if value:
            data[INFO + key] = value
    for name, value in mdn.fields:
        data[RAW_INFO + name] = value
    return data

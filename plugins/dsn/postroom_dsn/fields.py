"""A tolerant reader of RFC 3464 delivery-status fields.

A delivery-status body is a per-message block of ``Name: value`` fields, then
one block per recipient, separated by blank lines. Real MTAs bend every rule,
so the reader:

* unfolds continuation lines (RFC 5322: the line break goes, the blanks stay)
  and keeps values verbatim otherwise (comments, ``rfc822;`` prefixes, case);
* starts a new block without a blank line when a field repeats in the current
  block, or when a per-recipient field follows per-message fields (MTAs that
  forget the blank line between groups);
* skips lines that are not fields (prose in a ``text/plain`` "report");
* decodes groups a sender base64- or quoted-printable-encoded *inside* the
  part, announced by a ``Content-Transfer-Encoding`` field in the block
  before them (seen from Proofpoint relays);
* spells well-known field names canonically (``Content-length`` is reported
  as ``Content-Length``) and keeps unknown ones as written.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re

import attrs

Field = tuple[str, str]

#: canonical spellings (RFC 3464, RFC 6533, common vendor and MIME fields)
_CANONICAL = {
    name.lower(): name
    for name in (
        "Original-Envelope-Id",
        "Reporting-MTA",
        "DSN-Gateway",
        "Received-From-MTA",
        "Arrival-Date",
        "Original-Recipient",
        "Final-Recipient",
        "Action",
        "Status",
        "Remote-MTA",
        "Diagnostic-Code",
        "Last-Attempt-Date",
        "Final-Log-ID",
        "Will-Retry-Until",
        "X-Postfix-Queue-ID",
        "X-Postfix-Sender",
        "X-Actual-Recipient",
        "X-Original-Message-ID",
        "X-Display-Name",
        "X-Supplementary-Info",
        "Content-Type",
        "Content-Length",
        "Content-Transfer-Encoding",
    )
}

#: fields that only a per-recipient group has
RECIPIENT_FIELDS = frozenset(
    {
        "original-recipient",
        "final-recipient",
        "x-actual-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "final-log-id",
        "will-retry-until",
    }
)
#: fields that say "this group is about one recipient"
_RECIPIENT_MARKERS = frozenset({"original-recipient", "final-recipient", "action", "status"})

_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*)[ \t]*:(.*)")
_MAX_DEPTH = 3


def canonical_name(name: str) -> str:
    return _CANONICAL.get(name.lower(), name)


@attrs.frozen
class DeliveryStatus:
    """The fields of one delivery-status body, verbatim (unfolded)."""

    per_message: tuple[Field, ...] = ()
    recipients: tuple[tuple[Field, ...], ...] = ()

    def message_field(self, name: str) -> str | None:
        return field(self.per_message, name)


def field(fields: tuple[Field, ...] | list[Field], name: str) -> str | None:
    """The first value of *name* among *fields* (case-insensitive), or None."""
    name = name.lower()
    for key, value in fields:
        if key.lower() == name:
            return value
    return None


def _names(block: list[Field]) -> set[str]:
    return {key.lower() for key, _ in block}


def _is_per_message(block: list[Field]) -> bool:
    return bool(block) and not (_names(block) & _RECIPIENT_MARKERS)


def _decode(lines: list[str], encoding: str) -> str | None:
    data = "\n".join(lines).strip()
    try:
        if encoding == "base64":
            raw = base64.b64decode(re.sub(r"\s+", "", data), validate=False)
        else:
            raw = quopri.decodestring(data.encode("ascii", "replace"))
    except (binascii.Error, ValueError):
        return None
    return raw.decode("utf-8", "replace")


def _blocks(text: str, depth: int = 0) -> list[list[Field]]:
    blocks: list[list[Field]] = []
    block: list[Field] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # the last field can still take continuation lines
    open_field = False
    #: a Content-Transfer-Encoding field announces encoded groups after its block
    encoding = ""
    for index, line in enumerate(lines):
        if not line.strip():
            if block:
                blocks.append(block)
                block = []
            open_field = False
            continue
        if line[0] in " \t":
            if open_field and block:
                name, value = block[-1]
                block[-1] = (name, value + line.rstrip())
            continue
        match = _FIELD.fullmatch(line)
        if match is None:
            if encoding in ("base64", "quoted-printable") and depth < _MAX_DEPTH:
                decoded = _decode(lines[index:], encoding)
                if decoded is not None:
                    if block:
                        blocks.append(block)
                    return blocks + _blocks(decoded, depth + 1)
            open_field = False
            continue
        name = canonical_name(match.group(1))
        value = match.group(2).strip(" \t")
        lower = name.lower()
        if block and (
            lower in _names(block) or (lower in RECIPIENT_FIELDS and _is_per_message(block))
        ):
            blocks.append(block)
            block = []
        block.append((name, value))
        open_field = True
        if lower == "content-transfer-encoding":
            encoding = value.strip().lower()
    if block:
        blocks.append(block)
    return blocks


def parse_delivery_status(text: str) -> DeliveryStatus:
    """Split a delivery-status body into per-message and per-recipient fields.

    The first block is the per-message one unless it already names a
    recipient (some MTAs leave the per-message block out).
    """
    blocks = _blocks(text)
    per_message: list[Field] = []
    if blocks and _is_per_message(blocks[0]):
        per_message = blocks.pop(0)
    recipients = [tuple(b) for b in blocks if _names(b) & _RECIPIENT_MARKERS]
    return DeliveryStatus(per_message=tuple(per_message), recipients=tuple(recipients))


def looks_like_delivery_status(text: str) -> bool:
    """Whether *text* (e.g. a mislabelled ``text/plain`` part) is a delivery-status body."""
    status = parse_delivery_status(text)
    return any(
        field(r, "action") is not None or field(r, "final-recipient") is not None
        for r in status.recipients
    ) and any(field(r, "status") is not None for r in status.recipients)

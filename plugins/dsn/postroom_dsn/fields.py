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
  as ``Content-Length``) and keeps unknown ones as written, 8-bit letters
  included (``Rem\xf6te-MTA``): a mangled name costs one field, not the report.

It reads each line once and keeps what it needs about the open block in a
set, so its time grows linearly with the body (a report may hold 100,000
groups, or one field folded over 100,000 lines).
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

#: a field name: ASCII letters, digits and ``_.-``, and any non-ASCII character
#: but a blank (an 8-bit byte a relay let through); no backtracking: the name,
#: the blanks and the colon cannot overlap
_NAME_START = r"(?:[A-Za-z0-9]|[^\x00-\x7f\s])"
_NAME_REST = r"(?:[A-Za-z0-9_.-]|[^\x00-\x7f\s])"
_FIELD = re.compile(rf"({_NAME_START}{_NAME_REST}*+)[ \t]*+:(.*)")
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


class _Block:
    """The block being read: its fields, with what the splitting rules ask of
    it (the names it has, whether it names a recipient) kept up to date, and
    the last field's continuation lines kept apart until the block closes."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, list[str]]] = []
        self.names: set[str] = set()
        self.marked = False

    def __bool__(self) -> bool:
        return bool(self.fields)

    def add(self, name: str, value: str) -> None:
        lower = name.lower()
        self.fields.append((name, [value]))
        self.names.add(lower)
        self.marked = self.marked or lower in _RECIPIENT_MARKERS

    def continue_field(self, line: str) -> None:
        self.fields[-1][1].append(line)

    def starts_new(self, lower: str) -> bool:
        """A field named *lower* opens the next block (a repeat, or a recipient
        field after per-message ones: a blank line was left out)."""
        if not self.fields:
            return False
        return lower in self.names or (lower in RECIPIENT_FIELDS and not self.marked)

    def close(self) -> list[Field]:
        return [(name, "".join(pieces)) for name, pieces in self.fields]


def _blocks(text: str, depth: int = 0) -> list[list[Field]]:
    blocks: list[list[Field]] = []
    block = _Block()
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # the last field can still take continuation lines
    open_field = False
    #: a Content-Transfer-Encoding field announces encoded groups after its block
    encoding = ""
    for index, line in enumerate(lines):
        if not line.strip():
            if block:
                blocks.append(block.close())
                block = _Block()
            open_field = False
            continue
        if line[0] in " \t":
            if open_field and block:
                block.continue_field(line.rstrip())
            continue
        match = _FIELD.fullmatch(line)
        if match is None:
            if encoding in ("base64", "quoted-printable") and depth < _MAX_DEPTH:
                decoded = _decode(lines[index:], encoding)
                if decoded is not None:
                    if block:
                        blocks.append(block.close())
                    return blocks + _blocks(decoded, depth + 1)
            open_field = False
            continue
        name = canonical_name(match.group(1))
        value = match.group(2).strip(" \t")
        lower = name.lower()
        if block.starts_new(lower):
            blocks.append(block.close())
            block = _Block()
        block.add(name, value)
        open_field = True
        if lower == "content-transfer-encoding":
            encoding = value.strip().lower()
    if block:
        blocks.append(block.close())
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

"""What a bounce's human-readable notice says about its recipients.

Vendor formats (qmail, Exim, old Sendmail, Exchange, Lotus Notes, ...) state
the failed recipients in prose; RFC 3464 reports often state there what their
``Status`` field leaves generic (OpenSMTPD writes ``Status: 5.0.0`` and puts
``550 5.1.1 ...`` in the text). Only the notice is read, up to where a copy of
the returned message begins, so the original's own headers are not taken for
recipients.

* :func:`extract_recipients`: the recipients the notice names, each with the
  enhanced status (``5.1.1``) and SMTP reply (``550``) stated near it;
  ``delayed`` when the notice is a delay warning, else ``failed``. Delivery-
  status fields written inline in the text (no ``message/delivery-status``
  part, or a broken MIME structure) are read as such.
* :func:`refine`: recipients of a delivery-status part whose status is missing
  or generic get the specific code the notice states for them.

A notice is written by whoever sent the message, so every pattern here runs in
linear time: no two unbounded repeats that can match the same characters sit
side by side, blanks next to ``^`` never span lines, each address's region is
read once, and tags without an end are not searched for again.
"""

from __future__ import annotations

import bisect
import html
import re

import attrs

from postroom.api import ParsedMessage
from postroom_dsn.data import STATUS, Recipient, recipient_from_fields, refinable
from postroom_dsn.fields import looks_like_delivery_status, parse_delivery_status
from postroom_dsn.locate import RETURNED_TYPES

_DELAY = re.compile(
    r"delay|still being retried|will (?:keep|continue) (?:trying|to try)"
    r"|has not yet been delivered|not been delivered yet",
    re.IGNORECASE,
)
#: where the returned message starts inside a notice's text (Sendmail's "The
#: original message was received at ..." is an opening line, not the copy)
#: (a blank line is passed over at once: a notice may have thousands)
_RETURNED_START = re.compile(
    r"^(?=[ \t]*+\S)(?:[ \t]*+(?:[-=*_>]{2}.*?)?(?:this is a copy of|below this line is a copy"
    r"|original (?:message|mail)(?!\s+was\s+received)|unsent message|returned message"
    r"|message headers follow|original message headers|copy of the message"
    r"|headers of the original|forwarded message|the following is a copy)"
    r"|(?:return-path|received|dkim-signature|x-received|arc-seal|authentication-results):\s)",
    re.IGNORECASE | re.MULTILINE,
)
#: an address; it starts where a run of local-part characters starts (an
#: address cannot start inside one, so trying there again would only repeat
#: the scan of the run: quadratic on ``a'a'a'...``)
_ADDRESS = re.compile(r"(?<![\w.+'=-])[\w.+'=-]++@[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)+")
_NOT_RECIPIENT_LOCAL = ("postmaster", "mailer-daemon", "mailerdaemon", "post_master", "abuse")
#: what precedes an address that is not a recipient: a quoted Message-ID, or
#: the sender in an SMTP transcript or quoted header
_NOT_RECIPIENT_BEFORE = re.compile(
    r"(?:message-id|mail\s+from|^[ \t]*from|envelope-from|sender)\s*+(?::\s*+)?<?\Z",
    re.IGNORECASE | re.MULTILINE,
)
#: where a notice states a recipient: the address opens a line (bare, quoted,
#: in ``<>``, after a bullet or a reply code) or follows a label naming it one
_RECIPIENT_SLOT = re.compile(
    r"(?:^[ \t]*+(?:(?:[*\-\u2022]|[245]\d\d)[ \t]*+)?|(?:rcpt\s+to|recipient(?:\s+address)?"
    r"|delivered\s+to|failed\s+recipient)\s*+(?::\s*+)?(?:rfc822;\s*+)?)[<\"]?\Z",
    re.IGNORECASE | re.MULTILINE,
)
_REPLY = re.compile(r"(?<![\w.\[#-])([245][0-5]\d)(?=[\s-])")
_TAG = re.compile(r"<[^>]*+>")
_BLOCK_END = re.compile(r"<\s*+(?:br|/p|/div|/tr|/li|/h\d)[^>]*+>", re.IGNORECASE)
_SCRIPT_START = re.compile(r"<(style|script)", re.IGNORECASE)
_SCRIPT_END = {
    name: re.compile(rf"</{name}\s*+>", re.IGNORECASE) for name in ("style", "script")
}
#: a ``To:`` line, maybe quoted with ``>``; blanks that cannot leave the line
_TO_LINE = re.compile(r"^[ \t]*+(?:>[ \t]*+)?to:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE)
_LOOKBEHIND = 40


def _without_scripts(markup: str) -> str:
    """*markup* with its ``<style>`` and ``<script>`` elements replaced by a blank.

    Each stretch of text is searched once: the ``>`` that ends an opening tag
    is remembered for the openings before it, and an element that never ends
    takes its name out of the search (no later one of that name can end).
    """
    pieces: list[str] = []
    position = search_from = 0
    names = {"style", "script"}
    tag_end = -1  # the first ">" after the last opening looked at
    while names:
        start = _SCRIPT_START.search(markup, search_from)
        if start is None:
            break
        name = start.group(1).lower()
        search_from = start.start() + 1
        if name not in names:
            continue
        if tag_end < start.end():
            tag_end = markup.find(">", start.end())
            if tag_end < 0:
                break  # no opening tag ends any more
        end = _SCRIPT_END[name].search(markup, tag_end + 1)
        if end is None:
            names.discard(name)
            continue
        pieces += [markup[position : start.start()], " "]
        position = search_from = end.end()
    pieces.append(markup[position:])
    return "".join(pieces)


def _closed_tags_sub(pattern: re.Pattern[str], replacement: str, text: str) -> str:
    """``pattern.sub`` on the part of *text* up to its last ``>``: a tag
    pattern tried at a ``<`` that no ``>`` follows would scan to the end for
    every such ``<``."""
    last = text.rfind(">") + 1
    return pattern.sub(replacement, text[:last]) + text[last:]


def _html_text(markup: str) -> str:
    text = _without_scripts(markup)
    text = _closed_tags_sub(_BLOCK_END, "\n", text)
    return html.unescape(_closed_tags_sub(_TAG, "", text))


def notice_text(message: ParsedMessage) -> str:
    """The notice: the message's own text parts (not those of a returned
    message), HTML turned to text when there is no plain part, cut where an
    inline copy of the returned message begins."""
    plain: list[str] = []
    markup: list[str] = []
    inside_depth: int | None = None
    for part in message.parts:
        if inside_depth is not None:
            if part.depth > inside_depth:
                continue
            inside_depth = None
        if part.content_type in RETURNED_TYPES:
            inside_depth = part.depth
            continue
        if part.text is None or part.disposition == "attachment":
            continue
        if part.content_type == "text/plain" or part.content_type.startswith("multipart/"):
            # a multipart part has text only when its boundary was never found
            plain.append(part.text)
        elif part.content_type == "text/html":
            markup.append(part.text)
    text = "\n".join(plain) if plain else "\n".join(_html_text(m) for m in markup)
    # the first lines may quote the original's headers as context ("To: x"),
    # so the cut is searched after them
    start = _RETURNED_START.search(text, min(len(text), 1))
    return text[: start.start()] if start else text


def _mentions(message: ParsedMessage, notice: str) -> list[tuple[str, int, bool]]:
    """Addresses named in the notice: (address, first position, whether it
    stands where a recipient is stated), in order; the report's own sender
    and addressees, mail-system mailboxes and senders of the original left out."""
    own = {a.lower() for a in [message.from_addr or "", *message.to, *message.cc]}
    found: dict[str, tuple[int, bool]] = {}
    for match in _ADDRESS.finditer(notice):
        lower = match.group(0).strip(".'").lower()
        before = notice[max(0, match.start() - _LOOKBEHIND) : match.start()]
        if lower in own or lower.split("@", 1)[0] in _NOT_RECIPIENT_LOCAL:
            continue
        if _NOT_RECIPIENT_BEFORE.search(before):
            continue
        slot = _RECIPIENT_SLOT.search(before) is not None
        position, seen_in_slot = found.get(lower, (match.start(), False))
        found[lower] = (position, seen_in_slot or slot)
    return sorted(((a, p, s) for a, (p, s) in found.items()), key=lambda item: item[1])


def _candidates(message: ParsedMessage, notice: str, first: bool) -> list[tuple[str, int]]:
    """The recipients: addresses in a recipient's place when the notice has
    any (so a helpdesk address or an alias's origin is not counted), else
    every address it names; with *first*, only the first address named."""
    mentions = _mentions(message, notice)
    if first:
        return [(a, p) for a, p, _ in mentions[:1]]
    slotted = [(a, p) for a, p, slot in mentions if slot]
    return slotted or [(a, p) for a, p, _ in mentions]


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    """The first failure (4 or 5 class) code *pattern* finds in *text*, else
    the first code at all: a transcript's ``250 2.1.5 Ok`` is not the news."""
    codes = [".".join(m.groups()) for m in pattern.finditer(text)]
    return next((c for c in codes if c[0] in "45"), codes[0] if codes else None)


def _returned_recipients(message: ParsedMessage, notice: str) -> list[str]:
    """Fallback when the notice names nobody: the returned message's To (or
    an inline copy's ``To:`` line after the *notice*)."""
    for index, part in enumerate(message.parts):
        if part.content_type in RETURNED_TYPES and index + 1 < len(message.parts):
            inner = message.parts[index + 1]
            value = inner.header("To") if inner.depth == part.depth + 1 else None
            if value:
                return [m.group(0).lower() for m in _ADDRESS.finditer(value)]
    text = message.text or ""
    match = _TO_LINE.search(text, min(len(notice), len(text)))
    return [m.group(0).lower() for m in _ADDRESS.finditer(match.group(1))] if match else []


def _addressed(message: ParsedMessage, notice: str) -> list[tuple[str, int]]:
    """The last resort: a notice naming only the report's own addressee (a
    message sent to oneself bounced)."""
    own = {a.lower() for a in [*message.to, *message.cc]}
    found: dict[str, int] = {}
    for match in _ADDRESS.finditer(notice):
        lower = match.group(0).strip(".'").lower()
        before = notice[max(0, match.start() - _LOOKBEHIND) : match.start()]
        if lower in own and _RECIPIENT_SLOT.search(before):
            found.setdefault(lower, match.start())
    return list(found.items())


def _prose_recipients(message: ParsedMessage, notice: str, first: bool = False) -> list[Recipient]:
    action = "delayed" if _DELAY.search(message.subject) else "failed"
    failed_header = message.header("X-Failed-Recipients")
    candidates = _candidates(message, notice, first)
    if failed_header:
        listed = [a.strip().lower() for a in re.split(r"[,\s]+", failed_header) if "@" in a]
        positions = dict(candidates)
        candidates = [(a, positions.get(a, len(notice))) for a in dict.fromkeys(listed)]
    if not candidates:
        candidates = [(a, len(notice)) for a in _returned_recipients(message, notice)]
    if not candidates:
        candidates = _addressed(message, notice)
    whole = _Codes(notice)
    starts = sorted({start for _, start in candidates if start < len(notice)})
    recipients = []
    for address, start in candidates:
        if start < len(notice):
            # up to where the next candidate is named: the regions do not overlap
            following = bisect.bisect_right(starts, start)
            end = starts[following] if following < len(starts) else len(notice)
            codes = _Codes(notice[start:end])
        else:  # not named in the notice: the notice as a whole
            codes = whole
        status, reply = codes.status, codes.reply
        if len(candidates) == 1:  # the notice's every code is about this one
            status = status or whole.status
            reply = reply or whole.reply
        recipients.append(Recipient(address, action, status=status, reply_code=reply))
    return recipients


class _Codes:
    """The first failure status and reply codes *text* states, read once."""

    def __init__(self, text: str) -> None:
        self.status = _first(STATUS, text)
        self.reply = _first(_REPLY, text)


def _inline_recipients(notice: str) -> list[Recipient]:
    """Recipients of delivery-status fields written in the notice itself."""
    if not looks_like_delivery_status(notice):
        return []
    status = parse_delivery_status(notice)
    found = [recipient_from_fields(fields) for fields in status.recipients]
    return [r for r in found if r.address]


def extract_recipients(message: ParsedMessage, first: bool = False) -> list[Recipient]:
    """The recipients a vendor-format bounce names, with what it states about
    them. *first*: only the first address the notice names is the recipient
    (a mailing list's rejection names the list first, then its help addresses)."""
    notice = notice_text(message)
    inline = _inline_recipients(notice)
    if inline:
        return refine(message, inline, notice)
    return _prose_recipients(message, notice, first)


def refine(
    message: ParsedMessage, recipients: list[Recipient], notice: str | None = None
) -> list[Recipient]:
    """*recipients* with a missing or generic status (``5.0.0``) completed by
    the specific code the notice states for the same address (or, when both
    name a single recipient, for that one), of the same class; a missing
    reply code likewise."""
    if not any(
        r.status is None or r.status.endswith(".0.0") or not r.reply_code for r in recipients
    ):
        return recipients
    if notice is None:
        notice = notice_text(message)
    stated = _prose_recipients(message, notice)
    by_address = {r.address: r for r in stated if r.address}
    refined = []
    for recipient in recipients:
        match = by_address.get((recipient.address or "").lower())
        if match is None and len(recipients) == 1 and len(stated) == 1:
            match = stated[0]
        if match is not None:
            status = recipient.status
            if match.status and refinable(status, match.status):
                status = match.status
            reply = recipient.reply_code or match.reply_code
            recipient = attrs.evolve(recipient, status=status, reply_code=reply)
        refined.append(recipient)
    return refined

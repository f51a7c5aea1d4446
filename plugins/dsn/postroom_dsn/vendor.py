"""Bounces in vendors' own formats: no delivery-status part to read.

qmail, Exim, old Sendmail, Exchange, Lotus Notes, Gmail, Yahoo and many others
say what failed in prose. Two questions, each answered by heuristics whose
limits ``docs/plugins/dsn.md`` states:

* :func:`looks_like_bounce`: the message is obviously a bounce: a vendor
  marker (``X-Failed-Recipients``, an Amazon SES bounce notification), or a
  mail-system sender (``ndr-senders-list`` plus a few built-in names) *and*
  a bounce-like subject or a known bounce sentence in the text. A person
  forwarding or quoting a bounce is not a mail system: not a bounce.
* :func:`extract_recipients`: the failed recipients and what the text states
  about each: the address, the enhanced status (``5.1.1``), the SMTP reply
  (``550``); ``delayed`` when the notice is a delay warning, else ``failed``.
  Only the notice is read, up to where the returned message begins, so the
  original's own headers are not taken for recipients.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any

from postroom.model import ParsedMessage
from postroom_dsn.data import STATUS, Recipient, reply_code, status_code
from postroom_dsn.locate import RETURNED_TYPES

#: mail-system senders recognised besides the ``ndr-senders-list`` option
BUILTIN_SENDERS = (
    "mailer-daemon",
    "mailerdaemon",
    "postmaster",
    "post_master",
    "mail delivery",
    "mail.delivery.system",
    "mail-delivery",
)

_SUBJECT = re.compile(
    r"undeliver|not (?:be )?delivered|delivery (?:status )?notification|delivery fail"
    r"|fail(?:ed|ure)? (?:notice|delivery)|returned mail|returning message|mail delivery"
    r"|delivery (?:has )?failed|non[- ]?delivery|mail system error|error sending|delay"
    r"|mail failure|could not be delivered|delivery problem|errors? from|returned to sender"
    r"|returning to sender|mail failed",
    re.IGNORECASE,
)
_BODY_MARKERS = re.compile(
    r"this is the qmail-send program"
    r"|this message was created automatically by mail delivery software"
    r"|the following addresses had permanent fatal errors"
    r"|delivery to the following recipients? (?:failed|has been delayed)"
    r"|could not be delivered to one or more"
    r"|i'm afraid i wasn't able to deliver"
    r"|unable to deliver (?:your )?message"
    r"|did not reach (?:the following|some or all)"
    r"|delivery has failed to these recipients"
    r"|there was an error (?:delivering|sending) your mail"
    r"|we were unable to deliver your message"
    r"|returned permanent errors"
    r"|transcript of session follows"
    r"|this is an automatically generated delivery status notification"
    r"|your message (?:could not|cannot|wasn't|was not) (?:be )?delivered",
    re.IGNORECASE,
)
_DELAY = re.compile(
    r"delay|still being retried|will (?:keep|continue) (?:trying|to try)"
    r"|has not yet been delivered|not been delivered yet",
    re.IGNORECASE,
)
#: where the returned message starts inside a notice's text
_RETURNED_START = re.compile(
    r"^\s*(?:[-=*_>]{2,}.*)?(?:this is a copy of|below this line is a copy|original message"
    r"|unsent message|returned message|message headers follow|original message headers"
    r"|the original message|copy of the message|headers of the original|forwarded message"
    r"|the following is a copy)"
    r"|^(?:return-path|received|dkim-signature|x-received|arc-seal|authentication-results):\s",
    re.IGNORECASE | re.MULTILINE,
)
_ADDRESS = re.compile(r"(?<![\w.+=-])[\w.+'=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_NOT_RECIPIENT_LOCAL = ("postmaster", "mailer-daemon", "mailerdaemon", "post_master", "abuse")
_TAG = re.compile(r"<[^>]*>")
_BLOCK_END = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h\d)[^>]*>", re.IGNORECASE)
_SCRIPT = re.compile(r"<(style|script)[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def _html_text(markup: str) -> str:
    text = _SCRIPT.sub(" ", markup)
    text = _BLOCK_END.sub("\n", text)
    return html.unescape(_TAG.sub("", text))


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
        if part.content_type == "text/plain":
            plain.append(part.text)
        elif part.content_type == "text/html":
            markup.append(part.text)
    text = "\n".join(plain) if plain else "\n".join(_html_text(m) for m in markup)
    # the first lines may quote the original's headers as context ("To: x"),
    # so the cut is searched after them
    start = _RETURNED_START.search(text, min(len(text), 1))
    return text[: start.start()] if start else text


def sender_is_mail_system(message: ParsedMessage, senders: Iterable[str]) -> bool:
    """From (the whole field, display name included) contains a mail-system name."""
    value = (message.header("From") or "").lower()
    return any(s and s.lower() in value for s in senders)


def sender_is_null(message: ParsedMessage) -> bool:
    """No From address at all, or the null address ``<>`` bounces are sent from."""
    value = (message.header("From") or "").strip()
    return message.from_addr is None and (not value or value.endswith("<>"))


def ses_notification(message: ParsedMessage) -> tuple[str, list[Recipient]] | None:
    """An Amazon SES notification (JSON sent by SNS): ``("Bounce", recipients)``,
    ``("Delivery", recipients)`` or ``("Complaint", [])``; None for other mail."""
    text = message.text or ""
    start = text.find("{")
    if start < 0 or '"notificationType"' not in text:
        return None
    data = _json(text[start:])
    if data is None:
        return None
    if isinstance(data, dict) and isinstance(data.get("Message"), str):  # raw SNS envelope
        try:
            data = json.loads(data["Message"])
        except ValueError:
            return None
    if not isinstance(data, dict):
        return None
    kind = str(data.get("notificationType") or data.get("eventType") or "")
    recipients: list[Recipient] = []
    if kind == "Bounce":
        bounce = data.get("bounce") or {}
        transient = str(bounce.get("bounceType", "")).lower() == "transient"
        for item in bounce.get("bouncedRecipients") or []:
            diagnostic = item.get("diagnosticCode")
            status = status_code(item.get("status")) or status_code(diagnostic)
            recipients.append(
                Recipient(
                    address=item.get("emailAddress"),
                    action="delayed" if transient else "failed",
                    status=status,
                    reply_code=reply_code(diagnostic),
                    diagnostic=diagnostic,
                )
            )
    elif kind == "Delivery":
        delivery = data.get("delivery") or {}
        response = delivery.get("smtpResponse")
        for address in delivery.get("recipients") or []:
            recipients.append(
                Recipient(
                    address=address,
                    action="delivered",
                    status=status_code(response),
                    reply_code=reply_code(response),
                    diagnostic=response,
                )
            )
    elif kind != "Complaint":
        return None
    return kind, recipients


def _json(text: str) -> Any:
    """The JSON object at the start of *text*; mail bodies may fold long lines."""
    for candidate in (text, re.sub(r"\r?\n[ \t]?", "", text)):
        try:
            return json.JSONDecoder().raw_decode(candidate)[0]
        except ValueError:
            continue
    return None


def looks_like_bounce(message: ParsedMessage, senders: Iterable[str]) -> bool:
    """Obviously a bounce, though not an RFC 3464 report (see the module doc)."""
    if message.header("X-Failed-Recipients"):
        return True
    mail_system = sender_is_mail_system(message, [*senders, *BUILTIN_SENDERS])
    if not mail_system and not sender_is_null(message):
        return False
    if _SUBJECT.search(message.subject):
        return True
    return _BODY_MARKERS.search(notice_text(message)) is not None


def _candidates(message: ParsedMessage, notice: str) -> list[tuple[str, int]]:
    """Addresses named in the notice, first position each, in order."""
    own = {a.lower() for a in [message.from_addr or "", *message.to, *message.cc]}
    found: dict[str, int] = {}
    for match in _ADDRESS.finditer(notice):
        address = match.group(0).strip(".'")
        lower = address.lower()
        local = lower.split("@", 1)[0]
        preceding = notice[max(0, match.start() - 12) : match.start()].lower()
        if lower in own or local in _NOT_RECIPIENT_LOCAL or "message-id" in preceding:
            continue
        found.setdefault(lower, match.start())
    return sorted(found.items(), key=lambda item: item[1])


def _first_reply_code(text: str) -> str | None:
    for match in re.finditer(r"(?<![\w.\[#-])([245][0-5]\d)(?=[\s-])", text):
        return match.group(1)
    return None


_TO_LINE = re.compile(r"^\s*>?\s*to:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE)


def _returned_recipients(message: ParsedMessage) -> list[str]:
    """Fallback when the notice names nobody: the returned message's To."""
    for index, part in enumerate(message.parts):
        if part.content_type in RETURNED_TYPES and index + 1 < len(message.parts):
            inner = message.parts[index + 1]
            value = inner.header("To") if inner.depth == part.depth + 1 else None
            if value:
                return [m.group(0).lower() for m in _ADDRESS.finditer(value)]
    text = message.text or ""
    cut = len(notice_text(message))
    match = _TO_LINE.search(text, min(cut, len(text)))
    return [m.group(0).lower() for m in _ADDRESS.finditer(match.group(1))] if match else []


def extract_recipients(message: ParsedMessage) -> list[Recipient]:
    """The recipients a vendor-format bounce names, with what it states about them."""
    notice = notice_text(message)
    action = "delayed" if _DELAY.search(message.subject) else "failed"
    failed_header = message.header("X-Failed-Recipients")
    candidates = _candidates(message, notice)
    if failed_header:
        listed = [a.strip().lower() for a in re.split(r"[,\s]+", failed_header) if "@" in a]
        positions = dict(candidates)
        candidates = [(a, positions.get(a, len(notice))) for a in dict.fromkeys(listed)]
    if not candidates:
        candidates = [(a, len(notice)) for a in _returned_recipients(message)]
    recipients = []
    for index, (address, start) in enumerate(candidates):
        end = candidates[index + 1][1] if index + 1 < len(candidates) else len(notice)
        region = notice[start:end] if start < len(notice) else notice
        status_match = STATUS.search(region)
        recipients.append(
            Recipient(
                address=address,
                action=action,
                status=".".join(status_match.groups()) if status_match else None,
                reply_code=_first_reply_code(region),
            )
        )
    return recipients

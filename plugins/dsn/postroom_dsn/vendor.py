"""Bounces in vendors' own formats: is this message one?

qmail, Exim, old Sendmail, Exchange, Lotus Notes, Gmail, Yahoo, mobile
gateways, mailing-list managers and many others say what failed in prose
(:mod:`postroom_dsn.notice` reads it). :func:`looks_like_bounce` answers with
heuristics whose limits ``docs/plugins/dsn.md`` states:

* a vendor marker: ``X-Failed-Recipients``;
* a mail-system sender (``ndr-senders-list`` plus a few built-in names, a null
  or missing From, or the null reverse-path ``Return-Path: <>`` RFC 5321 has
  bounces sent with) *and* a bounce-like subject or a known bounce sentence;
* an automated sender (``no-reply@``, ``do-not-reply@``) *and* a known bounce
  sentence in the text (the subject alone is too weak: shops write "delayed");
* a mailing-list manager's rejection (``you are not a member``, ``loop alert``)
  sent from the list's administrative address with list headers.

A person forwarding or quoting a bounce is none of these: not a bounce.
:func:`ses_notification` reads Amazon SES notifications (JSON sent by SNS).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from postroom.api import ParsedMessage
from postroom_dsn.data import Recipient, reply_code, status_code
from postroom_dsn.notice import notice_text

#: mail-system senders recognised besides the ``ndr-senders-list`` option
BUILTIN_SENDERS = (
    "mailer-daemon",
    "mailer daemon",
    "mailerdaemon",
    "postmaster",
    "post_master",
    "mail delivery",
    "mail.delivery.system",
    "mail-delivery",
)
#: local parts of senders that are programs, though not mail systems
_AUTOMATED_LOCAL = re.compile(r"^(?:no-?reply|do-?not-?reply)(?:[+.-].*)?$", re.IGNORECASE)

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
    r"|could not be delivered to:?\s*<?[\w.+'=-]+@"
    r"|i'm afraid i wasn't able to deliver"
    r"|unable to deliver (?:your )?message"
    r"|did not reach (?:the following|some or all)"
    r"|delivery has failed to these recipients"
    r"|there was an error (?:delivering|sending) your mail"
    r"|we were unable to deliver your message"
    r"|returned permanent errors"
    r"|transcript of session follows"
    r"|this is an automatically generated delivery status notification"
    r"|your message (?:could not|cannot|wasn't|was not) (?:be )?delivered"
    r"|this is the mailer-daemon"
    r"|an error has occurred while attempting to deliver"
    r"|error message below:",
    re.IGNORECASE,
)
#: headers a mailing-list manager writes (fml, Mailman, ezmlm, Sympa, ...)
_LIST_HEADERS = ("X-MLServer", "X-ML-Server", "X-ML-Name", "X-Mailman-Version", "Mailing-List")
#: the list's administrative mailbox, which rejections come from
_LIST_ADMIN = re.compile(
    r"^(?:owner-.+|.+-(?:admin|owner|request|bounces?|ctl)|fml|majordomo|mailman|listserv|sympa)$",
    re.IGNORECASE,
)
#: the address after "you" is taken whole (an atomic group): trying every ``@``
#: of a long word as the split point would be quadratic in its length
_LIST_REJECTION = re.compile(
    r"\byou(?>\s+\S+@\S+)? are not (?:a )?member|not a member of (?:this|the) (?:mailing )?list"
    r"|loop alert|duplicated message-id"
    r"|your (?:message|post(?:ing)?) (?:to \S+ )?(?:was|has been) rejected",
    re.IGNORECASE,
)


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
    ``("Delivery", recipients)`` or ``("Complaint", [])``; None for other mail.

    Anyone can send such JSON: values of the wrong type are ignored, never trusted.
    """
    text = message.text or ""
    start = text.find("{")
    if start < 0 or "notificationType" not in text:  # quoted, or escaped in an SNS envelope
        return None
    data = _json(text[start:])
    if isinstance(data, dict) and isinstance(data.get("Message"), str):  # raw SNS envelope
        data = _json(data["Message"])
    if not isinstance(data, dict):
        return None
    kind = str(data.get("notificationType") or data.get("eventType") or "")
    recipients: list[Recipient] = []
    if kind == "Bounce":
        bounce = _mapping(data.get("bounce"))
        transient = str(bounce.get("bounceType", "")).lower() == "transient"
        for item in map(_mapping, _list(bounce.get("bouncedRecipients"))):
            diagnostic = _text(item.get("diagnosticCode"))
            status = status_code(_text(item.get("status"))) or status_code(diagnostic)
            recipients.append(
                Recipient(
                    address=_text(item.get("emailAddress")),
                    action="delayed" if transient else "failed",
                    status=status,
                    reply_code=reply_code(diagnostic),
                    diagnostic=diagnostic,
                )
            )
    elif kind == "Delivery":
        delivery = _mapping(data.get("delivery"))
        response = _text(delivery.get("smtpResponse"))
        for address in _list(delivery.get("recipients")):
            recipients.append(
                Recipient(
                    address=_text(address),
                    action="delivered",
                    status=status_code(response),
                    reply_code=reply_code(response),
                    diagnostic=response,
                )
            )
    elif kind != "Complaint":
        return None
    return kind, recipients


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _json(text: str) -> Any:
    """The JSON object at the start of *text*; mail bodies may fold long lines,
    and an MTA may have split a line over 990 characters with ``!``, a line
    break and a blank (Sendmail does, to keep within RFC 5321's limit)."""
    unfold = re.compile(r"\r?\n[ \t]?")
    split = unfold.sub("", re.sub(r"!\r?\n ", "", text))  # no "!" ends a line in JSON
    for candidate in (text, split, unfold.sub("", text)):
        try:
            return json.JSONDecoder().raw_decode(candidate)[0]
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            continue
    return None


def null_return_path(message: ParsedMessage) -> bool:
    """``Return-Path: <>``: the message came with the null reverse-path that
    RFC 5321 (4.5.5) has delivery notifications sent with."""
    value = message.header("Return-Path")
    return value is not None and value.strip().replace(" ", "") == "<>"


def _local_part(message: ParsedMessage) -> str:
    return (message.from_addr or "").rsplit("@", 1)[0]


def list_rejection(message: ParsedMessage) -> bool:
    """A mailing-list manager refusing a post: list headers, the list's
    administrative sender, and a rejection in the subject or the text."""
    if not any(message.header(name) for name in _LIST_HEADERS):
        return False
    if not _LIST_ADMIN.match(_local_part(message)):
        return False
    return bool(
        _LIST_REJECTION.search(message.subject) or _LIST_REJECTION.search(notice_text(message))
    )


def looks_like_bounce(message: ParsedMessage, senders: Iterable[str]) -> bool:
    """Obviously a bounce, though not an RFC 3464 report (see the module doc).

    A null ``Return-Path`` alone is weaker than a mail-system From: RFC 3834
    auto-replies use it too, and their subject quotes the customer's ("Automatic
    reply: Delivery delayed"), so there the subject must *start* bounce-like."""
    if message.header("X-Failed-Recipients"):
        return True
    mail_system = sender_is_mail_system(message, [*senders, *BUILTIN_SENDERS]) or sender_is_null(
        message
    )
    subject = _SUBJECT.search(message.subject.strip())
    if subject is not None and (
        mail_system or (subject.start() == 0 and null_return_path(message))
    ):
        return True
    automated = (
        mail_system or null_return_path(message) or _AUTOMATED_LOCAL.match(_local_part(message))
    )
    if automated and _BODY_MARKERS.search(notice_text(message)):
        return True
    return list_rejection(message)

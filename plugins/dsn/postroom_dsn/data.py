"""What a report says about its recipients, and the attached data that carries it.

The keys are the specification's (section 2): ``_DSNInfo.RecipientCount``,
``_DSNInfo.Recipient<N>.Recipient`` and ``.Action``; every delivery-status
field under ``_DSNRawInfo.``. Two documented extras per recipient, written only
when known: ``_DSNInfo.Recipient<N>.Status`` (the enhanced status code, e.g.
``5.1.1``) and ``_DSNInfo.Recipient<N>.ReplyCode`` (the SMTP reply, e.g.
``550``), which is what the suppression list needs and what vendor formats
without a delivery-status part state.
"""

from __future__ import annotations

import re

import attrs

from postroom.api import AttachedValue, DeliveryReport, strip_comments
from postroom.api import DeliveryStatus as RecipientStatus
from postroom_dsn.fields import DeliveryStatus, Field, field

INFO = "_DSNInfo."
RAW = "_DSNRawInfo."
ACTIONS = frozenset({"delayed", "delivered", "expanded", "failed", "relayed"})
#: spellings real MTAs use for the RFC's actions
_ACTION_ALIASES = {
    "failure": "failed",
    "fail": "failed",
    "expired": "failed",  # SendGrid: gave up after retrying
    "delay": "delayed",
    "deliver": "delivered",
    "deliverable": "delivered",
}

#: an enhanced status code; not a piece of a longer dotted number (``4.16.55.1``)
STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
REPLY_CODE = re.compile(r"(?<![\d.])([245][0-5]\d)(?=[\s\-]|$)")
#: an enhanced code right after an SMTP reply code (``550 5.7.1``, ``550-5.7.1``,
#: ``550-'5.7.1``, ``<421 4.4.2``): a server's own reply, quoted. One run of
#: separators (blanks included), taken whole: two adjacent runs that can both
#: match blanks would try every split of a long run of blanks
_REPLIED_STATUS = re.compile(
    r"(?<![\w.])[245][0-5]\d[-'\"( \t]*+([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)"
)


@attrs.frozen
class Recipient:
    """One recipient of a report, normalised."""

    address: str | None
    action: str | None
    status: str | None = None
    reply_code: str | None = None
    diagnostic: str | None = None

    @property
    def hard_bounce(self) -> bool:
        """Failed for good: action ``failed`` with a 5.x.x status (or, without
        a status, a 5xx reply). A 4.x.x failure or a delay is a soft bounce."""
        if self.action != "failed":
            return False
        if self.status is not None:
            return self.status.startswith("5.")
        return self.reply_code is not None and self.reply_code.startswith("5")


def bare_address(value: str | None) -> str | None:
    """``rfc822; <a@b>`` (comments allowed) gives ``a@b``."""
    if value is None:
        return None
    text = strip_comments(value).strip()
    if ";" in text:
        text = text.split(";", 1)[1]
    text = text.strip().strip("<>").strip().strip('"')
    return text or None


def normal_action(value: str | None) -> str | None:
    if value is None:
        return None
    words = strip_comments(value).strip().lower().split()
    if not words:
        return None
    action = _ACTION_ALIASES.get(words[0], words[0])
    return action if action in ACTIONS else None


def status_code(value: str | None) -> str | None:
    match = STATUS.search(value or "")
    return ".".join(match.groups()) if match else None


def reply_code(value: str | None) -> str | None:
    text = value or ""
    if ";" in text:  # "smtp; 550 5.1.1 ..." : after the diagnostic type
        kind, text = text.split(";", 1)
        if kind.strip().lower() == "x-unix":  # a program's exit status, not a reply
            return None
    match = REPLY_CODE.search(text.strip()[:8])
    return match.group(1) if match else None


def replied_status(value: str | None) -> str | None:
    """The enhanced code of the last SMTP reply quoted in *value* (the innermost
    one: ``554 4.4.7 Message expired ... <421 4.4.2 Connection timed out>`` gives
    4.4.2), or None when no reply carries one."""
    found = _REPLIED_STATUS.findall(value or "")
    return ".".join(found[-1]) if found else None


def best_status(stated: str | None, diagnostic: str | None) -> str | None:
    """The recipient's status: the Status field, unless the Diagnostic-Code says
    better.

    A reply the remote server gave with an enhanced code (``smtp; 550 5.7.1
    ...``) is what happened, and wins over the reporting MTA's summary in
    ``Status`` (Sendmail reports ``4.4.7`` "expired" or ``5.1.1`` over a
    remote ``550 5.7.1``; Postfix ``4.5.0`` over ``550 5.5.0``). A bare code in
    the diagnostic refines a missing or generic (``5.0.0``) Status of the same
    class."""
    replied = replied_status(diagnostic)
    if replied is not None:
        return replied
    diagnosed = status_code(diagnostic)
    if diagnosed is None or (stated is not None and not refinable(stated, diagnosed)):
        return stated
    return diagnosed


def refinable(stated: str | None, better: str) -> bool:
    """Whether *better* may replace *stated*: none stated, or a generic
    ``x.0.0`` of the same class replaced by a specific code."""
    if stated is None:
        return True
    return stated.endswith(".0.0") and better[0] == stated[0] and not better.endswith(".0.0")


def action_from_status(status: str | None) -> str | None:
    """The action a status implies, for groups that leave ``Action`` out."""
    if status is None:
        return None
    return {"5": "failed", "4": "delayed", "2": "delivered"}[status[0]]


def recipient_from_fields(fields: tuple[Field, ...]) -> Recipient:
    address = None
    for name in ("final-recipient", "original-recipient", "x-actual-recipient"):
        address = bare_address(field(fields, name))
        if address:
            break
    diagnostic = field(fields, "diagnostic-code")
    status = best_status(status_code(field(fields, "status")), diagnostic)
    action = normal_action(field(fields, "action")) or action_from_status(status)
    return Recipient(
        address=address,
        action=action,
        status=status,
        reply_code=reply_code(diagnostic),
        diagnostic=diagnostic,
    )


#: recipients written to attached data (and suppressed) per report. A real report
#: names the recipients of one outbound message, and a send request has at most
#: 500; anyone can send a "report" naming 100,000, which would flood the store
#: and the suppression list.
MAX_RECIPIENTS = 500
#: attached key: recipients of the report beyond MAX_RECIPIENTS, left out (only when > 0)
OMITTED = f"{INFO}RecipientsOmitted"


def info_data(recipients: list[Recipient]) -> dict[str, AttachedValue]:
    """``_DSNInfo.*`` for *recipients* (N counts from 1), at most MAX_RECIPIENTS."""
    kept = recipients[:MAX_RECIPIENTS]
    data: dict[str, AttachedValue] = {f"{INFO}RecipientCount": len(kept)}
    if len(recipients) > len(kept):
        data[OMITTED] = len(recipients) - len(kept)
    for n, recipient in enumerate(kept, 1):
        prefix = f"{INFO}Recipient{n}."
        if recipient.address:
            data[prefix + "Recipient"] = recipient.address
        if recipient.action:
            data[prefix + "Action"] = recipient.action
        if recipient.status:
            data[prefix + "Status"] = recipient.status
        if recipient.reply_code:
            data[prefix + "ReplyCode"] = recipient.reply_code
    return data


def raw_data(status: DeliveryStatus) -> dict[str, AttachedValue]:
    """``_DSNRawInfo.*``: every field verbatim; a field repeated in one group
    keeps its first value."""
    data: dict[str, AttachedValue] = {}
    for name, value in status.per_message:
        data.setdefault(f"{RAW}{name}", value)
    kept = status.recipients[:MAX_RECIPIENTS]
    for n, fields in enumerate(kept, 1):
        for name, value in fields:
            data.setdefault(f"{RAW}Recipient{n}.{name}", value)
    data[f"{RAW}RecipientCount"] = len(kept)
    return data


def recipients_from_data(data: dict[str, AttachedValue]) -> list[Recipient]:
    """Read the recipients back from an interaction's attached data (the
    submit stage sees the stored interaction, not the message)."""
    value = data.get(f"{INFO}RecipientCount")
    # an int, or its text where a store kept values as text
    if isinstance(value, bool) or not str(value).isdigit():
        return []
    count = min(int(str(value)), MAX_RECIPIENTS)
    found = []
    for n in range(1, count + 1):
        prefix = f"{INFO}Recipient{n}."

        def text(key: str, prefix: str = prefix) -> str | None:
            value = data.get(prefix + key)
            return value if isinstance(value, str) and value else None

        diagnostic = data.get(f"{RAW}Recipient{n}.Diagnostic-Code")
        found.append(
            Recipient(
                address=text("Recipient"),
                action=text("Action"),
                status=text("Status"),
                reply_code=text("ReplyCode"),
                diagnostic=diagnostic if isinstance(diagnostic, str) else None,
            )
        )
    return found


#: the delivery status each DSN action gives its recipient: ``relayed`` (handed on
#: to a system that sends no DSN, e.g. Postfix to Dovecot's LMTP) and ``expanded``
#: (to a list's members) are as far as reports go, so they count as delivered
DELIVERY_STATUS = {
    "failed": RecipientStatus.FAILED.value,
    "delayed": RecipientStatus.DELAYED.value,
    "delivered": RecipientStatus.DELIVERED.value,
    "relayed": RecipientStatus.DELIVERED.value,
    "expanded": RecipientStatus.DELIVERED.value,
}


def delivery_reports(data: dict[str, AttachedValue]) -> list[DeliveryReport]:
    """What a committed report says of each recipient, for the outbound
    interaction it reports on (``record_delivery``)."""
    reports = []
    for n, recipient in enumerate(recipients_from_data(data), 1):
        status = DELIVERY_STATUS.get(recipient.action or "")
        if status is None or not recipient.address:
            continue
        said = [s for s in (recipient.status, recipient.diagnostic) if s]
        original = data.get(f"{RAW}Recipient{n}.Original-Recipient")
        reports.append(
            DeliveryReport(
                recipient=recipient.address,
                status=status,
                action=recipient.action,
                diagnostic=" ".join(said) or None,
                original_recipient=bare_address(original) if isinstance(original, str) else None,
            )
        )
    return reports

"""The specification's classification rules (section 2), apart from the hooks.

:func:`read_report` decides, from the message alone, whether it is a delivery
report and what it says. One rule (the specification's second) also asks
whether a returned Message-ID is an outbound interaction's: that question
needs the store, so :func:`read_report` answers it both ways
(:class:`Reading`) and :func:`returns_outbound` is the look-up the gateway
makes. :mod:`postroom_dsn.analysis` puts the two together.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable

import attrs

from postroom.api import AttachedValue, ParsedMessage, Subtype, parse_message_ids
from postroom_dsn import notice, vendor
from postroom_dsn.data import Recipient, info_data, raw_data, recipient_from_fields
from postroom_dsn.envelope import xtext_decode
from postroom_dsn.fields import DeliveryStatus, parse_delivery_status
from postroom_dsn.locate import (
    delivery_status_text,
    find_report,
    has_part,
    message_id_of,
    report_type,
    returned_message_ids,
)

#: looks up whether a Message-ID is that of an outbound interaction
IsOutbound = Callable[[str], Awaitable[bool]]

_FEEDBACK_TYPES = frozenset({"message/feedback-report"})
#: a ``Message-ID:`` line of an inline copy, maybe quoted with ``>``; the blanks
#: before the name stay on its line (``\s*`` there, next to ``^``, took cubic
#: time on runs of blank lines)
_INLINE_MESSAGE_ID = re.compile(
    r"^[ \t]*+(?:>[ \t]*+)?message-id:\s*+(<[^<>\s]++>)", re.IGNORECASE | re.MULTILINE
)


@attrs.frozen
class Report:
    """What a delivery report says. ``status`` is None for vendor formats."""

    subtype: str
    reason: str
    recipients: tuple[Recipient, ...] = ()
    status: DeliveryStatus | None = None

    @property
    def attached_data(self) -> dict[str, AttachedValue]:
        data = info_data(list(self.recipients))
        if self.status is not None:
            data.update(raw_data(self.status))
        return data


def _subtype(recipients: Iterable[Recipient], default: str) -> str:
    actions = [r.action for r in recipients]
    if "failed" in actions:
        return Subtype.INBOUND_NDR.value
    return Subtype.INBOUND_REPORT.value if actions else default


@attrs.frozen
class Reading:
    """What a message is, as far as the message alone tells.

    ``report`` is the answer, unless ``if_outbound`` is set: then one of
    ``returned_ids`` being an outbound interaction's makes ``if_outbound`` the
    answer (the specification's second rule), and ``report`` is the answer
    otherwise.
    """

    report: Report | None
    if_outbound: Report | None = None
    returned_ids: tuple[str, ...] = ()


def read_report(message: ParsedMessage, ndr_senders: list[str]) -> Reading:
    """Read *message* as a delivery report; pure (no store, no I/O).

    Rules, in order: a ``multipart/report`` is decided by its ``report-type``
    (other types than ``delivery-status`` are not ours: None); a
    delivery-status part is read by its per-recipient actions; otherwise a
    returned message with a Message-ID makes an NDR when From contains one of
    *ndr_senders* or the id is an outbound interaction's; otherwise vendor
    formats are recognised by :func:`vendor.looks_like_bounce`.
    """
    if message.is_wrapped:
        return Reading(None)
    found = find_report(message)
    kind = report_type(found[1]) if found is not None else ""
    if kind and kind != "delivery-status":
        return Reading(None)
    text = delivery_status_text(message, found[0] if found is not None else None)
    if text is not None:
        status = parse_delivery_status(text)
        recipients = [recipient_from_fields(fields) for fields in status.recipients]
        # a generic Status the notice states better (OpenSMTPD: "5.0.0" / "550 5.1.1")
        recipients = notice.refine(message, recipients)
        reason = "RFC 3464 delivery-status report"
        if not recipients:  # groups missing: what the notice states instead
            recipients = notice.extract_recipients(message)
            reason += " without recipient groups; recipients read from the notice"
        bounce_like = vendor.looks_like_bounce(message, ndr_senders)
        default = Subtype.INBOUND_NDR.value if bounce_like else Subtype.INBOUND_REPORT.value
        return Reading(Report(_subtype(recipients, default), reason, tuple(recipients), status))
    if has_part(message, _FEEDBACK_TYPES):
        return Reading(None)  # an ARF feedback report, however it is wrapped
    ses = vendor.ses_notification(message)
    if ses is not None:
        kind_name, ses_recipients = ses
        if kind_name == "Complaint":
            return Reading(None)
        return Reading(
            Report(
                _subtype(ses_recipients, Subtype.INBOUND_NDR.value),
                f"Amazon SES {kind_name.lower()} notification",
                tuple(ses_recipients),
            )
        )
    returned = tuple(returned_message_ids(message))
    if not returned:
        return Reading(_vendor_report(message, ndr_senders))
    recipients = notice.extract_recipients(message)
    returned_report = Report(
        _subtype(recipients, Subtype.INBOUND_NDR.value),
        "returned message from a mail system or of an outbound interaction",
        tuple(recipients),
    )
    if vendor.sender_is_mail_system(message, ndr_senders):
        return Reading(returned_report)
    return Reading(_vendor_report(message, ndr_senders), returned_report, returned)


def _vendor_report(message: ParsedMessage, ndr_senders: list[str]) -> Report | None:
    if not vendor.looks_like_bounce(message, ndr_senders):
        return None
    recipients = notice.extract_recipients(message, first=vendor.list_rejection(message))
    return Report(
        _subtype(recipients, Subtype.INBOUND_NDR.value),
        "bounce in a vendor format (no delivery-status part)",
        tuple(recipients),
    )


async def returns_outbound(returned_ids: Iterable[str], is_outbound: IsOutbound) -> bool:
    """The store step of the second rule: is one of *returned_ids* an outbound
    interaction's? One look-up per id, in order, until one is."""
    for mid in returned_ids:
        if await is_outbound(mid):
            return True
    return False


def parent_candidates(message: ParsedMessage, status: DeliveryStatus | None = None) -> list[str]:
    """Message-IDs that may be the reported outbound message's, best first: the
    returned message's, the report's ``Original-Envelope-Id`` (postroom's
    outbound mail may use its Message-ID as ENVID), then ``Message-ID:`` lines
    quoted in the notice."""
    ids = list(returned_message_ids(message))
    if status is None:
        found = find_report(message)
        text = delivery_status_text(message, found[0] if found is not None else None)
        status = parse_delivery_status(text) if text is not None else None
    envid = status.message_field("Original-Envelope-Id") if status is not None else None
    if envid:
        ids += message_id_of(xtext_decode(envid.strip()))
    for match in _INLINE_MESSAGE_ID.finditer(message.text or ""):
        ids += parse_message_ids(match.group(1), single=True)
    return [mid for mid in dict.fromkeys(ids) if mid != message.message_id]

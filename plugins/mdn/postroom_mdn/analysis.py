"""What ``postroom_analyze`` finds in a message, for the gateway's hooks.

Reading a receipt means reading parts anyone can send, so :func:`analyse` runs
in the worker process that parsed the message, under the per-message budget.
What it finds is plain, picklable data under :data:`KEY` of
``message.analysis``: ``None`` for anything but a receipt, else a
:class:`Receipt` with the verdict already built and the Message-ID to look up.
The gateway never reads the message itself: a message without this analysis is
an error (:func:`of`).
"""

from __future__ import annotations

import attrs

from postroom.api import (  # NotAnalysed: ParsedMessage.analysed raises it
    NotAnalysed,  # noqa: F401
    ParsedMessage,
    Subtype,
    Verdict,
)
from postroom_mdn.report import attached_data, read_mdn

#: the key of ``message.analysis`` this plugin fills
KEY = "mdn.receipt"
#: a receipt is a receipt, whatever a generic classifier thinks of its text
PRIORITY = 100


@attrs.frozen
class Receipt:
    """A receipt: its verdict (``InboundDisposition`` with the specification's
    keys) and the Message-ID of the message it acknowledges, if it names one."""

    verdict: Verdict
    original_message_id: str | None


def analyse(message: ParsedMessage) -> Receipt | None:
    """The receipt *message* is, or None; pure, for the worker process."""
    mdn = read_mdn(message)
    if mdn is None:
        return None
    verdict = Verdict(
        Subtype.INBOUND_DISPOSITION.value,
        priority=PRIORITY,
        reason=f"message disposition notification: {mdn.disposition.type or 'no disposition'}",
        attached_data=dict(attached_data(mdn)),
    )
    return Receipt(verdict, mdn.original_message_id)


def of(message: ParsedMessage) -> Receipt | None:
    """This plugin's analysis of *message*; :class:`NotAnalysed` when it is missing."""
    found: Receipt | None = message.analysed(KEY, (Receipt, type(None)))
    return found

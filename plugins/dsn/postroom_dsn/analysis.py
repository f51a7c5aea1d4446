"""What ``postroom_analyze`` finds in a message, and the gateway's step over it.

Reading a report means scanning text anyone can send, so all of it runs in the
worker process that parsed the message, under the per-message budget
(:func:`analyse`). What it finds is plain, picklable data under
:data:`KEY` of ``message.analysis``: the verdicts, already built, and the
Message-IDs the gateway looks up in the store (:func:`decide` for the
specification's second rule, ``postroom_enrich`` for the parent). The gateway
never scans the message itself: a message without this analysis is an error
(:func:`of`).
"""

from __future__ import annotations

import attrs

from postroom.api import (
    NotAnalysed,  # noqa: F401 (ParsedMessage.analysed raises it)
    ParsedMessage,
    Verdict,
)
from postroom_dsn.classify import (
    IsOutbound,
    Report,
    parent_candidates,
    read_report,
    returns_outbound,
)

#: the key of ``message.analysis`` this plugin fills
KEY = "dsn.analysis"
#: above the default verdict: a report is a report, whatever its text says
PRIORITY = 100
#: most Message-IDs the gateway looks up for one message, for each question
#: (rule two, the parent): a report names one or two; a message naming
#: thousands must not cost thousands of store queries
MAX_LOOKUPS = 10


@attrs.frozen
class Analysis:
    """What the message says, as far as it alone tells (as
    :class:`~postroom_dsn.classify.Reading`, with the verdicts built).

    ``verdict`` is the plugin's classification unless ``if_outbound`` is set
    and one of ``returned_ids`` is an outbound interaction's; then it is
    ``if_outbound``. ``parent_candidates`` are the Message-IDs that may be the
    reported outbound message's, best first. Both lists hold at most
    :data:`MAX_LOOKUPS` ids.
    """

    verdict: Verdict | None
    if_outbound: Verdict | None = None
    returned_ids: tuple[str, ...] = ()
    parent_candidates: tuple[str, ...] = ()


def _verdict(report: Report | None) -> Verdict | None:
    if report is None:
        return None
    return Verdict(
        subtype=report.subtype,
        priority=PRIORITY,
        reason=report.reason,
        attached_data=report.attached_data,
    )


def analyse(message: ParsedMessage, ndr_senders: list[str]) -> Analysis:
    """Everything the plugin reads from *message*; pure, for the worker process."""
    reading = read_report(message, ndr_senders)
    status = reading.report.status if reading.report is not None else None
    return Analysis(
        verdict=_verdict(reading.report),
        if_outbound=_verdict(reading.if_outbound),
        returned_ids=reading.returned_ids[:MAX_LOOKUPS],
        parent_candidates=tuple(parent_candidates(message, status)[:MAX_LOOKUPS]),
    )


async def decide(analysis: Analysis, is_outbound: IsOutbound) -> Verdict | None:
    """The classification: the store look-ups of the second rule, nothing else."""
    if analysis.if_outbound is not None and await returns_outbound(
        analysis.returned_ids, is_outbound
    ):
        return analysis.if_outbound
    return analysis.verdict


def of(message: ParsedMessage) -> Analysis:
    """This plugin's analysis of *message*; :class:`NotAnalysed` when it is missing."""
    return message.analysed(KEY, Analysis)

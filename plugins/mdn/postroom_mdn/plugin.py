"""The ``mdn`` hook plugin: read receipts in and out.

* ``postroom_analyze`` (in the worker process that parsed the message): reads
  the receipt, if the message is one, and builds its verdict
  (:mod:`postroom_mdn.analysis`).
* ``postroom_classify``: a message disposition notification becomes an
  ``InboundDisposition`` with the ``_MDNInfo.*`` and ``_MDNRawInfo.*`` keys of
  the specification (section 2), as analysed. Priority 100: a receipt is a
  receipt, whatever a generic classifier thinks of its text.
* ``postroom_enrich``: the receipt becomes a child of the outbound
  interaction whose Message-ID it names (``Original-Message-ID``, else the
  returned message's), overriding the built-in threading, which may have
  found an inbound message with the same id; when there is no such outbound
  interaction, what threading found stays. The store look-up is all it does.
* ``postroom_committed``: the outbound interaction the receipt answers records
  its recipient as ``displayed`` (``delivered`` for another disposition), and its
  status follows (:mod:`postroom_mdn.delivery`; the store's ``record_delivery``
  is idempotent, so a receipt processed again changes nothing).
* ``postroom_envelope``: ``options["mdn"]`` on a send request adds
  ``Disposition-Notification-To`` (see :mod:`postroom_mdn.request`).
"""

from __future__ import annotations

from typing import Any

from postroom.api import (
    Context,
    Envelope,
    Interaction,
    InteractionType,
    OutboundRequest,
    ParsedMessage,
    Subtype,
    Verdict,
    hookimpl,
)
from postroom_mdn import analysis
from postroom_mdn.delivery import delivery_report
from postroom_mdn.request import HEADER, OPTION, receipt_address

PRIORITY = analysis.PRIORITY


@hookimpl
def postroom_analyze(message: ParsedMessage) -> dict[str, Any]:
    return {analysis.KEY: analysis.analyse(message)}


@hookimpl
def postroom_classify(message: ParsedMessage) -> Verdict | None:
    receipt = analysis.of(message)
    return receipt.verdict if receipt is not None else None


@hookimpl
async def postroom_enrich(message: ParsedMessage, interaction: Interaction, ctx: Context) -> None:
    receipt = analysis.of(message)
    if receipt is None or receipt.original_message_id is None:
        return
    found: list[Interaction] = await ctx.store.find_by_message_id(
        receipt.original_message_id, type=InteractionType.OUTBOUND.value
    )
    if found:
        interaction.parent_id = found[0].id


@hookimpl
async def postroom_committed(interaction: Interaction, ctx: Context) -> None:
    """The answered outbound interaction's recipient: displayed (or delivered)."""
    if interaction.subtype != Subtype.INBOUND_DISPOSITION.value or not interaction.parent_id:
        return
    report = delivery_report(interaction.attached_data)
    if report is not None:
        await ctx.store.record_delivery(interaction.parent_id, interaction.id, [report])


@hookimpl
def postroom_envelope(request: OutboundRequest, envelope: Envelope) -> None:
    address = receipt_address(request.options.get(OPTION), request.from_addr)
    if address is not None:
        envelope.extra_headers[HEADER] = address

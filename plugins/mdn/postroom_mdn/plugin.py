"""The ``mdn`` hook plugin: read receipts in and out.

* ``postroom_classify``: a message disposition notification becomes an
  ``InboundDisposition`` with the ``_MDNInfo.*`` and ``_MDNRawInfo.*`` keys of
  the specification (section 2). Priority 100: a receipt is a receipt,
  whatever a generic classifier thinks of its text.
* ``postroom_enrich``: the receipt becomes a child of the outbound
  interaction whose Message-ID it names (``Original-Message-ID``, else the
  returned message's), overriding the built-in threading, which may have
  found an inbound message with the same id; when there is no such outbound
  interaction, what threading found stays.
* ``postroom_envelope``: ``options["mdn"]`` on a send request adds
  ``Disposition-Notification-To`` (see :mod:`postroom_mdn.request`).
"""

from __future__ import annotations

from postroom import hookimpl
from postroom.context import Context
from postroom.model import (
    Envelope,
    Interaction,
    InteractionType,
    OutboundRequest,
    ParsedMessage,
    Subtype,
    Verdict,
)
from postroom_mdn.report import attached_data, read_mdn
from postroom_mdn.request import HEADER, OPTION, receipt_address

PRIORITY = 100


@hookimpl
def postroom_classify(message: ParsedMessage) -> Verdict | None:
    mdn = read_mdn(message)
    if mdn is None:
        return None
    return Verdict(
        Subtype.INBOUND_DISPOSITION.value,
        priority=PRIORITY,
        reason=f"message disposition notification: {mdn.disposition.type or 'no disposition'}",
        attached_data=dict(attached_data(mdn)),
    )


@hookimpl
async def postroom_enrich(message: ParsedMessage, interaction: Interaction, ctx: Context) -> None:
    mdn = read_mdn(message)
    if mdn is None or mdn.original_message_id is None:
        return
    found: list[Interaction] = await ctx.store.find_by_message_id(
        mdn.original_message_id, type=InteractionType.OUTBOUND.value
    )
    if found:
        interaction.parent_id = found[0].id


@hookimpl
def postroom_envelope(request: OutboundRequest, envelope: Envelope) -> None:
    address = receipt_address(request.options.get(OPTION), request.from_addr)
    if address is not None:
        envelope.extra_headers[HEADER] = address

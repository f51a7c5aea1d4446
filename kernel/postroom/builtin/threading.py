"""Threading: a reply becomes a child of the interaction it answers.

The parent is found from In-Reply-To first, then References from the most
recent id backwards. Among interactions sharing a Message-ID an outbound one
(what the centre sent) is preferred, then the oldest inbound one. Plugins
that know better (the DSN plugin's returned Message-ID) set ``parent_id``
themselves; this one leaves a parent already set alone.
"""

from __future__ import annotations

from postroom import hookimpl
from postroom.context import Context
from postroom.model import Interaction, InteractionType, ParsedMessage


def candidate_ids(message: ParsedMessage) -> list[str]:
    seen: dict[str, None] = {}
    for mid in [*message.in_reply_to, *reversed(message.references)]:
        if mid and mid != message.message_id:
            seen.setdefault(mid, None)
    return list(seen)


@hookimpl
async def postroom_enrich(message: ParsedMessage, interaction: Interaction, ctx: Context) -> None:
    if interaction.parent_id is not None:
        return
    for mid in candidate_ids(message):
        found: list[Interaction] = await ctx.store.find_by_message_id(mid)
        if not found:
            continue
        outbound = [i for i in found if i.type == InteractionType.OUTBOUND.value]
        interaction.parent_id = (outbound or found)[0].id
        return

"""Threading: a reply becomes a child of the interaction it answers.

The parent is found from In-Reply-To first, then References from the most
recent id backwards (at most :data:`MAX_CANDIDATES` look-ups). Among
interactions sharing a Message-ID an outbound one (what the centre sent) is
preferred, then the oldest inbound one. Plugins
that know better (the DSN plugin's returned Message-ID) set ``parent_id``
themselves; this one leaves a parent already set alone.
"""

from __future__ import annotations

from postroom import hookimpl
from postroom.context import Context
from postroom.model import Interaction, InteractionType, ParsedMessage

#: Message-IDs looked up per message, nearest first. A reply's parent is its
#: In-Reply-To or the last of its References; anyone can send 60,000 ids, and
#: each would be a store query.
MAX_CANDIDATES = 20


def candidate_ids(message: ParsedMessage) -> list[str]:
    seen: dict[str, None] = {}
    nearest = [*message.in_reply_to[:MAX_CANDIDATES], *message.references[::-1][:MAX_CANDIDATES]]
    for mid in nearest:
        if mid and mid != message.message_id:
            seen.setdefault(mid, None)
            if len(seen) == MAX_CANDIDATES:
                break
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

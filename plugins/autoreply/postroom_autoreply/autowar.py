"""Auto-reply war accounting: automatic mails exchanged with one address, in a sliding window.

Two automatic responders answering each other exchange a mail each way per
round, within seconds, forever. Headers stop the well-behaved ones; counting
stops the rest. The exchange log (:mod:`postroom_autoreply.exchanges`, this
plugin's own table in the store) keeps one row per automatic mail received
from (``in``) or sent to (``out``) an address; recording the same interaction
again counts once, so a retried hand-off never inflates the count.

Time is the kernel's clock (``ctx.clock``), so tests drive it with
``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from postroom.api import Context
from postroom_autoreply import exchanges
from postroom_autoreply.options import AUTOWAR_MAX_REPLY_COUNT, Settings

log = logging.getLogger(__name__)

IN = exchanges.IN
OUT = exchanges.OUT


def now(ctx: Context) -> datetime:
    return datetime.fromtimestamp(ctx.clock.seconds(), UTC)


def supported(ctx: Context) -> bool:
    """Whether the store can keep the exchange log (start-up refuses one that
    cannot while detection is on, so this is False only with it off)."""
    if exchanges.available(ctx.store):
        return True
    log.warning("the store keeps no plugin tables: auto-reply war detection is off")
    return False


async def over_budget(
    ctx: Context, settings: Settings, address: str, adding: int = 1
) -> str | None:
    """A reason when *adding* more automatic mails would exceed the budget of *address*.

    The window is ``[now - autowar-detect-period, now]``, both ends included.
    """
    since = now(ctx) - settings.period
    count = await exchanges.count(ctx.store, address, since)
    total = count + adding
    if total <= settings.max_count:
        return None
    return (
        f"auto-reply war: {total} automatic mails exchanged with {address} within "
        f"{settings.period_text} ({AUTOWAR_MAX_REPLY_COUNT} {settings.max_count})"
    )


async def record(
    ctx: Context, addresses: Iterable[str], direction: str, interaction_id: str
) -> None:
    """Record one automatic mail per address; idempotent by interaction and direction."""
    at = now(ctx)
    seen: set[str] = set()
    for address in addresses:
        key = address.strip().lower()
        if key and key not in seen:
            seen.add(key)
            await exchanges.record(ctx.store, key, direction, at, interaction_id)

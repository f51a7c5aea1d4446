"""The exchange log: this plugin's own table in the store's database.

One row per automatic mail received from (``in``) or sent to (``out``) an
address, in ``autoreply_exchanges``; recording the same mail again counts
once. The table and its migrations (``sql/<dialect>/``) belong to this
plugin: the kernel applies them at ``open()`` in the plugin's own version
track (``postroom_store_migrations``), and the queries run through the store's
optional :class:`~postroom.api.ISQLAccess` capability. A store without it, or
of a dialect this plugin has no migrations for, is refused at start-up while
auto-reply war detection is on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from postroom.api import (
    ConfigError,
    ISQLAccess,
    PluginMigrations,
    Tx,
    hookimpl,
    to_utc,
)
from postroom_autoreply.options import Settings

#: this plugin's version track in the store, and its tables' prefix
OWNER = "autoreply"

IN = "in"
OUT = "out"


@hookimpl
def postroom_store_migrations(dialect: str) -> PluginMigrations | None:
    return PluginMigrations.from_package(OWNER, __package__ or "postroom_autoreply", dialect)


@hookimpl
async def postroom_startup(kernel: Any) -> None:
    """Refuse to start when war detection is on and the store cannot keep the log."""
    if not Settings.of(kernel.ctx).autowar:
        return
    store = kernel.store  # off the reactor thread, as every store call
    driver_name = kernel.config.store_driver
    if not ISQLAccess.providedBy(store):
        raise ConfigError(
            f"store driver {driver_name!r}: auto-reply war detection keeps its log in "
            "the store's database, and this driver keeps no plugin tables (ISQLAccess); "
            "use the sqlite or postgresql store, or set email-processing "
            "enable-autowar-detect false"
        )
    if await kernel.store.plugin_schema_version(OWNER) == 0:
        raise ConfigError(
            f"store driver {driver_name!r}: auto-reply war detection keeps its log in "
            f"the store's database and has no tables for its SQL dialect "
            f"{kernel.store_driver.dialect_name!r}; set email-processing "
            "enable-autowar-detect false"
        )


def available(store: Any) -> bool:
    """Whether *store* (``ctx.store``) can keep the log."""
    return bool(ISQLAccess.providedBy(store))


def normalize(address: str) -> str:
    return address.strip().strip("<>").strip().lower()


async def record(
    store: Any,
    address: str,
    direction: str,
    at: datetime | float,
    interaction_id: str | None = None,
) -> None:
    """Record one automatic mail exchanged with *address*; once per mail and direction."""
    if direction not in (IN, OUT):
        raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
    params = (normalize(address), direction, to_utc(at), interaction_id)

    def work(tx: Tx) -> None:
        tx.execute(
            "INSERT INTO autoreply_exchanges (address, direction, at, interaction_id) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            params,
        )

    await store.run_in_transaction(work)


async def count(store: Any, address: str, since: datetime | float) -> int:
    """Automatic mails exchanged with *address* at or after *since*."""
    params = (normalize(address), to_utc(since))

    def work(tx: Tx) -> int:
        return int(
            tx.scalar(
                "SELECT COUNT(*) FROM autoreply_exchanges WHERE address = ? AND at >= ?", params
            )
        )

    return int(await store.run_in_transaction(work, write=False))


@hookimpl
async def postroom_erase(
    address: str, interaction_ids: list[str], dry_run: bool, ctx: Any
) -> dict[str, int]:
    """Erasure (``postroom erase``): the log's rows for *address* and for the
    interactions erased; with *dry_run*, only counted."""
    store: Any = ctx.store
    if not ISQLAccess.providedBy(store):
        return {}
    version: Any = store.plugin_schema_version(OWNER)  # a Deferred through ctx.store
    if await version == 0:
        return {}
    key = normalize(address)
    ids = list(interaction_ids)

    def work(tx: Tx) -> int:
        verb = "SELECT COUNT(*)" if dry_run else "DELETE"
        run = tx.scalar if dry_run else tx.execute
        rows = int(run(f"{verb} FROM autoreply_exchanges WHERE address = ?", (key,)) or 0)
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            marks = ", ".join(["?"] * len(batch))
            where = f"interaction_id IN ({marks}) AND address <> ?"
            rows += int(run(f"{verb} FROM autoreply_exchanges WHERE {where}", (*batch, key)) or 0)
        return rows

    rows = int(await store.run_in_transaction(work, write=not dry_run))
    return {"autoreply_exchanges": rows} if rows else {}

"""Events: the record behind ``GET /events`` (:mod:`postroom.events`).

An event is written in the transaction of the change it tells of where the
store makes that change (a commit, a hand-off outcome), else right after it.
Its ``seq`` is the resume id: on a database with concurrent writers the table
is locked for the rest of the transaction before an event is added, so events
become visible in ``seq`` order and a reader resuming after an id misses none.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from postroom.model import Event
from postroom.store.sql.core import SQLCore
from postroom.store.sql.tx import Tx

#: (type, interaction id, target, reason) of an event to record
EventRow = tuple[str, str | None, str | None, str | None]

#: longest reason kept with an event (an error message, never a body)
MAX_REASON = 500


def insert_events(tx: Tx, at: datetime, events: Iterable[EventRow]) -> None:
    """Add *events* inside the caller's transaction, stamped *at*."""
    rows = list(events)
    if not rows:
        return
    if tx.dialect.concurrent_writers:
        tx.execute("LOCK TABLE events IN EXCLUSIVE MODE")
    for kind, interaction_id, target, reason in rows:
        tx.execute(
            "INSERT INTO events (type, at, interaction_id, target, reason) VALUES (?, ?, ?, ?, ?)",
            (kind, at, interaction_id, target, reason[:MAX_REASON] if reason else reason),
        )


class EventRecords(SQLCore):
    """``events``: appended to, read after a seq, pruned by count and age."""

    def add_events(self, events: Iterable[EventRow]) -> None:
        """Record *events* (changes made elsewhere, e.g. a send's outcome)."""
        rows = list(events)
        if rows:
            now = self.now()
            self._write(lambda tx: insert_events(tx, now, rows))

    def events_after(
        self, seq: int, limit: int = 500, types: Collection[str] | None = None
    ) -> list[Event]:
        """Up to *limit* events after *seq*, oldest first; only *types* when given."""
        where = "seq > ?"
        params: list[Any] = [seq]
        if types:
            where += f" AND type IN ({', '.join('?' * len(types))})"
            params.extend(types)

        def work(tx: Tx) -> list[Event]:
            rows = tx.all(
                "SELECT seq, type, at, interaction_id, target, reason FROM events "
                f"WHERE {where} ORDER BY seq LIMIT ?",
                (*params, limit),
            )
            return [
                Event(int(r[0]), r[1], tx.as_datetime(r[2]), r[3], r[4], r[5]) for r in rows
            ]

        return self._read(work)

    def last_event_seq(self) -> int:
        """The newest event's seq (0: none yet)."""
        return int(self._read(lambda tx: tx.scalar("SELECT MAX(seq) FROM events")) or 0)

    def prune_events(self, keep: int, days: float) -> int:
        """Delete all but the newest *keep* events, and those older than *days*
        (0: no age limit); the number deleted."""
        cutoff = self.now() - timedelta(days=days)

        def work(tx: Tx) -> int:
            newest = int(tx.scalar("SELECT MAX(seq) FROM events") or 0)
            deleted = tx.execute("DELETE FROM events WHERE seq <= ?", (newest - keep,))
            if days:
                deleted += tx.execute("DELETE FROM events WHERE at < ?", (cutoff,))
            return deleted

        return self._write(work)

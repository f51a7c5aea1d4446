"""Removing stored data for good: the retention job's purges, in bounded batches.

Two purges, each run as many short write transactions (a batch of at most
``limit`` rows and about :data:`BATCH_BYTES` of raw bytes), so neither SQLite's
single writer nor a PostgreSQL table is held for long:

- :meth:`PurgeRecords.purge_raw`: raw messages older than a time. Their
  interactions stay, with ``raw_id`` NULL and ``raw_purged_at`` /
  ``raw_purged_reason`` set, so a download says the raw message was purged;
  outbox files of finished entries go with their bytes; a released quarantine
  entry keeps its row without bytes.
- :meth:`PurgeRecords.purge_interactions`: whole interactions older than a time,
  with their raw message, body pieces, hand-off row, outbox entry and files;
  their dedupe keys become tombstones (:mod:`postroom.store.sql.tombstones`), so
  mail left on a server is not imported again.

Never purged, whatever their age (they are still needed): the raw message of an
interaction whose hand-off or side effects are not done, of an open quarantine
entry, and the files of an outbox entry not yet sent or failed (``queued``,
``sending``); an interaction with such a hand-off or outbox entry stays whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from postroom.store.sql.interactions import InteractionRecords
from postroom.store.sql.tx import Tx

#: raw bytes removed by one purge transaction, about (a batch stops growing past it)
BATCH_BYTES = 64 << 20

#: outbox states whose entry (and files) are still needed
UNSENT = ("queued", "sending")

#: the raw messages nothing still needs, oldest first (parameters: before, released=False)
_RAW_PURGEABLE = (
    "SELECT r.id, r.size FROM raw_messages r WHERE r.created_at < ? "
    "AND NOT EXISTS (SELECT 1 FROM interactions i JOIN handoffs h ON h.interaction_id = i.id "
    "WHERE i.raw_id = r.id AND (h.state <> 'done' OR h.after_commit <> 'done')) "
    "AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.raw_id = r.id AND q.released = ?) "
    "AND NOT EXISTS (SELECT 1 FROM outbox_files f JOIN outbox o ON o.id = f.outbox_id "
    "WHERE f.raw_id = r.id AND o.state IN ('queued', 'sending'))"
)

#: the interactions nothing still needs, oldest first (parameter: before)
_INTERACTIONS_PURGEABLE = (
    "SELECT i.id FROM interactions i WHERE i.stored_at < ? "
    "AND NOT EXISTS (SELECT 1 FROM handoffs h WHERE h.interaction_id = i.id "
    "AND (h.state <> 'done' OR h.after_commit <> 'done')) "
    "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = i.id "
    "AND o.state IN ('queued', 'sending'))"
)


#: the tables whose rows :meth:`PurgeRecords._remove_interactions` deletes by name
_KNOWN_DEPENDENTS = frozenset(
    {"outbox_files", "outbox", "handoffs", "interaction_bodies", "dedupe_keys", "interactions"}
)


def marks(values: Sequence[object]) -> str:
    return ", ".join(["?"] * len(values))


class PurgeRecords(InteractionRecords):
    """Purging raw messages and whole interactions; shared with erasure."""

    # ------------------------------------------------------------ retention

    def purge_raw(
        self, before: datetime | float, limit: int = 100, dry_run: bool = False
    ) -> dict[str, int]:
        """Purge the raw messages stored before *before* that nothing still needs,
        in batches of *limit*; counts per table (with *dry_run*: what would go)."""
        cutoff = self._dt_param(before)
        if dry_run:
            return self._read(lambda tx: self._count_raw(tx, cutoff))
        totals: dict[str, int] = {}
        while True:
            counts, more = self._write(lambda tx: self._purge_raw_batch(tx, cutoff, limit))
            _add(totals, counts)
            if not more:
                return totals

    def purge_interactions(
        self, before: datetime | float, limit: int = 100, dry_run: bool = False
    ) -> dict[str, int]:
        """Purge whole interactions stored before *before* that nothing still
        needs, in batches of *limit*; counts per table. (Stored, not created: a
        mail's own Date may say anything.)"""
        cutoff = self._dt_param(before)
        if dry_run:
            return self._read(lambda tx: self._count_interactions(tx, cutoff))
        totals: dict[str, int] = {}
        while True:
            counts, more = self._write(lambda tx: self._purge_interactions_batch(tx, cutoff, limit))
            _add(totals, counts)
            if not more:
                return totals

    def _count_raw(self, tx: Tx, cutoff: object) -> dict[str, int]:
        rows = tx.all(_RAW_PURGEABLE, (cutoff, False))
        return {"raw_messages": len(rows)} if rows else {}

    def _count_interactions(self, tx: Tx, cutoff: object) -> dict[str, int]:
        ids = [str(row[0]) for row in tx.all(_INTERACTIONS_PURGEABLE, (cutoff,))]
        return {"interactions": len(ids)} if ids else {}

    def _purge_raw_batch(self, tx: Tx, cutoff: object, limit: int) -> tuple[dict[str, int], bool]:
        rows = tx.all(
            f"{_RAW_PURGEABLE} ORDER BY r.created_at, r.id LIMIT ?", (cutoff, False, limit)
        )
        chosen: list[str] = []
        size = 0
        for raw_id, raw_size in rows:
            if chosen and size + int(raw_size) > BATCH_BYTES:
                break
            chosen.append(str(raw_id))
            size += int(raw_size)
        counts = self._drop_raws(tx, chosen, "retention")
        return counts, len(rows) == limit or len(chosen) < len(rows)

    def _purge_interactions_batch(
        self, tx: Tx, cutoff: object, limit: int
    ) -> tuple[dict[str, int], bool]:
        rows = tx.all(
            f"{_INTERACTIONS_PURGEABLE} ORDER BY i.stored_at, i.seq LIMIT ?", (cutoff, limit)
        )
        ids = [str(row[0]) for row in rows]
        return self._remove_interactions(tx, ids), len(ids) == limit

    # ------------------------------------------------------------- shared

    def _drop_raws(self, tx: Tx, raw_ids: Sequence[str], reason: str) -> dict[str, int]:
        """Delete the raw messages *raw_ids*; what pointed at them says they were purged."""
        counts: dict[str, int] = {}
        if not raw_ids:
            return counts
        ids = list(raw_ids)
        m = marks(ids)
        now = self._dt_param(self.now())
        counts["interactions.raw_purged"] = tx.execute(
            f"UPDATE interactions SET raw_id = NULL, raw_purged_at = ?, raw_purged_reason = ? "
            f"WHERE raw_id IN ({m})",
            (now, reason, *ids),
        )
        counts["quarantine.raw_purged"] = tx.execute(
            f"UPDATE quarantine SET raw_id = NULL WHERE raw_id IN ({m})", ids
        )
        counts["outbox_files"] = tx.execute(f"DELETE FROM outbox_files WHERE raw_id IN ({m})", ids)
        counts["raw_chunks"] = tx.execute(f"DELETE FROM raw_chunks WHERE raw_id IN ({m})", ids)
        counts["raw_messages"] = tx.execute(f"DELETE FROM raw_messages WHERE id IN ({m})", ids)
        return {key: value for key, value in counts.items() if value}

    def _remove_interactions(self, tx: Tx, interaction_ids: Sequence[str]) -> dict[str, int]:
        """Delete interactions whole: body pieces, hand-off row, outbox entry and
        files, dedupe keys (kept as tombstones), and raw messages nothing else uses."""
        counts: dict[str, int] = {}
        ids = list(interaction_ids)
        if not ids:
            return counts
        m = marks(ids)
        raw_ids = {
            str(row[0])
            for row in tx.all(
                f"SELECT raw_id FROM interactions WHERE id IN ({m}) AND raw_id IS NOT NULL", ids
            )
        }
        raw_ids.update(
            str(row[0])
            for row in tx.all(f"SELECT raw_id FROM outbox_files WHERE outbox_id IN ({m})", ids)
        )
        # rows of tables this module does not know (newer migrations, plugins) that
        # point at the interactions or their outbox entries go first
        for table, column in self._dependents(tx):
            deleted = tx.execute(f'DELETE FROM "{table}" WHERE "{column}" IN ({m})', ids)
            _add(counts, {table: deleted})
        counts["outbox_files"] = tx.execute(
            f"DELETE FROM outbox_files WHERE outbox_id IN ({m})", ids
        )
        counts["outbox"] = tx.execute(f"DELETE FROM outbox WHERE id IN ({m})", ids)
        counts["handoffs"] = tx.execute(f"DELETE FROM handoffs WHERE interaction_id IN ({m})", ids)
        counts["interaction_bodies"] = tx.execute(
            f"DELETE FROM interaction_bodies WHERE interaction_id IN ({m})", ids
        )
        counts["dedupe_keys"] = self._bury_interactions(tx, ids)
        counts["interactions"] = tx.execute(f"DELETE FROM interactions WHERE id IN ({m})", ids)
        unused = self._unused_raws(tx, sorted(raw_ids))
        _add(counts, {k: v for k, v in self._drop_raws(tx, unused, "retention").items()
                      if not k.endswith(".raw_purged")})  # fmt: skip
        return {key: value for key, value in counts.items() if value}

    def _dependents(self, tx: Tx) -> list[tuple[str, str]]:
        """(table, column) of the foreign keys to ``interactions.id`` or ``outbox.id``
        other than those :meth:`_remove_interactions` deletes itself."""
        try:
            keys = self.dialect.foreign_keys(tx)
        except NotImplementedError:
            return []
        return sorted(
            (table, column)
            for table, column, target, target_column in keys
            if target in ("interactions", "outbox")
            and target_column == "id"
            and table not in _KNOWN_DEPENDENTS
        )

    def _unused_raws(self, tx: Tx, raw_ids: Sequence[str]) -> list[str]:
        """Those of *raw_ids* no interaction, quarantine entry or outbox file uses."""
        unused = []
        for raw_id in raw_ids:
            used = tx.scalar(
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM interactions WHERE raw_id = ?) "
                "OR EXISTS (SELECT 1 FROM quarantine WHERE raw_id = ?) "
                "OR EXISTS (SELECT 1 FROM outbox_files WHERE raw_id = ?)",
                (raw_id, raw_id, raw_id),
            )
            if used is None:
                unused.append(raw_id)
        return unused


def _add(totals: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        totals[key] = totals.get(key, 0) + value

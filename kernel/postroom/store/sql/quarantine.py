"""Failed attempts and quarantine: a message that keeps failing is set aside with its bytes."""

from __future__ import annotations

from postroom.model import QuarantineEntry, RawRef, new_id
from postroom.store.sql.core import Writable
from postroom.store.sql.raw import RawRecords
from postroom.store.sql.tx import Row, Tx

QUARANTINE_SELECT = (
    "SELECT q.id, q.mailbox, q.source_key, q.reason, q.attempts, r.sha256, "
    "q.created_at, q.updated_at, q.released "
    "FROM quarantine q LEFT JOIN raw_messages r ON r.id = q.raw_id"
)


class QuarantineRecords(RawRecords):
    """``failures`` (attempts per message) and ``quarantine`` (messages set aside)."""

    def record_failure(
        self, mailbox: str, source_key: str, reason: str, raw: RawRef | None = None
    ) -> int:
        """Count a failed attempt; the raw's digest is kept to tell re-fetches apart."""

        def work(tx: Tx) -> int:
            stamp = self._dt_param(self.now())
            return int(
                tx.scalar(
                    "INSERT INTO failures (mailbox, source_key, attempts, last_reason, raw_sha256, "
                    "created_at, updated_at) VALUES (?, ?, 1, ?, ?, ?, ?) "
                    "ON CONFLICT (mailbox, source_key) DO UPDATE SET "
                    "attempts = failures.attempts + 1, last_reason = excluded.last_reason, "
                    "raw_sha256 = COALESCE(excluded.raw_sha256, failures.raw_sha256), "
                    "updated_at = excluded.updated_at RETURNING attempts",
                    (mailbox, source_key, reason, raw.sha256 if raw else None, stamp, stamp),
                )
            )

        return self._write(work)

    def clear_failures(self, mailbox: str, source_key: str) -> None:
        """Forget the failed attempts of a message (it was committed, or released)."""
        self._write(
            lambda tx: tx.execute(
                "DELETE FROM failures WHERE mailbox = ? AND source_key = ?", (mailbox, source_key)
            )
        )

    def quarantine(
        self, mailbox: str, source_key: str, reason: str, raw: RawRef | None = None
    ) -> QuarantineEntry:
        """Quarantine a message; quarantining it again updates the open entry."""

        def work(tx: Tx) -> QuarantineEntry:
            now = self.now()
            attempts = tx.scalar(
                "SELECT attempts FROM failures WHERE mailbox = ? AND source_key = ?",
                (mailbox, source_key),
            )
            existing = tx.one(
                "SELECT id, raw_id FROM quarantine "
                "WHERE mailbox = ? AND source_key = ? AND released = ?",
                (mailbox, source_key, False),
            )
            raw_id = existing[1] if existing is not None else None
            if raw_id is None and raw is not None:
                raw_id = self._store_raw(tx, raw, now)
            if existing is None:
                entry_id = new_id()
                tx.execute(
                    "INSERT INTO quarantine (id, mailbox, source_key, reason, attempts, raw_id, "
                    "released, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry_id, mailbox, source_key, reason, int(attempts or 0), raw_id, False,
                     self._dt_param(now), self._dt_param(now)),
                )  # fmt: skip
            else:
                entry_id = existing[0]
                tx.execute(
                    "UPDATE quarantine SET reason = ?, attempts = ?, raw_id = ?, updated_at = ? "
                    "WHERE id = ?",
                    (reason, int(attempts or 0), raw_id, self._dt_param(now), entry_id),
                )
            row = tx.one(f"{QUARANTINE_SELECT} WHERE q.id = ?", (entry_id,))
            assert row is not None
            return self._quarantine_entry(row)

        return self._write(work)

    def quarantined_source_keys(self, mailbox: str) -> set[str]:
        """Source keys of *mailbox* held in quarantine: skipped by its passes."""
        rows = self._read(
            lambda tx: tx.all(
                "SELECT source_key FROM quarantine WHERE mailbox = ? AND released = ?",
                (mailbox, False),
            )
        )
        return {row[0] for row in rows}

    def is_quarantined(self, mailbox: str, source_key: str) -> bool:
        row = self._read(
            lambda tx: tx.one(
                "SELECT 1 FROM quarantine WHERE mailbox = ? AND source_key = ? AND released = ?",
                (mailbox, source_key, False),
            )
        )
        return row is not None

    def list_quarantine(self, include_released: bool = False) -> list[QuarantineEntry]:
        where, params = ("", ()) if include_released else (" WHERE q.released = ?", (False,))
        rows = self._read(
            lambda tx: tx.all(f"{QUARANTINE_SELECT}{where} ORDER BY q.created_at, q.id", params)
        )
        return [self._quarantine_entry(row) for row in rows]

    def get_quarantine(self, entry_id: str) -> QuarantineEntry | None:
        row = self._read(lambda tx: tx.one(f"{QUARANTINE_SELECT} WHERE q.id = ?", (entry_id,)))
        return None if row is None else self._quarantine_entry(row)

    def read_quarantined_raw(self, entry_id: str, fileobj: Writable) -> int:
        raw_id = self._read(
            lambda tx: tx.scalar("SELECT raw_id FROM quarantine WHERE id = ?", (entry_id,))
        )
        if raw_id is None:
            raise KeyError(entry_id)
        return self._copy_raw(raw_id, fileobj, f"quarantine entry {entry_id}")

    def release_quarantine(self, entry_id: str) -> None:
        """Release an entry and reset its failure count, so the next try starts afresh."""

        def work(tx: Tx) -> None:
            row = tx.one("SELECT mailbox, source_key FROM quarantine WHERE id = ?", (entry_id,))
            if row is None:
                raise KeyError(entry_id)
            tx.execute(
                "UPDATE quarantine SET released = ?, updated_at = ? WHERE id = ?",
                (True, self._dt_param(self.now()), entry_id),
            )
            tx.execute(
                "DELETE FROM failures WHERE mailbox = ? AND source_key = ?", (row[0], row[1])
            )

        self._write(work)

    def _quarantine_entry(self, row: Row) -> QuarantineEntry:
        qid, mailbox, source_key, reason, attempts, sha, created, updated, released = row
        return QuarantineEntry(
            id=qid,
            mailbox=mailbox,
            source_key=source_key,
            reason=reason,
            attempts=int(attempts),
            raw_sha256=sha,
            created_at=self._dt_value(created),
            updated_at=self._dt_value(updated),
            released=bool(released),
        )

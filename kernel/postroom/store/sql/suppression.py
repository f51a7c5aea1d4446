"""The suppression list: hard-bounced addresses no automatic mail goes to (SPEC section 6)."""

from __future__ import annotations

from postroom.model import SuppressionEntry
from postroom.store.sql.core import SQLCore
from postroom.store.sql.tx import Row, Tx

SUPPRESSION_SELECT = (
    "SELECT address, reason, interaction_id, created_at, updated_at, hits FROM suppressions"
)


def normalize_address(address: str) -> str:
    """Addresses are compared case-insensitively (the local part too: what
    real mailbox servers do, and what a site clearing a list expects)."""
    return address.strip().strip("<>").strip().lower()


class SuppressionRecords(SQLCore):
    """``suppressions``: one row per address, counting the bounces that put it there."""

    def suppress(self, address: str, reason: str, interaction_id: str | None = None) -> None:
        """Suppress a hard-bounced address; a later bounce updates the reason and counts a
        hit. The same bounce again (the same *interaction_id* as the last) counts no hit:
        side effects run at least once."""
        key = normalize_address(address)

        def work(tx: Tx) -> None:
            stamp = self._dt_param(self.now())
            tx.execute(
                "INSERT INTO suppressions (address, reason, interaction_id, created_at, "
                "updated_at, hits) VALUES (?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, "
                "interaction_id = COALESCE(excluded.interaction_id, suppressions.interaction_id), "
                "updated_at = excluded.updated_at, hits = suppressions.hits + CASE "
                "WHEN excluded.interaction_id = suppressions.interaction_id THEN 0 ELSE 1 END",
                (key, reason, interaction_id, stamp, stamp),
            )

        self._write(work)

    def is_suppressed(self, address: str) -> SuppressionEntry | None:
        row = self._read(
            lambda tx: tx.one(
                f"{SUPPRESSION_SELECT} WHERE address = ?", (normalize_address(address),)
            )
        )
        return None if row is None else self._suppression_entry(row)

    def list_suppressions(self) -> list[SuppressionEntry]:
        rows = self._read(lambda tx: tx.all(f"{SUPPRESSION_SELECT} ORDER BY created_at, address"))
        return [self._suppression_entry(row) for row in rows]

    def unsuppress(self, address: str) -> bool:
        key = normalize_address(address)
        return bool(
            self._write(lambda tx: tx.execute("DELETE FROM suppressions WHERE address = ?", (key,)))
        )

    def _suppression_entry(self, row: Row) -> SuppressionEntry:
        address, reason, interaction_id, created, updated, hits = row
        return SuppressionEntry(
            address=address,
            reason=reason,
            interaction_id=interaction_id,
            created_at=self._dt_value(created),
            updated_at=self._dt_value(updated),
            hits=int(hits),
        )

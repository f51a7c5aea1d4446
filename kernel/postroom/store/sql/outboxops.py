"""What an operator does with the outbox: list it page by page, retry, cancel.

Each state change is one conditional update (``... WHERE state IN (...)``), so
it never races the outbox worker of a running gateway, in this process or
another: an entry the worker has claimed (``sending``) is refused, and an entry
changed here is one the worker has not claimed. The worker polls the store for
due entries, so a retry made by another process is picked up at its next poll.
"""

from __future__ import annotations

import json

from postroom.errors import OutboxConflict
from postroom.model import OutboxAttempt, OutboxEntry, OutboxState
from postroom.store.sql.outbox import (
    OUTBOX_COLUMNS,
    OUTBOX_STATUS,
    SEND_ERROR_KEY,
    OutboxRecords,
)
from postroom.store.sql.tx import Tx
from postroom.store.sql.values import to_json

#: the states an operator may retry or cancel
OPEN_STATES = (OutboxState.QUEUED.value, OutboxState.FAILED.value)
#: the most entries one page holds
MAX_PAGE = 1000
_PAGED_SELECT = (
    "SELECT " + ", ".join(f"o.{c.strip()}" for c in OUTBOX_COLUMNS.split(","))
    + ", i.seq FROM outbox o JOIN interactions i ON i.id = o.id"
)  # fmt: skip


class OutboxOperations(OutboxRecords):
    """Paging, retry and cancel over ``outbox``."""

    def list_outbox_page(
        self, state: str | None = None, limit: int = 100, after: str | None = None
    ) -> tuple[list[OutboxEntry], str | None]:
        """Entries in the order they were queued, *state* only when given, at most
        *limit* (1 to MAX_PAGE) after cursor *after*; and the cursor of the next
        page (None: this is the last). ValueError for a bad state, limit or cursor."""
        if state is not None:
            state = OutboxState(state).value
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
        if after is not None and not after.isdigit():
            raise ValueError(f"not a cursor of this listing: {after!r}")
        where: list[str] = []
        params: list[str | int] = []
        if state is not None:
            where.append("o.state = ?")
            params.append(state)
        if after is not None:
            where.append("i.seq > ?")
            params.append(int(after))
        sql = _PAGED_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._read(lambda tx: tx.all(f"{sql} ORDER BY i.seq LIMIT ?", (*params, limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        entries = [self._outbox_entry(row[:-1]) for row in rows]
        return entries, (str(rows[-1][-1]) if more and rows else None)

    def retry_outbound(self, entry_id: str) -> OutboxEntry:
        """Make a queued or failed entry due now. A failed one is queued again with a
        new round of ``gateway.max-attempts`` (``round_start``); its ``_SendError``
        leaves the interaction (``last_error`` keeps it). KeyError for an unknown
        entry, OutboxConflict for one being sent, sent or cancelled."""

        def work(tx: Tx) -> OutboxEntry:
            now = self._dt_param(self.now())
            changed = tx.execute(
                "UPDATE outbox SET round_start = CASE WHEN state = ? THEN attempts "
                "ELSE round_start END, state = ?, next_attempt_at = NULL, updated_at = ? "
                "WHERE id = ? AND state IN (?, ?)",
                (OutboxState.FAILED.value, OutboxState.QUEUED.value, now, entry_id, *OPEN_STATES),
            )
            if changed == 0:
                self._conflict(tx, entry_id, "retry")
            self._set_status(tx, entry_id, OutboxState.QUEUED, drop_error=True)
            self._add_history(tx, entry_id, OutboxAttempt(at=self.now(), result="retry-requested"))
            return self._entry(tx, entry_id)

        return self._write(work)

    def cancel_outbound(self, entry_id: str) -> OutboxEntry:
        """Cancel a queued or failed entry: it is never sent, its interaction's status
        is ``Cancelled``. KeyError for an unknown entry, OutboxConflict for one
        being sent, sent or cancelled."""

        def work(tx: Tx) -> OutboxEntry:
            now = self._dt_param(self.now())
            changed = tx.execute(
                "UPDATE outbox SET state = ?, next_attempt_at = NULL, updated_at = ? "
                "WHERE id = ? AND state IN (?, ?)",
                (OutboxState.CANCELLED.value, now, entry_id, *OPEN_STATES),
            )
            if changed == 0:
                self._conflict(tx, entry_id, "cancel")
            self._set_status(tx, entry_id, OutboxState.CANCELLED, drop_error=False)
            self._add_history(tx, entry_id, OutboxAttempt(at=self.now(), result="cancelled"))
            return self._entry(tx, entry_id)

        return self._write(work)

    def _conflict(self, tx: Tx, entry_id: str, action: str) -> None:
        state = tx.scalar("SELECT state FROM outbox WHERE id = ?", (entry_id,))
        if state is None:
            raise KeyError(entry_id)
        raise OutboxConflict(entry_id, str(state), action)

    def _set_status(self, tx: Tx, entry_id: str, state: OutboxState, drop_error: bool) -> None:
        text = tx.scalar("SELECT attached_data FROM interactions WHERE id = ?", (entry_id,))
        data = json.loads(text) if text is not None else {}
        if drop_error:
            data.pop(SEND_ERROR_KEY, None)
        tx.execute(
            "UPDATE interactions SET status = ?, attached_data = ? WHERE id = ?",
            (OUTBOX_STATUS[state], to_json(data), entry_id),
        )

    def _entry(self, tx: Tx, entry_id: str) -> OutboxEntry:
        row = tx.one(f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (entry_id,))
        assert row is not None
        return self._outbox_entry(row)

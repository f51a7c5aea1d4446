"""Hand-off: which committed interactions routing has taken, and their attempts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from postroom.model import HandoffState, Interaction
from postroom.store.sql.interactions import INTERACTION_SELECT, InteractionRecords
from postroom.store.sql.tx import Tx


class HandoffRecords(InteractionRecords):
    """``handoffs``: one row per interaction, pending until routing took it."""

    def pending_handoffs(self, limit: int = 100, after: str | None = None) -> list[Interaction]:
        """Interactions not yet handed off, in commit order; *after*: those
        committed after that interaction (the next page)."""
        return self._unfinished("h.state", limit, after)

    def pending_after_commit(self, limit: int = 100, after: str | None = None) -> list[Interaction]:
        """Interactions whose side effects (``postroom_committed``) have not run
        to the end, in commit order; *after* as for :meth:`pending_handoffs`."""
        return self._unfinished("h.after_commit", limit, after)

    def _unfinished(self, column: str, limit: int, after: str | None) -> list[Interaction]:
        params: tuple[Any, ...] = (HandoffState.PENDING.value, HandoffState.FAILED.value)
        since = ""
        if after is not None:
            since = (
                " AND (i.created_at, i.seq) > "
                "(SELECT created_at, seq FROM interactions WHERE id = ?)"
            )
            params += (after,)
        return self._read(
            lambda tx: self._interactions(
                tx,
                tx.all(
                    f"{INTERACTION_SELECT} WHERE {column} IN (?, ?){since} "
                    "ORDER BY i.created_at, i.seq LIMIT ?",
                    (*params, limit),
                ),
            )
        )

    def mark_handoff(self, interaction_id: str, state: str, error: str | None = None) -> None:
        state = HandoffState(state).value

        def work(tx: Tx) -> None:
            changed = tx.execute(
                "UPDATE handoffs SET state = ?, attempts = attempts + 1, last_error = ?, "
                "updated_at = ? WHERE interaction_id = ?",
                (state, error, self._dt_param(self.now()), interaction_id),
            )
            if changed == 0:
                raise KeyError(interaction_id)

        self._write(work)

    def mark_handoffs_done(
        self, interaction_ids: Sequence[str], after_commit: Sequence[str] = ()
    ) -> None:
        """Mark many hand-offs done in one transaction, and the side effects of the
        *after_commit* interactions (the hand-off service batches its successes: a
        crash before this only means they run again, which both hooks tolerate by
        contract)."""
        stamp = self._dt_param(self.now())

        def work(tx: Tx) -> None:
            for interaction_id in interaction_ids:
                tx.execute(
                    "UPDATE handoffs SET state = ?, attempts = attempts + 1, last_error = NULL, "
                    "updated_at = ? WHERE interaction_id = ?",
                    (HandoffState.DONE.value, stamp, interaction_id),
                )
            for interaction_id in after_commit:
                tx.execute(
                    "UPDATE handoffs SET after_commit = ?, "
                    "after_commit_attempts = after_commit_attempts + 1, after_commit_error = NULL, "
                    "updated_at = ? WHERE interaction_id = ?",
                    (HandoffState.DONE.value, stamp, interaction_id),
                )

        if interaction_ids or after_commit:
            self._write(work)

    def mark_after_commit(self, interaction_id: str, state: str, error: str | None = None) -> None:
        """Record an attempt at an interaction's side effects (counts attempts)."""
        state = HandoffState(state).value

        def work(tx: Tx) -> None:
            changed = tx.execute(
                "UPDATE handoffs SET after_commit = ?, "
                "after_commit_attempts = after_commit_attempts + 1, after_commit_error = ?, "
                "updated_at = ? WHERE interaction_id = ?",
                (state, error, self._dt_param(self.now()), interaction_id),
            )
            if changed == 0:
                raise KeyError(interaction_id)

        self._write(work)

    def after_commit_status(self, interaction_id: str) -> tuple[str, int, str | None] | None:
        """``(state, attempts, last_error)`` of the interaction's side effects, or None."""
        row = self._read(
            lambda tx: tx.one(
                "SELECT after_commit, after_commit_attempts, after_commit_error FROM handoffs "
                "WHERE interaction_id = ?",
                (interaction_id,),
            )
        )
        return None if row is None else (row[0], int(row[1]), row[2])

    def handoff_status(self, interaction_id: str) -> tuple[str, int, str | None] | None:
        row = self._read(
            lambda tx: tx.one(
                "SELECT state, attempts, last_error FROM handoffs WHERE interaction_id = ?",
                (interaction_id,),
            )
        )
        return None if row is None else (row[0], int(row[1]), row[2])

"""Hand-off: which committed interactions routing has taken, and their attempts.

``handoffs`` has one row per interaction: its overall state (derived from its
targets' by :func:`~postroom.model.overall_handoff_state`), attempts and last
error, and its side effects' state. ``handoff_targets`` has one row per
interaction and target (a plugin implementing ``postroom_submit``) once that
target has been tried: what a retry still owes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from postroom.model import (
    EventType,
    HandoffOutcome,
    HandoffState,
    HandoffTarget,
    Interaction,
)
from postroom.store.sql.events import EventRecords, EventRow, insert_events
from postroom.store.sql.interactions import INTERACTION_SELECT, InteractionRecords
from postroom.store.sql.tx import Tx

#: the event recorded for a target's outcome
_TARGET_EVENTS = {
    HandoffState.DONE.value: EventType.HANDED_OFF.value,
    HandoffState.FAILED.value: EventType.HANDOFF_FAILED.value,
    HandoffState.REFUSED.value: EventType.HANDOFF_REFUSED.value,
}


def _committed_after(after: str | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause (and its parameter) for "committed after interaction
    *after*": the next page of a listing in commit order; nothing for None."""
    if after is None:
        return "", ()
    return (
        " AND (i.created_at, i.seq) > (SELECT created_at, seq FROM interactions WHERE id = ?)",
        (after,),
    )


class HandoffRecords(InteractionRecords, EventRecords):
    """``handoffs`` and ``handoff_targets``: pending until routing took it."""

    def pending_handoffs(self, limit: int = 100, after: str | None = None) -> list[Interaction]:
        """Interactions not yet handed off, in commit order; *after*: those
        committed after that interaction (the next page)."""
        return self._unfinished("h.state", limit, after)

    def pending_after_commit(self, limit: int = 100, after: str | None = None) -> list[Interaction]:
        """Interactions whose side effects (``postroom_committed``) have not run
        to the end, in commit order; *after* as for :meth:`pending_handoffs`."""
        return self._unfinished("h.after_commit", limit, after)

    def _unfinished(self, column: str, limit: int, after: str | None) -> list[Interaction]:
        since, later = _committed_after(after)
        params: tuple[Any, ...] = (HandoffState.PENDING.value, HandoffState.FAILED.value, *later)
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

    # -- per target

    def handoff_targets(self, interaction_id: str) -> list[HandoffTarget]:
        """Each target's hand-off of the interaction, by target name (none before
        the first attempt)."""

        def work(tx: Tx) -> list[HandoffTarget]:
            rows = tx.all(
                "SELECT target, state, attempts, last_error, updated_at FROM handoff_targets "
                "WHERE interaction_id = ? ORDER BY target",
                (interaction_id,),
            )
            return [
                HandoffTarget(r[0], r[1], int(r[2]), r[3], tx.as_datetime(r[4])) for r in rows
            ]

        return self._read(work)

    def record_handoffs(
        self, outcomes: Sequence[HandoffOutcome], after_commit: Sequence[str] = ()
    ) -> None:
        """Record hand-off attempts in one transaction: each target tried (its
        attempts counted), each interaction's overall state, and an event per
        target's outcome; and the side effects of the *after_commit*
        interactions done (the hand-off service batches its successes)."""
        now = self.now()
        stamp = self._dt_param(now)

        def work(tx: Tx) -> None:
            events: list[EventRow] = []
            for outcome in outcomes:
                overall = HandoffState(outcome.overall).value
                tried = [
                    (target, HandoffState(state).value, error)
                    for target, (state, error) in sorted(outcome.targets.items())
                ]
                errors = [f"{t}: {e}" for t, st, e in tried if e and st != HandoffState.DONE.value]
                changed = tx.execute(
                    "UPDATE handoffs SET state = ?, attempts = attempts + 1, last_error = ?, "
                    "updated_at = ? WHERE interaction_id = ?",
                    (overall, "; ".join(errors) or None, stamp, outcome.interaction_id),
                )
                if changed == 0:
                    raise KeyError(outcome.interaction_id)
                for target, state, error in tried:
                    error = None if state == HandoffState.DONE.value else error
                    tx.execute(
                        "INSERT INTO handoff_targets (interaction_id, target, state, attempts, "
                        "last_error, updated_at) VALUES (?, ?, ?, 1, ?, ?) "
                        "ON CONFLICT (interaction_id, target) DO UPDATE SET "
                        "state = excluded.state, attempts = handoff_targets.attempts + 1, "
                        "last_error = excluded.last_error, updated_at = excluded.updated_at",
                        (outcome.interaction_id, target, state, error, stamp),
                    )
                    events.append((_TARGET_EVENTS[state], outcome.interaction_id, target, error))
            for interaction_id in after_commit:
                tx.execute(
                    "UPDATE handoffs SET after_commit = ?, "
                    "after_commit_attempts = after_commit_attempts + 1, after_commit_error = NULL, "
                    "updated_at = ? WHERE interaction_id = ?",
                    (HandoffState.DONE.value, stamp, interaction_id),
                )
            insert_events(tx, now, events)

        if outcomes or after_commit:
            self._write(work)

    def retry_handoff(self, interaction_id: str, target: str | None = None) -> list[str]:
        """Put the interaction's refused and failed targets (or only *target*)
        back to pending, and its overall state, keeping their attempts; the
        targets put back. KeyError: no such interaction (or no hand-off);
        ValueError: *target* is not one of its targets, or is done."""
        stamp = self._dt_param(self.now())
        again = (HandoffState.FAILED.value, HandoffState.REFUSED.value)

        def work(tx: Tx) -> list[str]:
            overall = tx.scalar(
                "SELECT state FROM handoffs WHERE interaction_id = ?", (interaction_id,)
            )
            if overall is None:
                raise KeyError(interaction_id)
            states: dict[str, str] = dict(
                tx.all(
                    "SELECT target, state FROM handoff_targets WHERE interaction_id = ?",
                    (interaction_id,),
                )
            )
            if target is not None:
                if target not in states:
                    known = ", ".join(sorted(states)) or "none yet"
                    raise ValueError(f"{target!r} is not a target of {interaction_id} ({known})")
                if states[target] == HandoffState.DONE.value:
                    raise ValueError(f"{target!r} already took {interaction_id}")
                chosen = [target] if states[target] in again else []
            else:
                chosen = sorted(name for name, state in states.items() if state in again)
            for name in chosen:
                tx.execute(
                    "UPDATE handoff_targets SET state = ?, updated_at = ? "
                    "WHERE interaction_id = ? AND target = ?",
                    (HandoffState.PENDING.value, stamp, interaction_id, name),
                )
            if chosen or overall in again:
                tx.execute(
                    "UPDATE handoffs SET state = ?, updated_at = ? WHERE interaction_id = ?",
                    (HandoffState.PENDING.value, stamp, interaction_id),
                )
            return chosen

        return self._write(work)

    def pending_handoff_ids(self, limit: int = 500, after: str | None = None) -> list[str]:
        """Ids of the interactions whose overall hand-off state is ``pending``
        (new, or put back by a retry), in commit order; *after* as for
        :meth:`pending_handoffs`. Ids only: the hand-off service sweeps these."""
        since, later = _committed_after(after)
        params: tuple[Any, ...] = (HandoffState.PENDING.value, *later)
        rows = self._read(
            lambda tx: tx.all(
                "SELECT i.id FROM handoffs h JOIN interactions i ON i.id = h.interaction_id "
                f"WHERE h.state = ?{since} ORDER BY i.created_at, i.seq LIMIT ?",
                (*params, limit),
            )
        )
        return [str(row[0]) for row in rows]

"""Hand-off per target and the event table, on both stores (issue 13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from postroom.model import EventType, HandoffOutcome, HandoffTarget, Interaction
from postroom.store.sql.store import SQLStore
from tests.store.conftest import MakeStore
from tests.store.test_interaction_store import MAIL, RawOf

CREATED = EventType.CREATED.value
HANDED_OFF = EventType.HANDED_OFF.value
FAILED = EventType.HANDOFF_FAILED.value
REFUSED = EventType.HANDOFF_REFUSED.value


def committed(store: SQLStore, raw_of: RawOf, n: int = 0) -> Interaction:
    item = Interaction(mailbox="support", subject="hi")
    [stored] = store.commit_fetched("support", str(n), raw_of(MAIL + bytes([n])), [item]).new
    return stored


def states(store: SQLStore, interaction_id: str) -> dict[str, tuple[str, int, str | None]]:
    return {
        t.target: (t.state, t.attempts, t.last_error)
        for t in store.handoff_targets(interaction_id)
    }


def test_each_target_keeps_its_own_state_and_attempts(store: SQLStore, raw_of: RawOf) -> None:
    item = committed(store, raw_of)
    assert store.handoff_targets(item.id) == []  # not tried yet
    store.record_handoffs([HandoffOutcome(item.id, "failed", {
        "amqp": ("done", None), "webhook": ("failed", "HTTP 503"),
    })])  # fmt: skip
    assert states(store, item.id) == {
        "amqp": ("done", 1, None), "webhook": ("failed", 1, "HTTP 503"),
    }
    assert store.handoff_status(item.id) == ("failed", 1, "webhook: HTTP 503")
    assert [i.id for i in store.pending_handoffs()] == [item.id]  # still owed
    assert store.pending_handoff_ids() == []  # failed: being retried, not to sweep

    # the retry tried the webhook alone: amqp's row is untouched
    store.record_handoffs(
        [HandoffOutcome(item.id, "refused", {"webhook": ("refused", "HTTP 410")})]
    )
    assert states(store, item.id) == {
        "amqp": ("done", 1, None), "webhook": ("refused", 2, "HTTP 410"),
    }
    assert store.handoff_status(item.id) == ("refused", 2, "webhook: HTTP 410")
    assert store.pending_handoffs() == []  # refused for good: not recovered
    got = store.get_interaction(item.id)
    assert got is not None and got.handoff_state == "refused"
    [row] = [t for t in store.handoff_targets(item.id) if t.target == "webhook"]
    assert isinstance(row, HandoffTarget) and row.updated_at is not None

    # each outcome is an event, after the commit's, in order
    events = store.events_after(0)
    assert [(e.type, e.interaction_id, e.target, e.reason) for e in events] == [
        (CREATED, item.id, None, None),
        (HANDED_OFF, item.id, "amqp", None),
        (FAILED, item.id, "webhook", "HTTP 503"),
        (REFUSED, item.id, "webhook", "HTTP 410"),
    ]
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    assert store.last_event_seq() == events[-1].seq


def test_an_unknown_interaction_is_refused_whole(store: SQLStore, raw_of: RawOf) -> None:
    item = committed(store, raw_of)
    with pytest.raises(KeyError):
        store.record_handoffs([
            HandoffOutcome(item.id, "done", {"amqp": ("done", None)}),
            HandoffOutcome("unknown", "done", {"amqp": ("done", None)}),
        ])  # fmt: skip
    assert store.handoff_targets(item.id) == []  # nothing of the batch was kept
    assert [e.type for e in store.events_after(0)] == [CREATED]


def test_a_batch_records_successes_and_side_effects_together(
    store: SQLStore, raw_of: RawOf
) -> None:
    one, two = committed(store, raw_of, 1), committed(store, raw_of, 2)
    store.record_handoffs(
        [HandoffOutcome(one.id, "done", {"amqp": ("done", None)}),
         HandoffOutcome(two.id, "done", {})],  # no target: done at once
        after_commit=[one.id, two.id],
    )  # fmt: skip
    assert store.handoff_status(one.id) == ("done", 1, None)
    assert store.handoff_status(two.id) == ("done", 1, None)
    assert store.after_commit_status(two.id) == ("done", 1, None)
    assert store.pending_handoffs() == [] and store.pending_after_commit() == []


def test_a_retry_puts_refused_and_failed_targets_back_keeping_their_attempts(
    store: SQLStore, raw_of: RawOf
) -> None:
    item = committed(store, raw_of)
    store.record_handoffs([HandoffOutcome(item.id, "failed", {
        "amqp": ("done", None), "webhook": ("refused", "HTTP 410"), "crm": ("failed", "timeout"),
    })])  # fmt: skip
    with pytest.raises(ValueError, match="'amqp' already took"):
        store.retry_handoff(item.id, "amqp")
    with pytest.raises(ValueError, match="'nope' is not a target"):
        store.retry_handoff(item.id, "nope")
    with pytest.raises(KeyError):
        store.retry_handoff("unknown")

    assert store.retry_handoff(item.id, "webhook") == ["webhook"]
    assert states(store, item.id)["webhook"] == ("pending", 1, "HTTP 410")  # history kept
    assert states(store, item.id)["crm"] == ("failed", 1, "timeout")  # not asked for
    assert store.handoff_status(item.id)[0] == "pending"
    assert store.pending_handoff_ids() == [item.id]  # a running gateway sweeps it up

    assert store.retry_handoff(item.id) == ["crm"]
    assert {t: s[0] for t, s in states(store, item.id).items()} == {
        "amqp": "done", "webhook": "pending", "crm": "pending",
    }
    assert store.retry_handoff(item.id) == []  # nothing left to put back


def test_pending_ids_page_in_commit_order(store: SQLStore, raw_of: RawOf) -> None:
    items = [committed(store, raw_of, n) for n in range(3)]
    ids = [i.id for i in sorted(items, key=lambda i: i.created_at)]
    assert store.pending_handoff_ids() == ids
    assert store.pending_handoff_ids(limit=2) == ids[:2]
    assert store.pending_handoff_ids(after=ids[1]) == ids[2:]


def test_events_filter_by_type_and_are_pruned_by_count_and_age(
    make_store: MakeStore, raw_of: RawOf
) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    store = make_store(now=lambda: now[0])
    assert store.last_event_seq() == 0 and store.events_after(0) == []
    store.add_events([(EventType.SENT.value, "a", None, None)] * 3)
    now[0] += timedelta(days=10)
    store.add_events([(EventType.SEND_FAILED.value, "b", None, "x" * 10_000)])
    seqs = [e.seq for e in store.events_after(0)]
    assert len(seqs) == 4
    [failed] = store.events_after(0, types=[EventType.SEND_FAILED.value])
    assert failed.interaction_id == "b" and len(failed.reason or "") == 500  # bounded
    assert failed.time == now[0]
    assert [e.seq for e in store.events_after(seqs[1], limit=1)] == [seqs[2]]

    assert store.prune_events(keep=3, days=0) == 1  # the oldest
    assert [e.seq for e in store.events_after(0)] == seqs[1:]
    assert store.prune_events(keep=100, days=7) == 2  # ten days old
    assert [e.seq for e in store.events_after(0)] == seqs[3:]
    store.add_events([(EventType.SENT.value, "c", None, None)])
    assert store.last_event_seq() > seqs[3]  # ids never reused

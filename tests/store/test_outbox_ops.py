"""The outbox's operations and the outbound delivery status, on both backends:
attempts counted (the successful one too), the history, retry and cancel as
conditional updates, paging, id prefixes; each recipient's status from the send
and from reports, and the interaction's status derived from them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from postroom.errors import OutboxConflict
from postroom.model import (
    DeliveryReport,
    Interaction,
    InteractionType,
    OutboundRequest,
    RawRef,
)
from postroom.store.sql.outbox import MAX_HISTORY
from postroom.store.sql.store import SQLStore

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
RawOf = Callable[[bytes], RawRef]


def queued(store: SQLStore, n: int = 0, to: tuple[str, ...] = ("ann@c.example",)) -> str:
    entry = store.queue_outbound(
        Interaction(message_id=f"<o{n}@x>", subject=f"s{n}", to=list(to)),
        OutboundRequest(to=list(to), subject=f"s{n}", text="hi"),
    )
    return entry.id


def sent(store: SQLStore, to: tuple[str, ...], refused: dict[str, str] | None = None) -> str:
    """An outbound interaction the server took for *to* (minus *refused*)."""
    refused = refused or {}
    eid = queued(store, to=to)
    [claimed] = store.claim_outbound(NOW)
    assert claimed.id == eid
    store.mark_outbound(
        eid, "sent", reply="mx: 250 2.0.0 Ok: queued as 1A",
        accepted=[a for a in to if a not in refused], refused=refused,
    )  # fmt: skip
    return eid


def report(store: SQLStore, raw_of: RawOf, parent: str, minute: int) -> str:
    """A stored report interaction (its storing time orders reports)."""
    item = Interaction(
        subtype="InboundNDR", parent_id=parent, created_at=NOW + timedelta(minutes=minute)
    )
    store.commit_fetched("box", f"r{minute}", raw_of(b"Subject: r\r\n\r\n%d\r\n" % minute), [item])
    return item.id


def status(store: SQLStore, eid: str) -> str:
    found = store.get_interaction(eid)
    assert found is not None
    return found.status


def statuses(store: SQLStore, eid: str) -> dict[str, str]:
    return {row.recipient: row.status for row in store.delivery_of(eid)}


# ------------------------------------------------------------------ attempts


def test_every_attempt_counts_the_successful_one_too(store: SQLStore) -> None:
    eid = queued(store)
    store.claim_outbound(NOW)
    store.mark_outbound(eid, "sent", reply="mx: 250 ok", accepted=["ann@c.example"])
    entry = store.get_outbox(eid)
    assert entry is not None and (entry.state, entry.attempts) == ("sent", 1)
    [line] = store.outbox_history(eid)
    assert (line.result, line.reply, line.counted, line.error) == ("sent", "mx: 250 ok", True, None)


def test_the_history_keeps_each_attempt_and_not_the_untried(store: SQLStore) -> None:
    eid = queued(store)
    store.claim_outbound(NOW)
    store.mark_outbound(eid, "queued", "451 4.3.0 try later", NOW)  # counted
    store.claim_outbound(NOW)
    store.mark_outbound(eid, "queued", "535 login refused", NOW, count_attempt=False)
    store.claim_outbound(NOW)
    store.mark_outbound(eid, "queued", None, NOW, count_attempt=False)  # never tried
    store.claim_outbound(NOW)
    store.mark_outbound(
        eid, "sent", reply="250 ok", accepted=["ann@c.example"],
        refused={"bob@c.example": "550 5.1.1 unknown"},
    )  # fmt: skip
    history = store.outbox_history(eid)
    assert [(h.result, h.counted) for h in history] == [
        ("retry", True),
        ("login-refused", False),
        ("sent", True),
    ]
    assert history[0].error == "451 4.3.0 try later"
    assert history[2].refused == {"bob@c.example": "550 5.1.1 unknown"}
    assert store.get_outbox(eid).attempts == 2  # type: ignore[union-attr]


def test_the_history_is_bounded(store: SQLStore) -> None:
    eid = queued(store)
    for n in range(MAX_HISTORY + 5):
        store.claim_outbound(NOW)
        store.mark_outbound(eid, "queued", f"451 try {n}", NOW)
    history = store.outbox_history(eid)
    assert len(history) == MAX_HISTORY
    assert history[0].error == "451 try 5" and history[-1].error == f"451 try {MAX_HISTORY + 4}"
    assert store.get_outbox(eid).attempts == MAX_HISTORY + 5  # type: ignore[union-attr]


# ------------------------------------------------------------- retry, cancel


def test_retry_makes_a_waiting_entry_due_now(store: SQLStore) -> None:
    eid = queued(store)
    store.claim_outbound(NOW)
    store.mark_outbound(eid, "queued", "451 later", NOW + timedelta(hours=1))
    assert store.claim_outbound(NOW) == []
    entry = store.retry_outbound(eid)
    assert (entry.state, entry.next_attempt_at, entry.attempts, entry.round_start) == (
        "queued", None, 1, 0,
    )  # fmt: skip
    assert [e.id for e in store.claim_outbound(NOW)] == [eid]
    assert store.outbox_history(eid)[-1].result == "retry-requested"


def test_retry_of_a_failed_entry_starts_a_new_round(store: SQLStore) -> None:
    eid = queued(store)
    store.claim_outbound(NOW)
    store.mark_outbound(eid, "failed", "550 5.7.1 relaying denied")
    assert status(store, eid) == "Failed"
    entry = store.retry_outbound(eid)
    assert (entry.state, entry.attempts, entry.round_start) == ("queued", 1, 1)
    assert entry.last_error == "550 5.7.1 relaying denied"  # kept for the operator
    found = store.get_interaction(eid)
    assert found is not None and found.status == "Queued"
    assert "_SendError" not in found.attached_data


def test_an_entry_being_sent_can_be_neither_cancelled_nor_retried(store: SQLStore) -> None:
    eid = queued(store)
    store.claim_outbound(NOW)
    with pytest.raises(OutboxConflict, match="being sent right now"):
        store.cancel_outbound(eid)
    with pytest.raises(OutboxConflict, match="being sent right now"):
        store.retry_outbound(eid)
    assert store.get_outbox(eid).state == "sending"  # type: ignore[union-attr]
    store.mark_outbound(eid, "sent", accepted=["ann@c.example"])
    with pytest.raises(OutboxConflict, match="sent already"):
        store.cancel_outbound(eid)
    with pytest.raises(KeyError):
        store.retry_outbound("no-such-entry")


def test_cancel_takes_an_entry_out_of_the_outbox(store: SQLStore) -> None:
    first, second = queued(store, 1), queued(store, 2)
    store.claim_outbound(NOW, limit=1)
    store.mark_outbound(first, "failed", "550 no")
    assert store.cancel_outbound(first).state == "cancelled"
    assert store.cancel_outbound(second).state == "cancelled"
    assert status(store, first) == status(store, second) == "Cancelled"
    assert store.claim_outbound(NOW + timedelta(days=1)) == []
    with pytest.raises(OutboxConflict, match="cancelled"):
        store.retry_outbound(second)
    with pytest.raises(OutboxConflict):  # a worker cannot write over a cancel
        store.mark_outbound(second, "sent")
    assert store.outbox_counts()["cancelled"] == 2
    assert store.outbox_history(second)[-1].result == "cancelled"


def test_two_stores_race_to_claim_and_cancel_one_wins(make_store) -> None:
    """A gateway's worker and an operator's command in two processes: the
    conditional updates let exactly one of them have the entry."""
    worker, operator = make_store(), make_store()
    eid = queued(worker)
    claimed = worker.claim_outbound(NOW)
    with pytest.raises(OutboxConflict):
        operator.cancel_outbound(eid)
    assert [e.id for e in claimed] == [eid]
    other = queued(worker, 9)
    operator.cancel_outbound(other)
    assert worker.claim_outbound(NOW) == []


# ------------------------------------------------------------ listing, ids


def test_the_outbox_is_listed_page_by_page(store: SQLStore) -> None:
    ids = [queued(store, n) for n in range(5)]
    store.claim_outbound(NOW, limit=1)
    store.mark_outbound(ids[0], "failed", "550 no")
    page, cursor = store.list_outbox_page(limit=2)
    assert [e.id for e in page] == ids[:2] and cursor is not None
    page, cursor = store.list_outbox_page(limit=2, after=cursor)
    assert [e.id for e in page] == ids[2:4] and cursor is not None
    page, cursor = store.list_outbox_page(limit=2, after=cursor)
    assert [e.id for e in page] == ids[4:] and cursor is None
    page, cursor = store.list_outbox_page(state="queued", limit=10)
    assert [e.id for e in page] == ids[1:] and cursor is None
    assert [e.id for e in store.list_outbox_page(state="failed")[0]] == ids[:1]
    with pytest.raises(ValueError):
        store.list_outbox_page(state="lost")
    with pytest.raises(ValueError):
        store.list_outbox_page(after="1; DROP TABLE outbox")


# ---------------------------------------------------------- delivery status


def test_a_send_starts_each_recipient_and_a_refused_one_fails(store: SQLStore) -> None:
    eid = sent(store, ("ann@c.example", "Bob@C.example"), {"Bob@C.example": "550 5.1.1 no"})
    rows = {r.recipient: r for r in store.delivery_of(eid)}
    assert rows["ann@c.example"].status == "sent"
    assert (rows["Bob@C.example"].status, rows["Bob@C.example"].action) == ("failed", "refused")
    assert rows["Bob@C.example"].diagnostic == "550 5.1.1 no"
    assert status(store, eid) == "PartlyFailed"
    found = store.get_interaction(eid)
    assert found is not None and {r.recipient for r in found.delivery} == set(rows)


def test_a_report_failing_one_of_two_recipients_is_partly_failed(
    store: SQLStore, raw_of: RawOf
) -> None:
    eid = sent(store, ("ann@c.example", "bob@c.example"))
    assert status(store, eid) == "Sent"
    ndr = report(store, raw_of, eid, 1)
    failed = DeliveryReport("BOB@c.example", "failed", "failed", "5.1.1 smtp; 550 5.1.1 unknown")
    assert store.record_delivery(eid, ndr, [failed]) is True
    assert statuses(store, eid) == {"ann@c.example": "sent", "bob@c.example": "failed"}
    assert status(store, eid) == "PartlyFailed"
    row = next(r for r in store.delivery_of(eid) if r.status == "failed")
    assert (row.report_id, row.time) == (ndr, NOW + timedelta(minutes=1))
    # the same report again (a restart ran postroom_committed twice): nothing changes
    before = store.delivery_of(eid)
    assert store.record_delivery(eid, ndr, [failed]) is False
    assert store.delivery_of(eid) == before
    # the other recipient fails too
    other = report(store, raw_of, eid, 2)
    store.record_delivery(eid, other, [DeliveryReport("ann@c.example", "failed")])
    assert status(store, eid) == "DeliveryFailed"


def test_delay_then_delivered_and_never_back(store: SQLStore, raw_of: RawOf) -> None:
    eid = sent(store, ("ann@c.example",))
    delay = report(store, raw_of, eid, 1)
    store.record_delivery(eid, delay, [DeliveryReport("ann@c.example", "delayed", "delayed")])
    assert status(store, eid) == "Delayed"
    done = report(store, raw_of, eid, 2)
    store.record_delivery(eid, done, [DeliveryReport("ann@c.example", "delivered", "relayed")])
    assert status(store, eid) == "Delivered"
    # the delay processed again, or arriving late: a delivery is not undone
    assert store.record_delivery(eid, delay, [DeliveryReport("ann@c.example", "delayed")]) is False
    assert status(store, eid) == "Delivered"


def test_a_read_receipt_is_displayed(store: SQLStore, raw_of: RawOf) -> None:
    eid = sent(store, ("ann@c.example", "bob@c.example"))
    mdn = report(store, raw_of, eid, 1)
    store.record_delivery(eid, mdn, [DeliveryReport("ann@c.example", "displayed", "displayed")])
    assert statuses(store, eid)["ann@c.example"] == "displayed"
    assert status(store, eid) == "Sent"  # bob: no report yet
    dsn = report(store, raw_of, eid, 2)
    store.record_delivery(eid, dsn, [DeliveryReport("ann@c.example", "delivered")])
    assert statuses(store, eid)["ann@c.example"] == "displayed"  # a receipt says more
    store.record_delivery(eid, dsn, [DeliveryReport("bob@c.example", "delivered")])
    assert status(store, eid) == "Delivered"
    receipt = report(store, raw_of, eid, 3)
    store.record_delivery(eid, receipt, [DeliveryReport("bob@c.example", "displayed")])
    assert status(store, eid) == "Displayed"


def test_a_report_matches_the_original_recipient_first(store: SQLStore, raw_of: RawOf) -> None:
    eid = sent(store, ("sales@c.example",))
    ndr = report(store, raw_of, eid, 1)
    bounced = DeliveryReport("bob@mx.c.example", "failed", original_recipient="sales@c.example")
    store.record_delivery(eid, ndr, [bounced])
    assert statuses(store, eid) == {"sales@c.example": "failed"}
    # a recipient the message was not sent to (an alias's) gets a row of its own
    store.record_delivery(eid, ndr, [DeliveryReport("eve@c.example", "delivered")])
    assert statuses(store, eid) == {"sales@c.example": "failed", "eve@c.example": "delivered"}
    assert status(store, eid) == "PartlyFailed"


def test_what_a_report_cannot_change(store: SQLStore, raw_of: RawOf) -> None:
    inbound = Interaction(type=InteractionType.INBOUND.value)
    store.commit_fetched("box", "in", raw_of(b"Subject: in\r\n\r\nx\r\n"), [inbound])
    assert store.record_delivery(inbound.id, "r", [DeliveryReport("a@x", "failed")]) is False
    assert store.record_delivery("unknown", "r", [DeliveryReport("a@x", "failed")]) is False
    with pytest.raises(ValueError):
        store.record_delivery(inbound.id, "r", [DeliveryReport("a@x", "sent")])
    # reported while queued again (a send interrupted after the server took it):
    # the row is kept, the status stays the outbox's until it is sent
    eid = queued(store)
    ndr = report(store, raw_of, eid, 1)
    assert store.record_delivery(eid, ndr, [DeliveryReport("ann@c.example", "failed")])
    assert status(store, eid) == "Queued"
    store.claim_outbound(NOW)
    store.mark_outbound(eid, "sent", accepted=["ann@c.example"])
    assert statuses(store, eid) == {"ann@c.example": "failed"}
    assert status(store, eid) == "DeliveryFailed"
    assert store.get_interaction(inbound.id).delivery == []  # type: ignore[union-attr]

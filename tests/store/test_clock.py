"""Every timestamp the store writes comes from the clock it was given (the kernel's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from postroom.kernel import Kernel
from postroom.model import (
    Cursor,
    HandoffOutcome,
    Interaction,
    OutboundRequest,
    OutboxState,
    RawRef,
)
from postroom.runner import InlineRunner
from postroom.store.sql.store import SQLStore
from postroom.store.sqlite import SQLiteStore
from tests.conftest import run

#: far from the wall clock, so a stamp from it cannot pass for this
FAKE_NOW = datetime(2031, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)

#: every timestamp column the store writes itself: (table, column)
STAMPS = [
    ("schema_migrations", "applied_at"),
    ("raw_messages", "created_at"),
    ("interactions", "stored_at"),
    ("dedupe_keys", "created_at"),
    ("handoffs", "updated_at"),
    ("handoff_targets", "updated_at"),
    ("events", "at"),
    ("cursors", "updated_at"),
    ("outbox", "created_at"),
    ("outbox", "updated_at"),
    ("failures", "created_at"),
    ("failures", "updated_at"),
    ("quarantine", "created_at"),
    ("quarantine", "updated_at"),
    ("suppressions", "created_at"),
    ("suppressions", "updated_at"),
]


def stamps(store: SQLStore, table: str, column: str) -> set[datetime]:
    def work(tx: Any) -> set[datetime]:
        return {tx.as_datetime(row[0]) for row in tx.all(f"SELECT {column} FROM {table}")}

    return store.run_in_transaction(work, write=False)


def test_every_write_is_stamped_by_the_injected_clock(tmp_path: Path) -> None:
    store = SQLiteStore({"path": str(tmp_path / "s.db")}, now=lambda: FAKE_NOW)
    store.open()
    raw_path = tmp_path / "m.eml"
    raw_path.write_bytes(b"Subject: hi\r\n\r\nbody\r\n")
    raw = RawRef.from_path(raw_path)
    [item] = store.commit_fetched("mb", "1", raw, [Interaction(subject="hi")],
                                  cursor=Cursor("mb", "1")).new  # fmt: skip
    store.mark_handoff(item.id, "done")
    store.record_handoffs([HandoffOutcome(item.id, "done", {"routing": ("done", None)})])
    out = Interaction(subject="re", message_id="<o@example.org>")
    store.queue_outbound(out, OutboundRequest(to=["a@example.org"], subject="re", text="x"))
    store.claim_outbound(FAKE_NOW + timedelta(days=1))
    store.mark_outbound(out.id, OutboxState.SENT.value)
    store.record_failure("mb", "2", "broken", raw)
    store.quarantine("mb", "2", "broken", raw)
    store.suppress("gone@example.org", "5.1.1")
    for table, column in STAMPS:
        assert stamps(store, table, column) == {FAKE_NOW}, (table, column)
    store.close()


def test_the_kernel_gives_the_store_its_clock(tmp_path: Path) -> None:
    clock = MemoryReactorClock()
    clock.advance(FAKE_NOW.timestamp())
    kernel = Kernel(
        reactor=clock, clock=clock, store_override={"driver": "memory"}, runner=InlineRunner()
    )
    run(kernel.open())
    try:
        clock.advance(60)
        run(kernel.store.suppress("gone@example.org", "5.1.1"))
        [entry] = run(kernel.store.list_suppressions())
        assert entry.created_at == FAKE_NOW + timedelta(seconds=60)
    finally:
        run(kernel.close())

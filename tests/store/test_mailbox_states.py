"""``mailbox_states``: what the services keep for ``postroom mailboxes``, on every store driver."""

from __future__ import annotations

from datetime import UTC, datetime

from postroom.store.sql.mailboxstates import REASON_LIMIT
from tests.store.conftest import MakeStore


def test_a_state_row_round_trips_and_is_replaced(make_store: MakeStore) -> None:
    store = make_store()
    later = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    store.save_mailbox_state("support", "auth-failed", "login refused: [AUTH]", 3, later)
    store.save_mailbox_state("smtp-client", "connected")
    [smtp, support] = store.list_mailbox_states()
    assert (smtp.mailbox, smtp.state, smtp.reason, smtp.next_attempt) == (
        "smtp-client", "connected", None, None
    )
    assert (support.state, support.reason, support.failures) == (
        "auth-failed", "login refused: [AUTH]", 3
    )
    assert support.next_attempt == later
    store.save_mailbox_state("support", "connected")
    assert [r.state for r in store.list_mailbox_states()] == ["connected", "connected"]


def test_a_server_that_says_a_great_deal_is_cut_short(make_store: MakeStore) -> None:
    store = make_store()
    store.save_mailbox_state("support", "auth-failed", "NO " + "x" * 100_000, 1)
    [kept] = store.list_mailbox_states()
    assert kept.reason is not None and len(kept.reason) == REASON_LIMIT
    assert kept.reason.startswith("NO xxx") and kept.reason.endswith("…")

"""``ctx.store`` gives plugins every method ``postroom.api.StoreAccess`` promises."""

from __future__ import annotations

import inspect

from postroom.api import Interaction, StoreAccess
from postroom.testing import TestKernel, result_of


def test_the_contexts_store_is_a_store_access() -> None:
    with TestKernel() as kernel:
        assert isinstance(kernel.ctx.store, StoreAccess)


def test_each_promised_method_answers_through_a_deferred() -> None:
    eml = b"From: a@example.org\r\nTo: b@example.org\r\nMessage-ID: <m1@example.org>\r\n\r\nhi\r\n"
    with TestKernel() as kernel:
        (stored,) = kernel.ingest(eml, mailbox="test")
        store = kernel.ctx.store
        found: list[Interaction] = result_of(store.find_by_message_id("<m1@example.org>"))
        assert [i.id for i in found] == [stored.id]
        assert result_of(store.get_interaction(stored.id)).id == stored.id
        assert result_of(store.is_suppressed("gone@example.org")) is None
        result_of(store.suppress("gone@example.org", "5.1.1", stored.id))
        assert result_of(store.is_suppressed("Gone@example.org")).hits == 1
        assert result_of(store.known_source_keys("test", ["nope"])) == set()


def test_the_protocol_lists_only_methods_the_store_contract_has() -> None:
    from postroom.interfaces import IStore

    methods = inspect.getmembers(StoreAccess, inspect.isfunction)
    promised = {name for name, _ in methods if not name.startswith("_")}
    assert promised <= set(IStore.names())

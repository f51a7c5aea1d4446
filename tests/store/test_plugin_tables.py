"""Plugins' own tables: migrations in their own version track, queries through
ISQLAccess, and the exchange log the autoreply plugin took over from the kernel
(on SQLite and PostgreSQL alike)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from postroom.interfaces import ISQLAccess
from postroom.runner import InlineRunner
from postroom.store.async_store import AsyncStore
from postroom.store.errors import StoreError
from postroom.store.sql.migrations import Migration, PluginMigrations
from postroom.store.sql.store import SQLStore
from postroom_autoreply import exchanges
from tests.conftest import run
from tests.store.conftest import MakeStore

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def autoreply(store: SQLStore) -> PluginMigrations:
    found = exchanges.postroom_store_migrations(store.dialect_name)
    assert found is not None
    return found


def tables(store: SQLStore) -> set[str]:
    if store.dialect_name == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = ?"
    params = () if store.dialect_name == "sqlite" else (store.options["schema"],)
    return {row[0] for row in store.run_in_transaction(lambda tx: tx.all(sql, params), False)}


def with_autoreply(make_store: MakeStore) -> SQLStore:
    store = make_store(open=False)
    store.add_plugin_migrations(autoreply(store))
    store.open()
    return store


def test_the_store_offers_plugin_tables(store: SQLStore) -> None:
    assert verifyObject(ISQLAccess, store)
    assert ISQLAccess.providedBy(AsyncStore(store, InlineRunner()))  # what ctx.store is


def test_a_plugins_migrations_run_once_in_their_own_track(make_store: MakeStore) -> None:
    store = with_autoreply(make_store)
    assert store.plugin_schema_version("autoreply") == 1
    assert store.schema_version() == store.migrations()[-1].version  # the kernel's, apart
    assert "autoreply_exchanges" in tables(store) and "exchanges" not in tables(store)
    store.close()
    again = with_autoreply(make_store)  # opened again: nothing applied twice
    rows = again.run_in_transaction(
        lambda tx: tx.all("SELECT owner, version, name FROM plugin_migrations"), False
    )
    assert rows == [("autoreply", 1, "0001_exchanges.sql")]


def test_without_the_plugin_its_tables_are_not_made(store: SQLStore) -> None:
    assert store.plugin_schema_version("autoreply") == 0
    assert "autoreply_exchanges" not in tables(store)


def test_a_plugin_track_newer_than_the_plugin_is_refused(make_store: MakeStore) -> None:
    with_autoreply(make_store).close()
    store = make_store(open=False)
    store.add_plugin_migrations(
        PluginMigrations("autoreply", [Migration(0, "0000_none.sql", "SELECT 1;")])
    )
    with pytest.raises(StoreError, match="plugin autoreply is at version 1, newer than"):
        store.open()


def test_plugin_migrations_are_added_before_open(store: SQLStore) -> None:
    with pytest.raises(StoreError, match="before open"):
        store.add_plugin_migrations(autoreply(store))


def test_an_owner_is_a_plain_name() -> None:
    with pytest.raises(ValueError, match="owner"):
        PluginMigrations("Auto Reply", [])


def test_exchanges_are_counted_per_address_in_a_window(make_store: MakeStore) -> None:
    store = AsyncStore(with_autoreply(make_store), InlineRunner())

    def record(address: str, direction: str, at: Any, mail: str | None = None) -> None:
        run(exchanges.record(store, address, direction, at, mail))

    def count(address: str, since: Any) -> int:
        return int(run(exchanges.count(store, address, since)))

    record("Bot@Example.com", "in", T0, "i-1")
    record("bot@example.com", "out", T0 + timedelta(minutes=1), "o-1")
    record("bot@example.com", "in", T0 + timedelta(minutes=5), "i-2")
    record("human@example.com", "in", T0 + timedelta(minutes=5), "i-3")
    # the same interaction recorded again (a retried hand-off) counts once
    record("bot@example.com", "in", T0 + timedelta(minutes=5), "i-2")
    # without an interaction id every call counts
    record("bot@example.com", "out", T0 + timedelta(minutes=9))

    assert count("BOT@example.com", T0) == 4
    assert count("bot@example.com", T0 + timedelta(minutes=1)) == 3
    assert count("bot@example.com", T0 + timedelta(minutes=6)) == 1
    assert count("bot@example.com", (T0 + timedelta(minutes=10)).timestamp()) == 0
    assert count("human@example.com", T0) == 1
    with pytest.raises(ValueError, match="direction"):
        record("bot@example.com", "sideways", T0)


def test_a_version_3_database_keeps_its_exchanges(make_store: MakeStore) -> None:
    """A site upgrading from kernel schema 3, where the kernel kept the log."""
    old = make_store(open=False)
    version_3 = [m for m in old.migrations() if m.version <= 3]
    old.migrations = lambda: version_3  # type: ignore[method-assign]
    old.open()
    assert old.schema_version() == 3
    old.run_in_transaction(
        lambda tx: [
            tx.execute(
                "INSERT INTO exchanges (address, direction, at, interaction_id) "
                "VALUES (?, ?, ?, ?)",
                ("bot@example.com", direction, T0 + timedelta(minutes=minute), mail),
            )
            for direction, minute, mail in (("in", 0, "i-1"), ("out", 1, "o-1"), ("in", 2, None))
        ]
    )
    old.close()

    without = make_store()  # upgraded by a gateway without autoreply: the rows stay
    assert without.schema_version() == without.migrations()[-1].version
    assert without.run_in_transaction(lambda tx: tx.scalar("SELECT COUNT(*) FROM exchanges")) == 3
    without.close()

    upgraded = with_autoreply(make_store)
    store = AsyncStore(upgraded, InlineRunner())
    assert run(exchanges.count(store, "bot@example.com", T0)) == 3
    assert run(exchanges.count(store, "bot@example.com", T0 + timedelta(minutes=1))) == 2
    # the moved rows keep their dedupe: recording i-1 again counts nothing
    run(exchanges.record(store, "bot@example.com", "in", T0, "i-1"))
    assert run(exchanges.count(store, "bot@example.com", T0)) == 3
    assert "exchanges" not in tables(upgraded)


def test_processes_starting_together_apply_a_plugins_migration_once(
    make_store: MakeStore,
) -> None:
    stores = [make_store(open=False) for _ in range(3)]
    for store in stores:
        store.add_plugin_migrations(autoreply(store))
    start = threading.Barrier(len(stores), timeout=30)
    errors: list[BaseException] = []

    def opening(store: SQLStore) -> None:
        try:
            start.wait()
            store.open()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opening, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {store.plugin_schema_version("autoreply") for store in stores} == {1}
    rows = stores[0].run_in_transaction(
        lambda tx: tx.scalar("SELECT COUNT(*) FROM plugin_migrations"), False
    )
    assert rows == 1

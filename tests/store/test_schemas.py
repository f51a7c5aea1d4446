"""The two dialects' schemas are the same, read from each database's own catalogue.

The SQLite and PostgreSQL migrations are written by hand, one set each (the
PostgreSQL one in its plugin): this test opens a fresh store of each, with the
autoreply plugin's tables too, and compares what the databases say they hold,
table by table and column by column (name, nullability, type family), and
their named indexes (uniqueness). Only the type spelling may differ, within a
family: SQLite keeps timestamps as ISO-8601 text and booleans as integers.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from postroom.store.sql.store import SQLStore
from postroom.store.sqlite import SQLiteStore
from postroom_autoreply import exchanges

#: Column = (nullable, family); Catalogue = tables -> columns -> Column, plus indexes
Column = tuple[bool, str]

#: a PostgreSQL type's family
PG_FAMILY = {
    "text": "text",
    "integer": "integer",
    "bigint": "integer",
    "boolean": "boolean",
    "timestamp with time zone": "timestamp",
    "bytea": "binary",
}
#: the families each SQLite declared type may hold
SQLITE_FAMILIES = {
    "TEXT": {"text", "timestamp"},
    "INTEGER": {"integer", "boolean"},
    "BLOB": {"binary"},
}


def opened(store: SQLStore) -> SQLStore:
    found = exchanges.postroom_store_migrations(store.dialect_name)
    assert found is not None
    store.add_plugin_migrations(found)
    store.open()
    return store


def sqlite_catalogue(store: SQLStore) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    def work(tx: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        names = [row[0] for row in tx.all(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )]  # fmt: skip
        tables: dict[str, dict[str, Any]] = {}
        indexes: dict[str, Any] = {}
        for table in names:
            tables[table] = {
                # a primary key column is never NULL in PostgreSQL; SQLite (a known
                # quirk) lets a non-integer one be, so the key is what counts here
                name: (not notnull and not pk, SQLITE_FAMILIES[kind.upper()])
                for _cid, name, kind, notnull, _default, pk in tx.all(f"PRAGMA table_info({table})")
            }
            for _seq, name, unique, origin, _partial in tx.all(f"PRAGMA index_list({table})"):
                if origin == "c":  # made by CREATE INDEX, not by a key constraint
                    indexes[name] = (table, bool(unique))
        return tables, indexes

    return store.run_in_transaction(work, write=False)


def pg_catalogue(
    store: SQLStore, schema: str
) -> tuple[dict[str, dict[str, Column]], dict[str, Any]]:
    def work(tx: Any) -> tuple[dict[str, dict[str, Column]], dict[str, Any]]:
        tables: dict[str, dict[str, Column]] = {}
        for table, name, nullable, kind in tx.all(
            "SELECT table_name, column_name, is_nullable, data_type "
            "FROM information_schema.columns WHERE table_schema = ?",
            (schema,),
        ):
            tables.setdefault(table, {})[name] = (nullable == "YES", PG_FAMILY[kind])
        indexes = {
            name: (table, bool(unique))
            for name, table, unique in tx.all(
                "SELECT c.relname, t.relname, i.indisunique FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_class t ON t.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace "
                "WHERE n.nspname = ? "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
                (schema,),
            )
        }
        return tables, indexes

    return store.run_in_transaction(work, write=False)


@pytest.mark.postgresql
def test_sqlite_and_postgresql_hold_the_same_tables_and_columns(
    tmp_path: Path, pg_dsn: str
) -> None:
    from postroom_postgresql.store import PostgreSQLStore

    schema = f"t_{uuid.uuid4().hex[:16]}"
    lite = opened(SQLiteStore({"path": str(tmp_path / "s.db")}))
    pg = opened(PostgreSQLStore({"dsn": pg_dsn, "schema": schema}))
    try:
        lite_tables, lite_indexes = sqlite_catalogue(lite)
        pg_tables, pg_indexes = pg_catalogue(pg, schema)
    finally:
        lite.close()
        pg.close()

    assert "autoreply_exchanges" in lite_tables  # the plugin's tables are compared too
    assert sorted(lite_tables) == sorted(pg_tables)
    differences = []
    for table, columns in lite_tables.items():
        theirs = pg_tables[table]
        if sorted(columns) != sorted(theirs):
            differences.append(f"{table}: columns {sorted(columns)} != {sorted(theirs)}")
            continue
        for name, (nullable, families) in columns.items():
            pg_nullable, family = theirs[name]
            if nullable != pg_nullable:
                differences.append(f"{table}.{name}: nullable {nullable} != {pg_nullable}")
            if family not in families:
                differences.append(f"{table}.{name}: {family} is not one of {sorted(families)}")
    assert differences == []
    assert lite_indexes == pg_indexes

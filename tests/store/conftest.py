"""Every store test runs against both backends: SQLite (a file in tmp_path) and
PostgreSQL (a fresh database per test run, a fresh schema per test).

PostgreSQL comes from ``tests/pg.py``: ``POSTROOM_TEST_PG``, else 127.0.0.1:5432,
else a private cluster it starts. When there is none, the PostgreSQL tests fail
with the reason; they are never skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.model import RawRef
from postroom.store.sql.store import SQLStore
from postroom.store.sqlite import SQLiteStore
from tests import pg

MakeStore = Callable[..., SQLStore]


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A database of its own for this test run, dropped at the end."""
    try:
        admin = pg.find_or_start_postgres()
    except pg.PostgresUnavailable as exc:
        pytest.fail(f"the store tests need PostgreSQL: {exc}", pytrace=False)
    dsn, name = pg.create_database(admin)
    yield dsn
    pg.drop_database(admin, name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Makes stores on one fresh location (several = several processes' connections)."""
    cls: type[SQLStore]
    options: dict[str, Any]
    if request.param == "sqlite":
        cls = SQLiteStore
        options = {"path": str(tmp_path / "site" / "store.sqlite")}  # parent made by open()
    else:
        from postroom_postgresql.store import PostgreSQLStore

        cls = PostgreSQLStore
        dsn = request.getfixturevalue("pg_dsn")
        options = {"dsn": dsn, "schema": f"t_{uuid.uuid4().hex[:16]}"}
    made: list[SQLStore] = []

    def make(open: bool = True, now: Callable[[], Any] | None = None) -> SQLStore:
        store = cls(options, now=now)
        made.append(store)
        if open:
            store.open()
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> SQLStore:
    return make_store()


@pytest.fixture
def raw_of(tmp_path: Path) -> Callable[[bytes], RawRef]:
    """Writes bytes to a spool file, as a source would, and returns its RawRef."""
    counter = iter(range(1_000_000))

    def make(data: bytes) -> RawRef:
        path = tmp_path / f"raw-{next(counter)}.eml"
        path.write_bytes(data)
        return RawRef.from_path(path)

    return make

"""The seam a SQL database driver fills in: what differs between databases.

:class:`~postroom.store.sql.store.SQLStore` holds every query, written once
with ``?`` placeholders and the SQL both SQLite and PostgreSQL accept
(``ON CONFLICT ... DO NOTHING/UPDATE``, ``RETURNING``); a driver gives it a
:class:`SQLDialect` for the rest: connections and transactions, placeholders,
row locks, datetimes, which errors mean "another transaction won, run again",
and where its migration scripts are. The kernel's SQLite driver
(:mod:`postroom.store.sqlite`) and the ``postroom-postgresql`` distribution are
the two examples.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, ClassVar

from postroom.store.errors import DatabaseError
from postroom.store.sql.tx import Tx


def to_utc(value: datetime | float | int) -> datetime:
    """An aware UTC datetime from a datetime or epoch seconds (a Twisted clock's ``seconds()``)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store needs aware datetimes")
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


class SQLDialect:
    """One database's connections and SQL spelling; subclass it for a new database.

    Blocking, like the store: called from the kernel's thread pool only, and
    safe to call from several of its threads at once.
    """

    #: the dialect's name: ``sql/<name>/`` holds its migrations, and plugins
    #: are asked for their tables' migrations in it (``postroom_store_migrations``)
    name: ClassVar[str] = ""
    #: the package holding ``sql/<name>/NNNN_description.sql``
    migrations_package: ClassVar[str] = ""
    #: appended to a SELECT that claims rows other workers must skip
    #: (PostgreSQL: `` FOR UPDATE SKIP LOCKED``)
    claim_rows: ClassVar[str] = ""
    #: appended to a SELECT whose rows must not change until the commit
    share_rows: ClassVar[str] = ""
    #: True when two writing transactions can run at once, so races are found
    #: at insert time (unique keys) and the loser is run again; False when the
    #: database serialises writers up front (SQLite's ``BEGIN IMMEDIATE``)
    concurrent_writers: ClassVar[bool] = False
    #: the database driver's exceptions, raised again as :class:`DatabaseError`
    database_errors: ClassVar[tuple[type[Exception], ...]] = ()

    def connect(self) -> None:
        """Open the connection(s); called by the store's ``open()``."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Close every connection; ``connect()`` may follow."""
        raise NotImplementedError

    def transaction(self, write: bool) -> AbstractContextManager[Tx]:
        """A :class:`Tx` inside one transaction, committed on a normal exit and
        rolled back on an exception. A *write* transaction must be able to
        write without a later lock upgrade failing."""
        raise NotImplementedError

    def placeholders(self, sql: str) -> str:
        """*sql* with its ``?`` placeholders in the driver's style (and its
        other characters escaped as the driver needs)."""
        return sql

    def is_conflict(self, exc: BaseException) -> bool:
        """True when *exc* means a concurrent transaction won and running again may succeed."""
        return False

    def describe(self) -> str:
        """The database, for messages: ``SQLite database /var/lib/postroom.db``
        (never a password)."""
        return f"{self.name} database"

    def database_error(self, exc: Exception) -> DatabaseError | None:
        """*exc* as a :class:`DatabaseError` naming the database when it is the driver's."""
        if not isinstance(exc, self.database_errors):
            return None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DatabaseError(f"{self.describe()}: {detail}")

    def lock_migrations(self, tx: Tx) -> None:
        """Keep other processes out of the migrations until *tx* ends (SQLite:
        its write transaction already does)."""

    def prepare_migrations(self, tx: Tx) -> None:
        """Whatever must exist before the migration tables (e.g. a schema)."""

    def run_script(self, tx: Tx, sql: str) -> None:
        """Execute a migration script (several statements) inside *tx*."""
        raise NotImplementedError

    def text_columns(self, tx: Tx) -> list[tuple[str, str]]:
        """Every (table, column) of the store's database that holds text (JSON
        included), plugins' tables too: what an erasure's verification searches."""
        raise NotImplementedError

    def foreign_keys(self, tx: Tx) -> list[tuple[str, str, str, str]]:
        """Every foreign key of the store's database as (table, column, referenced
        table, referenced column): rows an interaction's removal must take along."""
        raise NotImplementedError

    def datetime_param(self, value: datetime) -> Any:
        """A datetime as a query parameter: by default fixed-width ISO-8601 UTC
        text, so text order is time order. Databases with a timestamp type
        return the datetime."""
        return to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")

    def datetime_value(self, value: Any) -> datetime:
        """A timestamp column's value as an aware UTC datetime."""
        if isinstance(value, datetime):
            return to_utc(value)
        return datetime.fromisoformat(value).astimezone(UTC)

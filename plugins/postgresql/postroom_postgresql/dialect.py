"""PostgreSQL's connections and spelling, for the kernel's SQL store.

- one psycopg 3 connection per thread of the kernel's pool (no pool library);
- ``?`` placeholders become ``%s``;
- writers run under READ COMMITTED and race on the dedupe keys' primary
  key: the loser gets a unique violation when the winner commits, and its
  whole transaction is run again, now seeing the winner's keys (serialisation
  failures and deadlocks are run again the same way);
- the outbox is claimed with ``FOR UPDATE SKIP LOCKED``;
- migrations run under a transaction-scoped advisory lock, so processes
  starting together apply each migration once;
- timestamps are ``timestamptz``: datetimes go in and come out as they are.
"""

from __future__ import annotations

import functools
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ClassVar

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from postroom.api import SQLDialect, Tx, to_utc

#: Errors after which running the same transaction again can succeed.
_CONFLICTS = (errors.UniqueViolation, errors.SerializationFailure, errors.DeadlockDetected)


@functools.lru_cache(maxsize=1024)
def _translate(query: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (and a literal ``%`` to ``%%``)."""
    return query.replace("%", "%%").replace("?", "%s")


class PostgreSQLDialect(SQLDialect):
    """Connections to one database (and schema) given by a libpq DSN."""

    name: ClassVar[str] = "postgresql"
    migrations_package: ClassVar[str] = "postroom_postgresql"
    claim_rows: ClassVar[str] = " FOR UPDATE SKIP LOCKED"
    share_rows: ClassVar[str] = " FOR SHARE"
    concurrent_writers: ClassVar[bool] = True
    database_errors: ClassVar[tuple[type[Exception], ...]] = (psycopg.Error,)

    def __init__(self, dsn: str, schema: str | None) -> None:
        self.dsn = dsn
        self.schema = schema
        params = conninfo_to_dict(self.dsn)
        # A dead server must not hang a pool thread forever; say who we are.
        self.connect_args: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self.connect_args["connect_timeout"] = 10
        if "application_name" not in params:
            self.connect_args["application_name"] = "postroom"
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._all_lock = threading.Lock()
        self._generation = 0

    def describe(self) -> str:
        """Host, port and database name from the DSN: never its password."""
        params = conninfo_to_dict(self.dsn)
        where = str(params.get("host") or "localhost")
        if params.get("port"):
            where += f":{params['port']}"
        name = f" {params['dbname']}" if params.get("dbname") else ""
        schema = f", schema {self.schema}" if self.schema else ""
        return f"PostgreSQL database{name} on {where}{schema}"

    # ---------------------------------------------------------- connections

    def _connection(self) -> psycopg.Connection[Any]:
        """This thread's connection, made again when broken or from before a close()."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if (
            conn is not None
            and not conn.closed
            and not conn.broken
            and self._local.generation == self._generation
        ):
            return conn
        conn = psycopg.connect(self.dsn, autocommit=True, **self.connect_args)
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            if self.schema is not None:
                conn.execute(f'SET search_path TO "{self.schema}"')
        except BaseException:
            conn.close()
            raise
        with self._all_lock:
            self._all = [c for c in self._all if not c.closed]
            self._all.append(conn)
        self._local.conn = conn
        self._local.generation = self._generation
        return conn

    def connect(self) -> None:
        self._connection()  # fail early, in open(), when the server is not there

    def disconnect(self) -> None:
        with self._all_lock:
            self._generation += 1
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    @contextmanager
    def transaction(self, write: bool) -> Iterator[Tx]:
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cursor:
            yield Tx(cursor, self)

    def placeholders(self, sql: str) -> str:
        return _translate(sql)

    def is_conflict(self, exc: BaseException) -> bool:
        return isinstance(exc, _CONFLICTS)

    # ----------------------------------------------------------- migrations

    def lock_migrations(self, tx: Tx) -> None:
        key = zlib.crc32(f"postroom-migrations:{self.schema or ''}".encode())
        tx.execute("SELECT pg_advisory_xact_lock(?::bigint)", (key,))

    def prepare_migrations(self, tx: Tx) -> None:
        if self.schema is not None:
            tx.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

    def run_script(self, tx: Tx, sql: str) -> None:
        tx.script(sql)

    def text_columns(self, tx: Tx) -> list[tuple[str, str]]:
        rows = tx.all(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema "
            "AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE' "
            "WHERE c.table_schema = current_schema() AND c.data_type IN "
            "('text', 'character varying', 'character', 'json', 'jsonb') "
            "ORDER BY c.table_name, c.ordinal_position"
        )
        return [(str(table), str(column)) for table, column in rows]

    def foreign_keys(self, tx: Tx) -> list[tuple[str, str, str, str]]:
        rows = tx.all(
            "SELECT k.table_name, k.column_name, u.table_name, u.column_name "
            "FROM information_schema.referential_constraints r "
            "JOIN information_schema.key_column_usage k "
            "ON k.constraint_schema = r.constraint_schema "
            "AND k.constraint_name = r.constraint_name "
            "JOIN information_schema.key_column_usage u "
            "ON u.constraint_schema = r.unique_constraint_schema "
            "AND u.constraint_name = r.unique_constraint_name "
            "AND u.ordinal_position = k.position_in_unique_constraint "
            "WHERE r.constraint_schema = current_schema()"
        )
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    # ------------------------------------------------------------- values

    def datetime_param(self, value: datetime) -> Any:
        return to_utc(value)

"""The PostgreSQL interaction store: the one several gateway processes share.

All queries and the migration runner are the kernel's
(:class:`postroom.store.base.SQLStoreBase`); this module adds the dialect:

- one psycopg 3 connection per thread of the kernel's pool (no pool library);
- ``?`` placeholders become ``%s``;
- writers run under READ COMMITTED and race on the dedupe keys' primary
  key: the loser gets a unique violation when the winner commits, and its
  whole transaction is run again, now seeing the winner's keys (serialisation
  failures and deadlocks are run again the same way);
- the outbox is claimed with ``FOR UPDATE SKIP LOCKED``;
- migrations run under a transaction-scoped advisory lock, so processes
  starting together apply each migration once.
"""

from __future__ import annotations

import functools
import re
import threading
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ClassVar

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from postroom.config.options import OptionSchema, Scope
from postroom.store.base import SQLStoreBase, Tx, to_utc
from postroom_postgresql.lock import SessionLock

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

#: Errors after which running the same transaction again can succeed.
_CONFLICTS = (errors.UniqueViolation, errors.SerializationFailure, errors.DeadlockDetected)


@functools.lru_cache(maxsize=1024)
def _translate(query: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (and a literal ``%`` to ``%%``)."""
    return query.replace("%", "%%").replace("?", "%s")


class PostgreSQLStore(SQLStoreBase):
    """Options: ``dsn`` (libpq connection string or URL, required) and
    ``schema`` (optional: the tables go there, created when missing; default:
    the connection's search path)."""

    backend: ClassVar[str] = "postgresql"
    claim_rows: ClassVar[str] = " FOR UPDATE SKIP LOCKED"
    share_rows: ClassVar[str] = " FOR SHARE"
    concurrent_writers: ClassVar[bool] = True
    database_errors: ClassVar[tuple[type[Exception], ...]] = (psycopg.Error,)

    @staticmethod
    def postroom_add_options(schema: OptionSchema) -> None:
        schema.add("dsn", "secret", scope=Scope.STORE, types=("postgresql",), required=True,
                   description="libpq connection string or URI, e.g. "
                   "`postgresql://postroom@db.example.com/postroom` "
                   "(use `${PGPASSWORD_ENV}` or `${file:...}` for a password).")
        schema.add("schema", scope=Scope.STORE, types=("postgresql",),
                   description="Database schema for postroom's tables (created when missing); "
                   "default: the connection's search path.")

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        options = self.options
        dsn = options.get("dsn")
        if hasattr(dsn, "reveal"):  # a config Secret: it may hold a password
            dsn = dsn.reveal()
        if not dsn:
            raise ValueError("the postgresql store needs a 'dsn' option")
        schema = options.get("schema") or None
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema {schema!r}: use letters, digits and _ (at most 63)")
        self.dsn = str(dsn)
        self.schema: str | None = schema
        params = conninfo_to_dict(self.dsn)
        # A dead server must not hang a pool thread forever; say who we are.
        self._connect_args: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._connect_args["connect_timeout"] = 10
        if "application_name" not in params:
            self._connect_args["application_name"] = "postroom"
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._all_lock = threading.Lock()
        self._generation = 0

    def describe(self) -> str:
        """Host, port and database name from the DSN: never its password."""
        params = conninfo_to_dict(self.dsn)
        where = params.get("host") or "localhost"
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
        conn = psycopg.connect(self.dsn, autocommit=True, **self._connect_args)
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

    def acquire_gateway_lock(self) -> SessionLock:
        """The gateway lock: a session advisory lock (:mod:`postroom_postgresql.lock`)."""
        return SessionLock.acquire(self.dsn, self._connect_args, self.schema, self.describe())

    def _connect(self) -> None:
        self._connection()  # fail early, in open(), when the server is not there

    def _disconnect(self) -> None:
        with self._all_lock:
            self._generation += 1
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Tx]:
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cursor:
            yield Tx(cursor, _translate)

    def _is_conflict(self, exc: BaseException) -> bool:
        return isinstance(exc, _CONFLICTS)

    # ----------------------------------------------------------- migrations

    def _lock_migrations(self, tx: Tx) -> None:
        key = zlib.crc32(f"postroom-migrations:{self.schema or ''}".encode())
        tx.execute("SELECT pg_advisory_xact_lock(?::bigint)", (key,))

    def _prepare_migrations(self, tx: Tx) -> None:
        if self.schema is not None:
            tx.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

    def _run_script(self, tx: Tx, sql: str) -> None:
        tx.script(sql)

    # ------------------------------------------------------------- values

    def _dt_param(self, value: datetime) -> Any:
        return to_utc(value)

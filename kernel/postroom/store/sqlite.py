"""The embedded store: one SQLite file in WAL mode (the default driver).

One connection serves every thread of the kernel's pool, behind a lock:
SQLite allows one writer at a time anyway, and a single connection keeps
transactions simple. Writers start with ``BEGIN IMMEDIATE`` so two processes
sharing the file queue up on the busy timeout instead of failing half-way
(a deferred transaction that later needs to write would get SQLITE_BUSY).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from postroom.config.options import OptionSchema, Scope
from postroom.store.errors import DatabaseError, StoreError
from postroom.store.lock import FileLock, GatewayLock, ProcessLock
from postroom.store.sql.core import Now
from postroom.store.sql.dialect import SQLDialect
from postroom.store.sql.store import SQLStore
from postroom.store.sql.tx import Tx

#: RETURNING and partial indexes need SQLite 3.35.
MIN_SQLITE = (3, 35, 0)

_SYNCHRONOUS = {"OFF", "NORMAL", "FULL", "EXTRA"}


class SQLiteDialect(SQLDialect):
    """SQLite's connection and spelling: one connection, ``BEGIN IMMEDIATE`` for writers."""

    name: ClassVar[str] = "sqlite"
    migrations_package: ClassVar[str] = "postroom.store"
    database_errors: ClassVar[tuple[type[Exception], ...]] = (sqlite3.Error,)

    def __init__(self, path: str, busy_timeout: float, synchronous: str) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self.conn: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"SQLite database {self.path}"

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:" or self.path.startswith("file::memory:")

    def connect(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old: the store needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer"
            )
        if not self.in_memory:
            parent = os.path.dirname(os.path.abspath(self.path))
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"{self.describe()}: cannot make its folder {parent}: {exc.strerror or exc}"
                ) from exc
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # we say BEGIN and COMMIT ourselves
            check_same_thread=False,  # the lock below serialises the threads
        )
        try:
            if not self.in_memory:
                self._enable_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (a lasting property of the file).

        Changing the journal mode needs an exclusive lock, and SQLite answers
        SQLITE_BUSY at once, without its busy handler, when another process
        is opening the same new file: so wait here, up to the busy timeout.
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")

    def disconnect(self) -> None:
        with self._lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

    @contextmanager
    def transaction(self, write: bool) -> Iterator[Tx]:
        with self._lock:
            conn = self.conn
            if conn is None:
                raise StoreError("the sqlite store is closed")
            cursor = conn.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield Tx(cursor, self)
                cursor.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            finally:
                cursor.close()

    def text_columns(self, tx: Tx) -> list[tuple[str, str]]:
        tables = [
            str(row[0])
            for row in tx.all(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
            )
        ]
        found = []
        for table in tables:
            for column in tx.all(f'PRAGMA table_info("{table}")'):
                declared = str(column[2]).upper()
                if declared in ("", "TEXT") or "CHAR" in declared or "CLOB" in declared:
                    found.append((table, str(column[1])))
        return found

    def foreign_keys(self, tx: Tx) -> list[tuple[str, str, str, str]]:
        found = []
        for (table,) in tx.all("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in tx.all(f'PRAGMA foreign_key_list("{table}")'):
                # id, seq, table, from, to, ...
                found.append((str(table), str(row[3]), str(row[2]), str(row[4])))
        return found

    def run_script(self, tx: Tx, sql: str) -> None:
        # executescript() would commit our transaction first: split instead.
        statement = ""
        for line in sql.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                tx.execute(statement)
                statement = ""
        if statement.strip() and not _only_comments(statement):
            raise StoreError(f"unterminated statement in migration: {statement.strip()[:80]!r}")


class SQLiteStore(SQLStore):
    """Options: ``path`` (the database file; parent directories are created),
    ``busy-timeout`` (seconds to wait for another process's write, default 10),
    ``synchronous`` (``FULL`` by default: the source deletes a message once the
    commit returns, so the commit must survive a power cut; ``NORMAL`` is faster
    and loses nothing when only the process crashes).
    """

    dialect: SQLiteDialect

    @staticmethod
    def postroom_add_options(schema: OptionSchema) -> None:
        schema.add(
            "path",
            "path",
            scope=Scope.STORE,
            types=("sqlite",),
            default="var/postroom.db",
            description="SQLite database file, relative to the configuration file's "
            "directory; parent folders are created.",
        )
        schema.add(
            "busy-timeout",
            "float",
            scope=Scope.STORE,
            types=("sqlite",),
            default="10",
            minimum=0,
            maximum=3600,
            description="Seconds to wait for another process's write lock.",
        )
        schema.add(
            "synchronous",
            "choice",
            scope=Scope.STORE,
            types=("sqlite",),
            default="FULL",
            choices=("FULL", "NORMAL"),
            description="SQLite `synchronous` pragma (with WAL). FULL survives a power "
            "cut after the mail server was told to delete; NORMAL is faster.",
        )

    def __init__(self, options: Mapping[str, Any] | None = None, now: Now | None = None) -> None:
        """Built as ``cls(options, now=...)``: the site's ``store:`` mapping
        without ``driver``, and the kernel's clock."""
        self.options: dict[str, Any] = dict(options or {})
        path = self.options.get("path")
        if not path:
            raise ValueError("the sqlite store needs a 'path' option")
        busy_timeout = float(
            self.options.get("busy-timeout", self.options.get("busy_timeout", 10.0))
        )
        synchronous = str(self.options.get("synchronous", "FULL")).upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        super().__init__(SQLiteDialect(os.fspath(path), busy_timeout, synchronous), now)

    @property
    def path(self) -> str:
        return self.dialect.path

    def acquire_gateway_lock(self) -> GatewayLock:
        """The gateway lock (:mod:`postroom.store.lock`): ``flock`` on
        ``<path>.lock``; for a database in memory, a lock of this store object."""
        if self.dialect.in_memory:
            owner = self.__dict__.setdefault("_gateway_owner", threading.Lock())
            return ProcessLock.acquire(owner, self.describe())
        return FileLock.acquire(self.path + ".lock", self.describe())


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


class MemoryStore(SQLiteStore):
    """A throwaway store in memory (``postroom ingest`` without a site)."""

    @staticmethod
    def postroom_add_options(schema: OptionSchema) -> None:
        """No options: nothing about a throwaway store is worth configuring."""

    def __init__(self, options: Mapping[str, Any] | None = None, now: Now | None = None) -> None:
        super().__init__({**dict(options or {}), "path": ":memory:"}, now)

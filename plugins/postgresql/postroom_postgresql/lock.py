"""The gateway lock of a PostgreSQL store: a session advisory lock.

One gateway process owns a store (see :mod:`postroom.store.lock`). Here the
lock is ``pg_try_advisory_lock`` on a connection of its own, held for as long
as the gateway runs: the server releases it when that session ends, however
the process died, so a SIGKILLed gateway needs no clean-up. The key is made
from the schema's name, so two sites in two schemas of one database are two
stores.

The price of a session lock: if the session is lost (the server restarted, a
network cut, ``pg_terminate_backend``), the lock is gone and another gateway
may take the store. :meth:`SessionLock.check` notices (the gateway calls it
every few seconds and stops when it fails); TCP keepalives make a silent
network cut fail the check within about half a minute instead of hanging it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from typing import Any

import psycopg

from postroom.api import GatewayLocked, GatewayLockLost

#: libpq keepalives on the lock's session: a dead peer is noticed in ~30 s
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 4,
}


def lock_key(schema: str | None) -> int:
    """The advisory lock's key (bigint) for the store in *schema*."""
    return zlib.crc32(f"postroom-gateway:{schema or ''}".encode())


class SessionLock:
    """A session-level advisory lock on a dedicated connection."""

    def __init__(self, conn: psycopg.Connection[Any], store: str) -> None:
        self._conn: psycopg.Connection[Any] | None = conn
        self.store = store
        self._lock = threading.Lock()  # check() and release() may come from two threads

    @classmethod
    def acquire(
        cls, dsn: str, connect_args: dict[str, Any], schema: str | None, store: str
    ) -> SessionLock:
        """Take the lock of the store in *schema*; :class:`GatewayLocked` when
        another session holds it (the message names that session's process)."""
        args = {**_KEEPALIVES, **connect_args}
        # what an operator sees in pg_stat_activity, and the second gateway's message
        args["application_name"] = f"postroom gateway pid {os.getpid()}"[:63]
        conn = psycopg.connect(dsn, autocommit=True, **args)
        try:
            key = lock_key(schema)
            row = conn.execute("SELECT pg_try_advisory_lock(%s::bigint)", (key,)).fetchone()
            if row is None or not row[0]:
                raise GatewayLocked(store, _holder(conn, key))
        except BaseException:
            conn.close()
            raise
        return cls(conn, store)

    def check(self) -> None:
        """A round trip on the lock's session: if it fails, the lock is gone."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise GatewayLockLost(f"{self.store}: the gateway lock was released")
            try:
                conn.execute("SELECT 1")
            except psycopg.Error as exc:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
                self._conn = None
                detail = str(exc).strip().splitlines()
                raise GatewayLockLost(
                    f"{self.store}: lost the database session holding the gateway lock "
                    f"({detail[0] if detail else type(exc).__name__}); another gateway "
                    "may take the store now, so this one stops"
                ) from exc

    def release(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # ending the session releases the lock


def _holder(conn: psycopg.Connection[Any], key: int) -> str | None:
    """Who holds the lock: the holding session's application name, host and start."""
    row = conn.execute(
        "SELECT a.application_name, a.client_addr::text, a.backend_start"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.database = ("
        "   SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid = 0 AND l.objid = %s::bigint::oid AND l.objsubid = 1",
        (key,),
    ).fetchone()
    if row is None:
        return None
    name, host, started = row
    where = f" from {host}" if host else ""
    return f"{name or 'a session'}{where}, since {started:%Y-%m-%d %H:%M:%S %Z}".strip()

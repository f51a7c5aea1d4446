"""The gateway lock: one gateway process owns a store at a time.

Until mailboxes are leased, two gateways on one store would race each other
for the same messages, and each would re-queue the other's in-flight sends at
start (double sends). So :class:`~postroom.services.gateway.Gateway` takes an
exclusive lock on its store before any mailbox or outbox work, holds it while
it runs and gives it back when it stops; a second gateway gets
:class:`GatewayLocked` at once. Commands that only queue work (``postroom
send``, ``ingest -c``, ``quarantine replay``) take no lock: the lock holder
does the sending.

A store driver offers the lock with a method ``acquire_gateway_lock()``
returning a :class:`GatewayLock` (blocking; the kernel calls it in its thread
pool). The locks here:

- :class:`FileLock`, for SQLite: ``flock`` on ``<database>.lock`` beside the
  database file. Not a POSIX (``fcntl``) lock on the database itself: closing
  any descriptor of a file drops every POSIX lock the process holds on it, which
  breaks SQLite's own locking. The kernel releases an ``flock`` when the holder
  exits in any way, SIGKILL included, so nothing needs cleaning up after a crash.
- :class:`ProcessLock`, for a store that lives in one process (``memory``).

PostgreSQL's (a session advisory lock) ships with its driver.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import threading
import time
from typing import Protocol, runtime_checkable

from postroom.store.errors import StoreError

#: what a store driver offers when it can be locked (see :class:`GatewayLock`)
ACQUIRE_METHOD = "acquire_gateway_lock"


class GatewayLocked(StoreError):
    """Another gateway process holds the store (exit status 3)."""

    def __init__(self, store: str, holder: str | None) -> None:
        self.store = store
        #: who holds it, as far as the lock can tell (pid, host, since when), or None
        self.holder = holder
        super().__init__(locked_message(store, holder))


class GatewayLockLost(StoreError):
    """The lock was lost while the gateway ran (e.g. its database session died):
    another gateway may take the store now, so this one must stop."""


@runtime_checkable
class GatewayLock(Protocol):
    """An exclusive hold on one store. Both methods block (run them in a thread)."""

    def check(self) -> None:
        """Raise :class:`GatewayLockLost` when the lock is no longer held."""

    def release(self) -> None:
        """Give the lock back (once; later calls do nothing)."""


def holder_note() -> str:
    """Who holds a lock, as the lock file records it: pid, host, since when, command."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv else ""
    note = f"pid {os.getpid()} on {socket.gethostname()} since {since}"
    return f"{note}: {command[:120]}" if command else note


def locked_message(store: str, holder: str | None) -> str:
    """The one line a second gateway prints before it exits."""
    who = f" ({holder})" if holder else ""
    return (
        f"{store} is in use by another gateway{who}: one gateway process owns a store; "
        "stop that one first ('postroom send', 'ingest -c' and 'quarantine replay' "
        "work beside it)"
    )


class FileLock:
    """``flock(LOCK_EX | LOCK_NB)`` on a lock file; the file records the holder.

    The file is never deleted: a process that opened it just before would lock
    an unlinked file while a third locks a new one.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: str, store: str) -> FileLock:
        """Lock *path* (made when missing, with its folder) for the store described
        as *store*; :class:`GatewayLocked` when another open file holds it."""
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(
                f"{store}: cannot open its lock file {path}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise GatewayLocked(store, holder) from None
            raise StoreError(f"{store}: cannot lock {path}: {exc.strerror or exc}") from exc
        with contextlib.suppress(OSError):  # the note is for people; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, (holder_note() + "\n").encode(), 0)
        return cls(path, fd)

    def check(self) -> None:
        """An ``flock`` lasts as long as its open file: nothing can take it away."""
        if self._fd is None:
            raise GatewayLockLost(f"the lock {self.path} was released")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor drops the flock


def _read(fd: int) -> str | None:
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        return None
    return text or None


class ProcessLock:
    """The lock of a store that lives in one process (``memory``): a flag."""

    def __init__(self, owner: threading.Lock) -> None:
        self._owner: threading.Lock | None = owner

    @classmethod
    def acquire(cls, owner: threading.Lock, store: str) -> ProcessLock:
        if not owner.acquire(blocking=False):
            raise GatewayLocked(store, f"pid {os.getpid()}, this process")
        return cls(owner)

    def check(self) -> None:
        if self._owner is None:
            raise GatewayLockLost("the in-process lock was released")

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.release()

"""A pool of connections, driven from the reactor thread.

Why a pool of our own: opening an SMTP submission connection costs a TCP and a
TLS handshake, EHLO twice and an AUTH (often a password hash on the server),
so a busy outbox should reuse connections; but the server forgets an idle
client after a few minutes (Postfix's ``smtpd_timeout`` is 300 s), so an idle
connection must be checked before it is trusted again, and closed before the
server closes it on us.

The pool knows nothing of SMTP: it is given three functions returning
Deferreds (*open* a connection, *check* one, *dispose* of one) and a clock, so
its rules are unit-tested with a fake clock and fake connections:

* at most *size* connections exist at once (open, opening or in use); an
  :meth:`~ConnectionPool.acquire` beyond that waits, first come first served;
* a released connection is reused, most recently used first (so the others
  age and get closed when traffic drops);
* one idle for longer than *check_idle* is checked before reuse (a NOOP); a
  failed check disposes of it and opens a new one, which the caller never sees;
* one idle for *max_idle* or longer is disposed of (a timer on the clock);
* :meth:`~ConnectionPool.close` disposes of every connection, waiting for
  those in use to come back.

All methods run on the reactor thread; the functions it is given may run
their blocking part in a thread pool.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from postroom.api import SendError

log = logging.getLogger(__name__)

C = TypeVar("C")


class PoolClosed(SendError):
    """The pool is closing: the send is retried later (by this process or the next)."""

    def __init__(self) -> None:
        super().__init__("the SMTP sender is shutting down", permanent=False)


@attrs.define
class PoolStats:
    """Counters, for tests and metrics: what the pool did since it was made."""

    opened: int = 0  # connections successfully opened
    open_failures: int = 0
    reused: int = 0  # acquisitions served by an idle connection
    checks: int = 0  # NOOP checks made before a reuse
    check_failures: int = 0  # ...that failed (the connection was replaced)
    expired: int = 0  # disposed of after max_idle
    discarded: int = 0  # released broken and disposed of
    waited: int = 0  # acquisitions that had to wait for a free slot


class ConnectionPool(Generic[C]):
    """At most *size* connections; see the module documentation for the rules."""

    def __init__(
        self,
        *,
        size: int,
        check_idle: float,
        max_idle: float,
        clock: Any,
        open: Callable[[], Deferred[C]],
        check: Callable[[C], Deferred[bool]],
        dispose: Callable[[C], Deferred[None]],
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs room for at least one connection")
        self.size = size
        self.check_idle = check_idle
        self.max_idle = max_idle
        self.clock = clock
        self._open = open
        self._check = check
        self._dispose = dispose
        self.stats = PoolStats()
        #: idle connections with the time they were released, oldest first
        self._idle: list[tuple[C, float]] = []
        #: connections that exist or are being opened (idle ones included)
        self._count = 0
        self._waiters: deque[Deferred[None]] = deque()
        self._reaper: Any = None
        self._closed = False
        self._disposing: set[Deferred[None]] = set()
        self._drained: list[Deferred[None]] = []

    # -- what tests and metrics read

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def in_use(self) -> int:
        """Connections handed out or being opened/checked."""
        return self._count - len(self._idle)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # -- taking and giving back

    def acquire(self) -> Deferred[C]:
        """A connection for the caller's exclusive use; give it back with :meth:`release`."""
        return ensureDeferred(self._acquire())

    async def _acquire(self) -> C:
        waited = False
        while True:
            if self._closed:
                raise PoolClosed()
            self._expire()
            if self._idle:
                conn, since = self._idle.pop()
                return await self._reuse(conn, self.clock.seconds() - since)
            if self._count < self.size:
                self._count += 1
                return await self._open_counted()
            if not waited:
                self.stats.waited += 1
                waited = True
            waiter: Deferred[None] = Deferred(canceller=self._waiters.remove)
            self._waiters.append(waiter)
            await waiter

    async def _reuse(self, conn: C, idle_for: float) -> C:
        if idle_for > self.check_idle:
            self.stats.checks += 1
            try:
                alive = await self._check(conn)
            except Exception:
                log.debug("idle connection check raised", exc_info=True)
                alive = False
            if not alive:
                self.stats.check_failures += 1
                log.info("an idle SMTP connection did not answer NOOP; opening a new one")
                self._start_dispose(conn)
                return await self._open_counted()  # the slot stays ours
        self.stats.reused += 1
        return conn

    async def _open_counted(self) -> C:
        """Open a connection for a slot already counted in ``_count``."""
        try:
            conn = await self._open()
        except BaseException:
            self.stats.open_failures += 1
            self._count -= 1
            self._wake_one()
            self._maybe_drained()
            raise
        self.stats.opened += 1
        return conn

    def release(self, conn: C, *, broken: bool = False) -> None:
        """Give *conn* back; *broken* ones (state unknown) are disposed of."""
        if broken or self._closed:
            if broken:
                self.stats.discarded += 1
            self._count -= 1
            self._start_dispose(conn)
            self._wake_one()
            self._maybe_drained()
            return
        self._idle.append((conn, self.clock.seconds()))
        self._wake_one()  # a waiter resumes at once and takes it
        self._expire()  # max_idle 0: nobody took it, so it goes now
        self._schedule_reaper()

    # -- idle expiry

    def _expire(self) -> None:
        now = self.clock.seconds()
        keep = []
        for conn, since in self._idle:
            if now - since >= self.max_idle:
                self.stats.expired += 1
                self._count -= 1
                self._start_dispose(conn)
            else:
                keep.append((conn, since))
        if len(keep) != len(self._idle):
            self._idle = keep
            self._wake_one()

    def _schedule_reaper(self) -> None:
        if self._closed or not self._idle:
            return
        if self._reaper is not None and self._reaper.active():
            return
        oldest = min(since for _conn, since in self._idle)
        delay = max(0.0, oldest + self.max_idle - self.clock.seconds())
        self._reaper = self.clock.callLater(delay, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        self._expire()
        self._schedule_reaper()

    # -- helpers

    def _wake_one(self) -> None:
        if self._waiters:
            self._waiters.popleft().callback(None)

    def _start_dispose(self, conn: C) -> None:
        try:
            d = self._dispose(conn)
        except Exception:
            log.warning("closing an SMTP connection failed", exc_info=True)
            return
        self._disposing.add(d)

        def done(result: Any) -> None:
            self._disposing.discard(d)
            if isinstance(result, Failure):
                log.warning("closing an SMTP connection failed: %s", result.getErrorMessage())
            self._maybe_drained()

        d.addBoth(done)

    def _maybe_drained(self) -> None:
        if self._closed and self._count == 0 and not self._disposing:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    # -- the end

    def close(self) -> Deferred[None]:
        """Dispose of every connection; fires once those in use came back and are closed.

        Callers still waiting for a connection fail with :class:`PoolClosed`.
        """
        self._closed = True
        if self._reaper is not None and self._reaper.active():
            self._reaper.cancel()
        self._reaper = None
        idle, self._idle = self._idle, []
        for conn, _since in idle:
            self._count -= 1
            self._start_dispose(conn)
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.callback(None)  # wakes into the closed check, which raises PoolClosed
        done: Deferred[None] = Deferred()
        self._drained.append(done)
        self._maybe_drained()
        return done

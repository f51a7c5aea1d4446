"""Running blocking and CPU-bound calls off the reactor thread.

The kernel owns one thread pool; database drivers and other blocking
libraries go through a :class:`Runner`. (Message content is parsed and
analysed in worker processes instead: :mod:`postroom.workers`.) A kernel built
without a runner makes a :class:`ThreadPoolRunner` of its own, so blocking work
never runs on the reactor thread. Unit tests ask for :class:`InlineRunner`
explicitly: it runs the call at once, on the calling thread, and returns a
fired Deferred.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class Runner(Protocol):
    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]: ...


class ThreadPoolRunner:
    """Runs calls in a Twisted ThreadPool; started and stopped with the reactor."""

    #: the default size of a pool made by :meth:`create`
    DEFAULT_SIZE = 10

    def __init__(self, reactor: Any, pool: ThreadPool) -> None:
        self.reactor = reactor
        self.pool = pool

    @classmethod
    def create(
        cls, reactor: Any, size: int = DEFAULT_SIZE, name: str = "postroom"
    ) -> ThreadPoolRunner:
        """A pool of up to *size* threads, started when *reactor* runs (at once
        when it runs already) and stopped when it shuts down.

        Calls made before the reactor runs wait for it; no thread exists until
        then, so a kernel that is built and never run (``postroom check``)
        leaves nothing behind that would keep the process alive.
        """
        for needed in ("callWhenRunning", "addSystemEventTrigger"):
            if not hasattr(reactor, needed):
                raise TypeError(
                    f"{reactor!r} has no {needed}(): it cannot run a thread pool; "
                    "pass a runner (InlineRunner for tests driven by task.Clock)"
                )
        pool = ThreadPool(minthreads=0, maxthreads=size, name=name)
        reactor.callWhenRunning(pool.start)
        reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
        return cls(reactor, pool)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)


class InlineRunner:
    """Runs the call at once on the calling thread (unit tests, one-shot tools)."""

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        try:
            return succeed(fn(*args, **kwargs))
        except BaseException:
            return fail(Failure())

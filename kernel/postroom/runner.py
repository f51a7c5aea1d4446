"""Running blocking and CPU-bound calls off the reactor thread.

The kernel owns one thread pool; database drivers and other blocking
libraries go through a :class:`Runner`. (Message content is parsed and
analysed in worker processes instead: :mod:`postroom.workers`.) Tests and
``postroom ingest`` may use :class:`InlineRunner`, which runs the call at once
and returns a fired Deferred.
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

    def __init__(self, reactor: Any, pool: ThreadPool) -> None:
        self.reactor = reactor
        self.pool = pool

    @classmethod
    def create(cls, reactor: Any, size: int = 10, name: str = "postroom") -> ThreadPoolRunner:
        pool = ThreadPool(minthreads=1, maxthreads=size, name=name)
        pool.start()
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

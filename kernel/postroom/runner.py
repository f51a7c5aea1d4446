"""Running blocking and CPU-bound calls off the reactor thread.

The kernel owns one thread pool; database drivers, parsing and other blocking
libraries go through a :class:`Runner`. Tests and ``postroom ingest`` may use
:class:`InlineRunner`, which runs the call at once and returns a fired Deferred.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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


def _exit_with_parent(pid: int) -> None:
    """Worker initializer: exit when the gateway process is gone.

    A gateway killed with SIGKILL cannot shut its pool down, and the workers
    (children of the forkserver, not of the gateway) would wait for work
    forever; a pidfd becomes readable when that process exits.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # the gateway is already gone, or no pidfd support
        if not _alive(pid):
            os._exit(0)
        return

    def watch() -> None:
        select.select([pidfd], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="postroom-exit-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProcessPoolRunner:
    """Runs CPU-bound, picklable calls (parsing) in worker processes.

    The GIL keeps threads on one core; a pool of processes lets parsing use
    every core while the reactor process does I/O and the store. Calls are
    waited for in *threads* (a thread runner), so the reactor never blocks. A
    worker that dies (out of memory, a crash in a C library) breaks the pool:
    that call fails (the message is retried, then quarantined) and a new pool
    is made for the next call.
    """

    def __init__(self, threads: Runner, workers: int) -> None:
        self.threads = threads
        self.workers = workers
        self._executor: Any = None
        self._lock = threading.Lock()

    def _pool(self) -> Any:
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("forkserver")
                self._executor = ProcessPoolExecutor(
                    self.workers,
                    mp_context=context,
                    initializer=_exit_with_parent,
                    initargs=(os.getpid(),),
                )
            return self._executor

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        pool = self._pool()
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            with self._lock:
                if self._executor is pool:
                    self._executor = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        if kwargs:
            raise TypeError("ProcessPoolRunner.run takes positional arguments only")
        return self.threads.run(self._call, fn, *args)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            # Don't wait: a worker deep in a huge message must not hold up a
            # stop; queued calls are cancelled, idle workers exit at once.
            executor.shutdown(wait=False, cancel_futures=True)

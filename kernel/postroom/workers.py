"""Worker processes that can be killed: the per-message budget.

A message's content is hostile input. Python's ``re`` holds the GIL, so a
slow scan in a *thread* stalls the reactor as surely as one on the reactor
thread, and a thread cannot be stopped. A process can. :class:`BudgetPool`
runs calls in worker processes (pebble's pool, which kills and replaces a
worker on demand, unlike ``concurrent.futures``) and gives each call a budget:

* **CPU time** per call (``RLIMIT_CPU``, set afresh before each call): CPU
  seconds, not wall-clock ones, so a loaded machine does not turn slow
  messages into false alarms. Over it, the kernel sends the worker
  ``SIGXCPU`` and it dies;
* **memory** per worker (``RLIMIT_AS``, address space): an allocation over it
  raises ``MemoryError``, and the worker exits at once rather than go on in a
  doubtful state;
* a **wall-clock** safety net, many times the CPU budget, for a worker that
  waits on something forever without using CPU.

Each ends the call with :class:`OverBudget`; pebble starts a new worker. Stop
never waits for a busy worker: they are killed. Workers exit with the
gateway even when it is killed with SIGKILL (a pidfd watch).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import resource
import select
import signal
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError as FutureCancelled
from typing import Any, TypeVar

import attrs
from pebble import ProcessExpired, ProcessPool
from twisted.internet.defer import CancelledError, Deferred

log = logging.getLogger(__name__)

T = TypeVar("T")

#: exit status of a worker whose call ran out of memory (EX_SOFTWARE + 1: not a signal)
EXIT_OUT_OF_MEMORY = 71
#: the wall-clock safety net, as a multiple of the CPU budget
WALL_FACTOR = 10


@attrs.frozen
class Budget:
    """What one call may use. ``memory`` is bytes of address space per worker (0: no limit)."""

    cpu_seconds: float = 30.0
    memory: int = 0

    @property
    def wall_seconds(self) -> float:
        return max(60.0, self.cpu_seconds * WALL_FACTOR)

    def describe(self) -> str:
        memory = f"{self.memory // (1 << 20)} MiB" if self.memory else "no limit"
        return f"CPU time {self.cpu_seconds:g} s per message, memory {memory} per worker"


class OverBudget(Exception):
    """A call used more than its budget; its worker was killed and replaced.

    Retrying would cost as much again: the caller quarantines the message at
    once. ``reason`` says which limit, for the quarantine record.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WorkerDied(Exception):
    """A worker died for another reason (a crash in a C library, killed from outside)."""


# ----------------------------------------------------------------- in the worker

#: set by the initializer in each worker process
_budget: Budget | None = None


def _initialise(
    parent: int, budget: Budget, setup: Callable[..., None] | None, setup_args: tuple[Any, ...]
) -> None:
    """Worker initializer: limits, exit-with-parent, then the caller's own set-up."""
    global _budget
    _budget = budget
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a killed worker leaves no core file
    if budget.memory:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = budget.memory if hard == resource.RLIM_INFINITY else min(budget.memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the gateway to handle
    _exit_with_parent(parent)
    if setup is not None:
        setup(*setup_args)


def _exit_with_parent(pid: int) -> None:
    """Exit when the gateway process is gone.

    A gateway killed with SIGKILL cannot stop its pool, and the workers
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


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _budgeted(fn: Callable[..., T], *args: Any) -> T:
    """Run one call under the CPU budget (in the worker)."""
    if _budget is not None:
        soft = math.ceil(_cpu_used() + _budget.cpu_seconds)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    try:
        return fn(*args)
    except MemoryError:
        # The heap may be half-built and other objects doubtful: end this
        # worker; the pool starts a fresh one.
        os._exit(EXIT_OUT_OF_MEMORY)


# ------------------------------------------------------------- in the gateway


class BudgetPool:
    """Worker processes running picklable calls under a :class:`Budget`.

    ``run`` returns a Deferred fired in the reactor thread; nothing waits in a
    thread. *setup* (a picklable top-level function) runs once in each new
    worker with *setup_args*, e.g. to load the plugins.
    """

    def __init__(
        self,
        reactor: Any,
        workers: int,
        budget: Budget,
        setup: Callable[..., None] | None = None,
        setup_args: tuple[Any, ...] = (),
    ) -> None:
        self.reactor = reactor
        self.workers = workers
        self.budget = budget
        self._setup = setup
        self._setup_args = setup_args
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _get_pool(self) -> ProcessPool:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is stopped")
            if self._pool is None:
                self._pool = ProcessPool(
                    max_workers=self.workers,
                    initializer=_initialise,
                    initargs=(os.getpid(), self.budget, self._setup, self._setup_args),
                    context=multiprocessing.get_context("forkserver"),
                )
            return self._pool

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn(*args)`` in a worker; OverBudget when it exceeds the budget."""
        if kwargs:
            raise TypeError("BudgetPool.run takes positional arguments only")
        try:
            future = self._get_pool().schedule(
                _budgeted, args=(fn, *args), timeout=self.budget.wall_seconds
            )
        except RuntimeError:  # pebble's pool broke (every worker died at once): a new one
            self._discard()
            future = self._get_pool().schedule(
                _budgeted, args=(fn, *args), timeout=self.budget.wall_seconds
            )
        d: Deferred[T] = Deferred(lambda _: future.cancel())

        def done(_: Any) -> None:
            self.reactor.callFromThread(self._deliver, d, future)

        future.add_done_callback(done)
        return d

    def _deliver(self, d: Deferred[Any], future: Any) -> None:
        if d.called:
            return  # cancelled by the caller
        try:
            result = future.result()
        except (FutureCancelled, CancelledError):
            d.errback(CancelledError())
        except TimeoutError:
            d.errback(
                OverBudget(
                    f"analysis took more than {self.budget.wall_seconds:g} s of wall-clock time "
                    "(the worker was killed)"
                )
            )
        except ProcessExpired as exc:
            d.errback(self._expired(exc.exitcode))
        except BaseException as exc:  # the call's own exception, or a broken pool
            d.errback(exc)
        else:
            d.callback(result)

    def _expired(self, exitcode: int | None) -> Exception:
        if exitcode == -signal.SIGXCPU:
            return OverBudget(
                f"analysis used more than {self.budget.cpu_seconds:g} s of CPU time "
                "(gateway.analysis-cpu-limit; the worker was killed)"
            )
        if exitcode == EXIT_OUT_OF_MEMORY:
            limit = self.budget.memory // (1 << 20)
            return OverBudget(
                f"analysis needed more than {limit} MiB of memory "
                "(gateway.worker-memory-limit; the worker was stopped)"
            )
        return WorkerDied(f"the worker process died (exit status {exitcode})")

    def _discard(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()

    def close(self, grace: float = 2.0) -> None:
        """Stop every worker; a busy one is killed after *grace* seconds at most.

        Blocking (it joins pebble's threads): call it from a thread or at exit.
        """
        with self._lock:
            pool, self._pool = self._pool, None
            self._closed = True
        if pool is None:
            return
        pool.stop()
        try:
            pool.join(timeout=grace)
        except TimeoutError:
            log.warning("worker processes did not stop within %s s", grace)

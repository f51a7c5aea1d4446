"""The budgeted worker processes that parse and analyse messages (postroom.workers)."""

from __future__ import annotations

import os
import queue
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from postroom.model import RawRef
from postroom.parsing.limits import ParseLimits
from postroom.parsing.parser import parse_message
from postroom.workers import Budget, BudgetPool, OverBudget, WorkerDied

#: how long a test waits for a worker's answer before it fails (never a sleep)
ANSWER_TIMEOUT = 120


class ThreadCalls:
    """The one reactor method BudgetPool uses, as a queue the test drains."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, fn: Callable[..., Any], *args: Any) -> None:
        self.calls.put((fn, args))

    def result(self, d: Deferred[Any]) -> Any:
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        while not outcome:
            fn, args = self.calls.get(timeout=ANSWER_TIMEOUT)
            fn(*args)
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]


# -- functions the workers run (importable: workers load them by name)


def spin(pid_path: str) -> None:
    """Say which process is busy (a FIFO: the test's read waits for it), then spin."""
    with open(pid_path, "w") as fh:
        fh.write(str(os.getpid()))
    while True:
        pass


def busy_worker(workers: BudgetPool, tmp_path: Path) -> tuple[Deferred[Any], int]:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    d = workers.run(spin, str(fifo))
    with open(fifo) as fh:  # returns once the worker has opened it and written
        return d, int(fh.read())


def hog() -> int:
    return len(bytearray(1 << 30))


def exit_with(status: int) -> None:
    os._exit(status)


_set_up: list[str] = []


def remember(value: str) -> None:
    _set_up.append(value)


def set_up_values() -> list[str]:
    return list(_set_up)


@pytest.fixture
def reactor() -> ThreadCalls:
    return ThreadCalls()


def pool(reactor: ThreadCalls, **budget: Any) -> BudgetPool:
    return BudgetPool(reactor, 1, Budget(**budget), remember, ("ready",))


def test_calls_run_in_another_process_and_results_come_back(
    reactor: ThreadCalls, quickstart: Path
) -> None:
    workers = pool(reactor)
    try:
        assert reactor.result(workers.run(os.getpid)) != os.getpid()
        raw = RawRef.from_path(next((quickstart.parent / "maildir" / "new").iterdir()))
        parsed = reactor.result(workers.run(parse_message, raw, ParseLimits()))
        assert parsed.raw_sha256 == raw.sha256 and parsed.subject
        assert reactor.result(workers.run(set_up_values)) == ["ready"]  # set up once
        with pytest.raises(TypeError):
            workers.run(sorted, [2, 1], reverse=True)
    finally:
        workers.close()


def test_a_call_over_the_cpu_budget_is_killed_and_the_next_gets_a_new_worker(
    reactor: ThreadCalls, tmp_path: Path
) -> None:
    workers = pool(reactor, cpu_seconds=1)
    try:
        d, killed = busy_worker(workers, tmp_path)
        with pytest.raises(OverBudget, match="more than 1 s of CPU time"):
            reactor.result(d)
        fresh = reactor.result(workers.run(os.getpid))
        assert fresh != killed
        with pytest.raises(ProcessLookupError):
            os.kill(killed, 0)
    finally:
        workers.close()


def test_a_call_over_the_memory_limit_ends_its_worker(reactor: ThreadCalls) -> None:
    workers = pool(reactor, memory=512 << 20)
    try:
        with pytest.raises(OverBudget, match="more than 512 MiB of memory"):
            reactor.result(workers.run(hog))
        assert reactor.result(workers.run(sum, [1, 2, 3])) == 6
    finally:
        workers.close()


def test_a_worker_that_dies_fails_that_call_only(reactor: ThreadCalls) -> None:
    workers = pool(reactor)
    try:
        with pytest.raises(WorkerDied, match="exit status 3"):
            reactor.result(workers.run(exit_with, 3))
        assert reactor.result(workers.run(sum, [1, 2])) == 3
    finally:
        workers.close()


def test_an_exception_in_the_call_is_the_callers(reactor: ThreadCalls) -> None:
    workers = pool(reactor)
    try:
        with pytest.raises(ZeroDivisionError):
            reactor.result(workers.run(divmod, 1, 0))
    finally:
        workers.close()


def test_close_kills_a_busy_worker(reactor: ThreadCalls, tmp_path: Path) -> None:
    workers = pool(reactor, cpu_seconds=3600)
    d, busy = busy_worker(workers, tmp_path)
    workers.close(grace=0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(busy, 0)
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    d.addErrback(lambda f: None)
    with pytest.raises(RuntimeError, match="stopped"):
        workers.run(os.getpid)


def test_a_worker_ignores_ctrl_c(reactor: ThreadCalls) -> None:
    workers = pool(reactor)
    try:
        pid = reactor.result(workers.run(os.getpid))
        assert reactor.result(workers.run(signal.getsignal, signal.SIGINT)) == signal.SIG_IGN
        assert pid
    finally:
        workers.close()

"""The per-message budget seen from the kernel and the mailbox service."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from postroom import hookimpl
from postroom.kernel import Kernel
from postroom.model import FetchedMessage, ParsedMessage
from postroom.pipeline.analysis import Analysis
from postroom.runner import InlineRunner, ThreadPoolRunner
from postroom.services.gateway import Gateway
from postroom.workers import BudgetPool, OverBudget
from tests.conftest import run
from tests.hostile import slow_plugin
from tests.kernel.test_gateway import once

OVER = "analysis used more than 30 s of CPU time"


class OverBudgetFor(Analysis):
    """The kernel's analysis, except that the large sample message is over budget
    (what the worker pool answers for a message whose worker was killed)."""

    def __init__(self, inner: Analysis) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def parse_and_analyze(self, fetched: FetchedMessage, limits: Any,
                                mailbox: Any) -> ParsedMessage:
        message = await self.inner.parse_and_analyze(fetched, limits, mailbox)
        self.calls.append(message.subject)
        if "large" in message.subject:
            raise OverBudget(OVER)
        return message


def kernel_for(config: Path, **kw: Any) -> Kernel:
    return Kernel(config, reactor=task.Clock(), clock=task.Clock(), runner=InlineRunner(),
                  enabled_plugins=[], **kw)


def test_a_message_over_budget_is_quarantined_at_once_and_the_mailbox_goes_on(
    quickstart: Path,
) -> None:
    kernel = kernel_for(quickstart)
    analysis = OverBudgetFor(kernel.analysis)
    kernel.analysis = analysis
    ok, gateway = once(kernel)
    assert not ok  # something went wrong in this pass, and --once says so
    assert len(analysis.calls) == 4  # every message was analysed, once

    kernel = kernel_for(quickstart)
    run(kernel.open())
    entries = run(kernel.store.list_quarantine())
    interactions = run(kernel.store.list_interactions(100))
    run(kernel.close())
    assert len(entries) == 1
    assert entries[0].attempts == 1  # not retried: it would cost as much again
    assert entries[0].reason == f"over budget: {OVER}"
    assert entries[0].raw_sha256  # the raw bytes are kept for replay
    assert len(interactions) == 3  # the others went through
    assert os.listdir(quickstart.parent / "maildir" / "new") == []  # out of the mailbox's way
    health = gateway.health()["support"]
    assert health["quarantined"] == 1 and health["analysing"] == 0


def test_health_names_a_message_analysed_for_longer_than_the_budget(quickstart: Path) -> None:
    clock = task.Clock()
    kernel = Kernel(quickstart, reactor=task.Clock(), clock=clock, runner=InlineRunner(),
                    enabled_plugins=[])
    gateway = Gateway(kernel, once=True)
    mailbox = gateway.mailboxes[0]
    mailbox.health.analysing["1:42"] = clock.seconds()
    clock.advance(29)
    assert gateway.health()["support"]["stuck"] == []
    clock.advance(2)
    assert gateway.health()["support"]["stuck"] == [{"message": "1:42", "seconds": 31.0}]
    assert gateway.health()["support"]["analysing"] == 1


def test_a_threaded_kernel_analyses_in_budgeted_workers(quickstart: Path) -> None:
    from twisted.python.threadpool import ThreadPool

    pool = ThreadPool(1, 1)
    kernel = Kernel(quickstart, reactor=task.Clock(), runner=ThreadPoolRunner(task.Clock(), pool),
                    plugins=[("slow", slow_plugin)], enabled_plugins=[])
    assert isinstance(kernel.pool, BudgetPool)
    assert kernel.cpu_runner is kernel.pool
    assert kernel.budget.cpu_seconds == 30 and kernel.budget.memory == 2 << 30
    assert kernel.unbudgeted_warnings() == []  # a module plugin goes to the workers


def test_unbudgeted_analysis_is_warned_about(quickstart: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    from twisted.python.threadpool import ThreadPool

    class InProcess:
        @hookimpl
        def postroom_analyze(self) -> None:
            return None

    runner = ThreadPoolRunner(task.Clock(), ThreadPool(1, 1))
    kernel = Kernel(quickstart, reactor=task.Clock(), runner=runner,
                    plugins=[("acme-inline", InProcess())], enabled_plugins=[])
    [warning] = kernel.unbudgeted_warnings()
    assert "acme-inline" in warning and "without the per-message budget" in warning
    assert kernel.analysis.local == ("acme-inline",)

    site = tmp_path / "site.yaml"
    site.write_text(quickstart.read_text() + "gateway: {parse-workers: 0}\n")
    (tmp_path / "maildir").symlink_to(quickstart.parent / "maildir")
    threads = ThreadPoolRunner(task.Clock(), ThreadPool(1, 1))
    kernel = Kernel(site, reactor=task.Clock(), runner=threads, enabled_plugins=[])
    assert kernel.pool is None
    kernel = kernel_for(site)
    gateway = Gateway(kernel, once=True)
    with caplog.at_level(logging.WARNING, logger="postroom"):
        gateway.startService()
        run(gateway.stopService())
    assert "parse-workers is 0" in caplog.text

"""The retention job: purge old raw messages (and, optionally, old interactions).

A Twisted service on the kernel's clock (``retention: interval``) in the
gateway, and :func:`run_purge` for ``postroom purge``. Each run purges in
bounded batches, each its own short transaction in the kernel's thread pool
(:mod:`postroom.store.sql.purge`), so mail keeps flowing while it runs; what
it removed is logged in one line and counted in ``/metrics``
(``postroom_retention_purged_total{table=...}``). A failing run is logged and
tried again at the next interval.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from prometheus_client import Counter
from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

from postroom.config.retention import SECTION
from postroom.store.sql.dialect import to_utc

log = logging.getLogger(__name__)


def configured(kernel: Any) -> bool:
    """Whether the site purges anything at all."""
    config = kernel.config
    return bool(config.get(SECTION, "raw-max-age") or config.get(SECTION, "interactions-max-age"))


async def run_purge(kernel: Any, dry_run: bool = False) -> dict[str, int]:
    """One retention run over the site's store (its kernel open): rows per table
    purged (with *dry_run*: raw messages and interactions that would be)."""
    config = kernel.config
    now = to_utc(kernel.clock.seconds())
    limit = int(config.get(SECTION, "batch-size"))
    counts: dict[str, int] = {}
    interactions_age = float(config.get(SECTION, "interactions-max-age") or 0)
    if interactions_age:
        before = now - timedelta(seconds=interactions_age)
        found = await kernel.store.purge_interactions(before, limit, dry_run)
        counts.update(found)
    raw_age = float(config.get(SECTION, "raw-max-age") or 0)
    if raw_age:
        before = now - timedelta(seconds=raw_age)
        for key, value in (await kernel.store.purge_raw(before, limit, dry_run)).items():
            counts[key] = counts.get(key, 0) + value
    return counts


class RetentionService(service.Service):
    """Runs :func:`run_purge` every ``retention: interval`` on the kernel's clock."""

    name = "retention"

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.interval = float(kernel.config.get(SECTION, "interval"))
        self.purged = Counter(
            "postroom_retention_purged",
            "Rows removed by the retention job, by table",
            ["table"],
            registry=kernel.metrics.registry,
        )
        self._loop: task.LoopingCall | None = None
        self._running: Deferred[None] | None = None
        #: what the last run purged (tests, /health-like views)
        self.last: dict[str, int] | None = None

    def startService(self) -> None:
        super().startService()
        loop = task.LoopingCall(self._tick)
        loop.clock = self.kernel.clock
        loop.start(self.interval, now=False)
        self._loop = loop

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        running = self._running
        return running if running is not None and not running.called else None

    def _tick(self) -> Deferred[None] | None:
        if self._running is not None and not self._running.called:
            return None  # the last run is still going: skip, never overlap
        self._running = ensureDeferred(self.run_once())
        return None

    async def run_once(self) -> None:
        """One run; its failure is logged, never raised (the next interval tries again)."""
        try:
            counts = await run_purge(self.kernel)
        except Exception as exc:
            log.error("retention run failed: %s: %s", type(exc).__name__, exc)
            return
        self.last = counts
        for table, rows in counts.items():
            self.purged.labels(table).inc(rows)
        if counts:
            log.info("retention purged %s", _describe(counts))
        else:
            log.debug("retention: nothing to purge")


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{table}={rows}" for table, rows in sorted(counts.items()))

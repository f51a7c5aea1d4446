"""The hand-off to routing (the submit stage): at least once, after the commit.

Every committed interaction has a hand-off row in the store (``pending``).
This service calls ``postroom_submit`` for it, marks it ``done``, or marks it
``failed`` and tries again with back-off, forever (or, in a ``--once`` run,
up to ``max-attempts``). At start it picks up what an earlier process left
pending, so a crash between commit and hand-off only delays it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults

from postroom.backoff import Backoff
from postroom.model import HandoffState, Interaction

if TYPE_CHECKING:
    from postroom.kernel import Kernel

log = logging.getLogger(__name__)

_RECOVERY = "(recovering pending hand-offs)"
_FLUSH = "(recording finished hand-offs)"

#: successes recorded in one transaction at most (and whenever the service
#: falls idle): one fsync per batch instead of one per message
DONE_BATCH = 100
#: pending hand-offs read at a time when recovering after a restart
RECOVERY_PAGE = 500


class HandoffService(service.Service):
    name = "handoff"

    def __init__(self, kernel: Kernel, *, once: bool = False, backoff: Backoff | None = None):
        self.kernel = kernel
        self.once = once
        self.backoff = backoff or Backoff(
            initial=float(kernel.config.get("gateway", "handoff-retry-initial")),
            maximum=float(kernel.config.get("gateway", "handoff-retry-max")),
        )
        self._in_flight: set[str] = set()
        self._timers: dict[str, Any] = {}
        #: fires when the current attempt for an interaction ends (recovery paging)
        self._attempts: dict[str, Deferred[None]] = {}
        self._idle_waiters: list[Deferred[None]] = []
        self.failed: set[str] = set()
        #: hand-offs done but not yet recorded (written in batches)
        self._done_ids: list[str] = []

    def startService(self) -> None:
        super().startService()
        self._in_flight.add(_RECOVERY)
        d = ensureDeferred(self._recover())
        d.addErrback(lambda f: log.error("hand-off recovery failed: %s", f.getTraceback()))
        d.addBoth(lambda _: self._done(_RECOVERY))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        return ensureDeferred(self._flush_done())

    async def _recover(self) -> None:
        """Hand off what an earlier process left pending, a page at a time: a
        crash with many pending (a large split, a routing outage) neither
        loads them all at once nor leaves any behind."""
        after: str | None = None
        while self.running:
            page: list[Interaction] = await self.kernel.store.pending_handoffs(
                RECOVERY_PAGE, after=after
            )
            if not page:
                return
            self.submit(page)
            after = page[-1].id
            if len(page) < RECOVERY_PAGE:
                return
            # the page's first attempts end before the next page starts
            await self._first_attempts_of(page)

    def _first_attempts_of(self, page: list[Interaction]) -> Deferred[Any]:
        return gatherResults(
            [self._attempts[i.id] for i in page if i.id in self._attempts], consumeErrors=True
        )

    def submit(self, interactions: list[Interaction]) -> None:
        for interaction in interactions:
            if interaction.id in self._in_flight or interaction.id in self._timers:
                continue
            self._start(interaction, attempt=1)

    def _start(self, interaction: Interaction, attempt: int) -> None:
        self._timers.pop(interaction.id, None)
        self._in_flight.add(interaction.id)
        d = ensureDeferred(self._attempt(interaction, attempt))
        d.addErrback(lambda f: log.error("hand-off bookkeeping failed: %s", f.getTraceback()))
        d.addBoth(lambda _: self._done(interaction.id))
        waiter: Deferred[None] = Deferred()
        self._attempts[interaction.id] = waiter
        d.addBoth(lambda _: waiter.callback(None))

    def _done(self, interaction_id: str) -> None:
        self._in_flight.discard(interaction_id)
        self._attempts.pop(interaction_id, None)
        self._check_idle()

    async def _attempt(self, interaction: Interaction, attempt: int) -> None:
        store = self.kernel.store
        try:
            await self.kernel.hooks.submit(interaction, self.kernel.ctx)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.kernel.metrics.handoff_failures.inc()
            await store.mark_handoff(interaction.id, HandoffState.FAILED.value, error)
            max_attempts = int(self.kernel.config.get("gateway", "max-attempts"))
            if self.once and attempt >= max_attempts:
                self.failed.add(interaction.id)
                log.error(
                    "hand-off of %s failed %d times, left for the next run: %s",
                    interaction.id,
                    attempt,
                    error,
                )
                return
            if not self.running and not self.once:
                return
            delay = self.backoff.delay(attempt)
            log.warning(
                "hand-off of %s failed (attempt %d), retrying in %.0fs: %s",
                interaction.id,
                attempt,
                delay,
                error,
            )
            self._timers[interaction.id] = self.kernel.clock.callLater(
                delay, self._start, interaction, attempt + 1
            )
            return
        self.failed.discard(interaction.id)
        self._done_ids.append(interaction.id)
        if len(self._done_ids) >= DONE_BATCH:
            await self._flush_done()

    async def _flush_done(self) -> None:
        """Record the successes gathered so far in one transaction."""
        ids, self._done_ids = self._done_ids, []
        if ids:
            try:
                await self.kernel.store.mark_handoffs_done(ids)
            except Exception:
                # Not recorded: they stay pending and are handed off again
                # after a restart (the submit hook is idempotent by contract).
                log.exception("recording %d finished hand-offs failed", len(ids))

    def _check_idle(self) -> None:
        if self._done_ids and _FLUSH not in self._in_flight:
            # Falling idle: record the successes before anyone waits on us.
            self._in_flight.add(_FLUSH)
            d = ensureDeferred(self._flush_done())
            d.addBoth(lambda _: self._done(_FLUSH))
            return
        if self._in_flight or self._timers:
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def wait_idle(self) -> Deferred[None]:
        """Fires when no hand-off is in flight or waiting for a retry."""
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

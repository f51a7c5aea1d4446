"""After the commit: an interaction's side effects, then its hand-off to routing.

Two steps, each at least once and each on its own:

* the side effects (``postroom_committed``: a suppression, an exchange counted);
* the hand-off (``postroom_submit``), and only that.

Every committed interaction has a row in the store's hand-off table holding the
state of each step (``pending`` at first). This service runs both for it; a step
that fails is marked ``failed`` and tried again with back-off, forever (or, in a
``--once`` run, up to ``max-attempts``), while the other goes its own way: a
routing outage never repeats a side effect, and a failing side effect never holds
up the hand-off. A side-effect retry calls only the plugins that failed. At start
the service picks up what an earlier process left unfinished, so a crash after
the commit only delays it (and may run a step again: both hooks are idempotent by
contract).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults

from postroom.backoff import Backoff
from postroom.model import HandoffState, Interaction

if TYPE_CHECKING:
    from postroom.kernel import Kernel

log = logging.getLogger(__name__)

_RECOVERY = "(recovering unfinished steps)"
_FLUSH = "(recording finished steps)"

#: successes recorded in one transaction at most (and whenever the service
#: falls idle): one fsync per batch instead of one per message
DONE_BATCH = 100
#: unfinished interactions read at a time when recovering after a restart
RECOVERY_PAGE = 500


class Step(enum.Enum):
    """What the service does for a committed interaction, in this order."""

    SIDE_EFFECTS = "side effects"
    HANDOFF = "hand-off"


@attrs.define(eq=False)
class _Job:
    """One step for one interaction, across its attempts."""

    step: Step
    interaction: Interaction
    attempt: int = 1
    #: side effects: the plugins still owed a successful call (None: every plugin)
    owed: frozenset[str] | None = None

    @property
    def key(self) -> tuple[Step, str]:
        return (self.step, self.interaction.id)


class HandoffService(service.Service):
    name = "handoff"

    def __init__(self, kernel: Kernel, *, once: bool = False, backoff: Backoff | None = None):
        self.kernel = kernel
        self.once = once
        self.backoff = backoff or Backoff(
            initial=float(kernel.config.get("gateway", "handoff-retry-initial")),
            maximum=float(kernel.config.get("gateway", "handoff-retry-max")),
        )
        self._in_flight: set[object] = set()
        self._timers: dict[tuple[Step, str], Any] = {}
        #: fires when the current attempt of a job ends (recovery paging)
        self._attempts: dict[object, Deferred[None]] = {}
        self._idle_waiters: list[Deferred[None]] = []
        #: interactions whose step failed for the last time in a ``--once`` run
        self._failed: dict[Step, set[str]] = {step: set() for step in Step}
        #: steps done but not yet recorded (written in batches)
        self._done: dict[Step, list[str]] = {step: [] for step in Step}

    @property
    def failed(self) -> set[str]:
        """Interactions left unfinished by a ``--once`` run (either step)."""
        return self._failed[Step.SIDE_EFFECTS] | self._failed[Step.HANDOFF]

    def startService(self) -> None:
        super().startService()
        self._in_flight.add(_RECOVERY)
        d = ensureDeferred(self._recover())
        d.addErrback(lambda f: log.error("after-commit recovery failed: %s", f.getTraceback()))
        d.addBoth(lambda _: self._end(_RECOVERY))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        return ensureDeferred(self._flush_done())

    # -- starting

    def submit(self, interactions: list[Interaction]) -> None:
        """Run both steps for newly committed *interactions*."""
        for interaction in interactions:
            for step in Step:
                self._start_new(_Job(step, interaction))

    def _start_new(self, job: _Job) -> None:
        if job.key in self._in_flight or job.key in self._timers:
            return
        self._start(job)

    async def _recover(self) -> None:
        """Finish what an earlier process left unfinished, a page at a time: a
        crash with many pending (a large split, a routing outage) neither loads
        them all at once nor leaves any behind."""
        store = self.kernel.store
        await self._recover_step(Step.SIDE_EFFECTS, store.pending_after_commit)
        await self._recover_step(Step.HANDOFF, store.pending_handoffs)

    async def _recover_step(
        self, step: Step, unfinished: Callable[..., Awaitable[list[Interaction]]]
    ) -> None:
        after: str | None = None
        while self.running:
            page = await unfinished(RECOVERY_PAGE, after=after)
            if not page:
                return
            jobs = [_Job(step, interaction) for interaction in page]
            for job in jobs:
                self._start_new(job)
            after = page[-1].id
            if len(page) < RECOVERY_PAGE:
                return
            # the page's first attempts end before the next page starts
            await gatherResults(
                [self._attempts[j.key] for j in jobs if j.key in self._attempts],
                consumeErrors=True,
            )

    # -- one attempt

    def _start(self, job: _Job) -> None:
        self._timers.pop(job.key, None)
        self._in_flight.add(job.key)
        d = ensureDeferred(self._attempt(job))
        d.addErrback(lambda f: log.error("%s bookkeeping failed: %s", job.step.value,
                                         f.getTraceback()))  # fmt: skip
        d.addBoth(lambda _: self._end(job.key))
        waiter: Deferred[None] = Deferred()
        self._attempts[job.key] = waiter
        d.addBoth(lambda _: waiter.callback(None))

    def _end(self, key: object) -> None:
        self._in_flight.discard(key)
        self._attempts.pop(key, None)
        self._check_idle()

    async def _attempt(self, job: _Job) -> None:
        error = await (
            self._side_effects(job) if job.step is Step.SIDE_EFFECTS else self._hand_off(job)
        )
        if error is None:
            self._failed[job.step].discard(job.interaction.id)
            self._done[job.step].append(job.interaction.id)
            if sum(map(len, self._done.values())) >= DONE_BATCH:
                await self._flush_done()
            return
        self._retry_later(job, error)

    async def _side_effects(self, job: _Job) -> str | None:
        """Run the plugins still owed; the error of those that failed, or None."""
        kernel = self.kernel
        failures = await kernel.hooks.committed(job.interaction, kernel.ctx, only=job.owed)
        if not failures:
            return None
        job.owed = frozenset(failure.plugin for failure in failures)
        error = "; ".join(str(failure) for failure in failures)
        await kernel.store.mark_after_commit(job.interaction.id, HandoffState.FAILED.value, error)
        return error

    async def _hand_off(self, job: _Job) -> str | None:
        kernel = self.kernel
        try:
            await kernel.hooks.submit(job.interaction, kernel.ctx)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            kernel.metrics.handoff_failures.inc()
            await kernel.store.mark_handoff(job.interaction.id, HandoffState.FAILED.value, error)
            return error
        return None

    def _retry_later(self, job: _Job, error: str) -> None:
        what = f"{job.step.value} of {job.interaction.id}"
        max_attempts = int(self.kernel.config.get("gateway", "max-attempts"))
        extra = {"interaction_id": job.interaction.id, "mailbox": job.interaction.mailbox,
                 "message_id": job.interaction.message_id}  # fmt: skip
        if self.once and job.attempt >= max_attempts:
            self._failed[job.step].add(job.interaction.id)
            log.error("%s failed %d times, left for the next run: %s", what, job.attempt, error,
                      extra=extra)  # fmt: skip
            return
        if not self.running and not self.once:
            return
        delay = self.backoff.delay(job.attempt)
        log.warning(
            "%s failed (attempt %d), retrying in %.0fs: %s", what, job.attempt, delay, error,
            extra=extra,
        )  # fmt: skip
        job.attempt += 1
        self._timers[job.key] = self.kernel.clock.callLater(delay, self._start, job)

    # -- recording successes, idleness

    async def _flush_done(self) -> None:
        """Record the successes gathered so far in one transaction."""
        handed_off, self._done[Step.HANDOFF] = self._done[Step.HANDOFF], []
        effects, self._done[Step.SIDE_EFFECTS] = self._done[Step.SIDE_EFFECTS], []
        if handed_off or effects:
            try:
                await self.kernel.store.mark_handoffs_done(handed_off, after_commit=effects)
            except Exception:
                # Not recorded: they stay pending and run again after a restart
                # (both hooks are idempotent by contract).
                log.exception("recording %d finished steps failed", len(handed_off) + len(effects))

    def _check_idle(self) -> None:
        if any(self._done.values()) and _FLUSH not in self._in_flight:
            # Falling idle: record the successes before anyone waits on us.
            self._in_flight.add(_FLUSH)
            d = ensureDeferred(self._flush_done())
            d.addBoth(lambda _: self._end(_FLUSH))
            return
        if self._in_flight or self._timers:
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def wait_idle(self) -> Deferred[None]:
        """Fires when no step is in flight or waiting for a retry."""
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

"""After the commit: an interaction's side effects, then its hand-off to routing.

Two steps, each at least once and each on its own:

* the side effects (``postroom_committed``: a suppression, an exchange counted);
* the hand-off (``postroom_submit``), and only that, to each target (each plugin
  implementing the hook) on its own.

Every committed interaction has a row in the store's hand-off table holding the
state of each step (``pending`` at first). This service runs both for it; a step
that fails is marked ``failed`` and tried again with back-off, forever (or, in a
``--once`` run, up to ``max-attempts``), while the other goes its own way: a
routing outage never repeats a side effect, and a failing side effect never holds
up the hand-off. A side-effect retry calls only the plugins that failed.

The hand-off has a state per target (``handoff_targets``): a retry calls only
the targets still owed (not ``done``, not ``refused``), so a failing webhook
never makes a broker publish again. A target raising
``HandoffError(permanent=True)`` is marked ``refused`` and not retried until
someone asks (:meth:`HandoffService.retry_now`, after the store's
``retry_handoff``); the interaction's overall state is derived from its
targets' (:func:`~postroom.model.overall_handoff_state`).

At start the service picks up what an earlier process left unfinished, so a
crash after the commit only delays it (and may run a step again: both hooks are
idempotent by contract); while it runs it sweeps the store every
``handoff-sweep-interval`` for hand-offs put back to ``pending`` by a retry
another process asked for (``postroom interactions retry-handoff``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults

from postroom.backoff import Backoff
from postroom.errors import HandoffError
from postroom.model import HandoffOutcome, HandoffState, Interaction, overall_handoff_state

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
#: a target in one of these states is owed nothing more
_SETTLED = frozenset({HandoffState.DONE.value, HandoffState.REFUSED.value})


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
    #: hand-off: each target's state as far as known (None: read it from the store)
    known: dict[str, str] | None = None
    #: hand-off: just committed, so no target has been tried yet
    fresh: bool = False

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
        #: side effects done but not yet recorded (written in batches)
        self._done: dict[Step, list[str]] = {step: [] for step in Step}
        #: hand-offs done (every target owed took it) but not yet recorded
        self._handed_off: list[HandoffOutcome] = []
        #: ids of those, and of those being recorded (a sweep leaves them alone)
        self._recording: set[str] = set()
        #: interactions a target refused for good in this run
        self.refused: set[str] = set()
        self._sweeper: task.LoopingCall | None = None

    @property
    def failed(self) -> set[str]:
        """Interactions left unfinished by a ``--once`` run (either step), or
        refused for good by a hand-off target."""
        return self._failed[Step.SIDE_EFFECTS] | self._failed[Step.HANDOFF] | self.refused

    def startService(self) -> None:
        super().startService()
        self._in_flight.add(_RECOVERY)
        d = ensureDeferred(self._recover())
        d.addErrback(lambda f: log.error("after-commit recovery failed: %s", f.getTraceback()))
        d.addBoth(lambda _: self._end(_RECOVERY))
        interval = float(self.kernel.config.get("gateway", "handoff-sweep-interval"))
        if not self.once and interval > 0:
            self._sweeper = task.LoopingCall(self._sweep_now)
            self._sweeper.clock = self.kernel.clock
            self._sweeper.start(interval, now=False)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        return ensureDeferred(self._flush_done())

    # -- starting

    def submit(self, interactions: list[Interaction]) -> None:
        """Run both steps for newly committed *interactions*."""
        for interaction in interactions:
            self._start_new(_Job(Step.SIDE_EFFECTS, interaction))
            self._start_new(_Job(Step.HANDOFF, interaction, fresh=True))
        if interactions:
            self.kernel.events.poke()  # their commit recorded interaction.created

    async def retry_now(self, interaction_id: str) -> bool:
        """Start the hand-off of *interaction_id* now when the store has it
        ``pending`` (a retry was asked for) and no attempt is under way: a timer
        waiting to retry it is cancelled. Whether an attempt was started."""
        key = (Step.HANDOFF, interaction_id)
        if not self._may_start(key):
            return False
        interaction = await self.kernel.store.get_interaction(interaction_id)
        if interaction is None or interaction.handoff_state != HandoffState.PENDING.value:
            return False
        if not self._may_start(key):  # started while we read
            return False
        timer = self._timers.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._start(_Job(Step.HANDOFF, interaction))
        return True

    def _may_start(self, key: tuple[Step, str]) -> bool:
        return bool(self.running) and key not in self._in_flight and key[1] not in self._recording

    def _sweep_now(self) -> Deferred[None]:
        d = ensureDeferred(self._sweep())
        d.addErrback(lambda f: log.error("hand-off sweep failed: %s", f.getErrorMessage()))
        return d

    async def _sweep(self) -> None:
        """Start the hand-offs the store has ``pending`` that this process is not
        working on: retries asked for by another process (the CLI)."""
        if _RECOVERY in self._in_flight:
            return  # recovery is starting them a page at a time
        after: str | None = None
        while self.running:
            ids = await self.kernel.store.pending_handoff_ids(RECOVERY_PAGE, after=after)
            for interaction_id in ids:
                await self.retry_now(interaction_id)
            if len(ids) < RECOVERY_PAGE:
                return
            after = ids[-1]

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
            jobs = [_Job(step, interaction) for interaction in page]  # targets from the store
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
        if job.step is Step.SIDE_EFFECTS:
            error = await self._side_effects(job)
            if error is None:
                self._done[job.step].append(job.interaction.id)
        else:
            error = await self._hand_off(job)
        if error is None:
            self._failed[job.step].discard(job.interaction.id)
            if self._unrecorded() >= DONE_BATCH:
                await self._flush_done()
            return
        self._retry_later(job, error, logged=job.step is Step.HANDOFF)

    def _unrecorded(self) -> int:
        return len(self._handed_off) + sum(map(len, self._done.values()))

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
        """Hand the interaction to the targets still owed it. All took it: the
        outcome joins the batch of successes. Otherwise it is recorded at once,
        each failure logged and counted; the error to retry on, or None when
        nothing is left to retry (the rest refused it for good)."""
        kernel = self.kernel
        interaction = job.interaction
        targets = kernel.hooks.submit_targets()
        if job.known is None:
            job.known = {}
            if not job.fresh:
                for row in await kernel.store.handoff_targets(interaction.id):
                    job.known[row.target] = row.state
        owed = [target for target in targets if job.known.get(target) not in _SETTLED]
        outcomes = {}
        if owed:
            outcomes = await kernel.hooks.submit_each(interaction, kernel.ctx, only=owed)
        results: dict[str, tuple[str, str | None]] = {}
        for target, exc in outcomes.items():
            if exc is None:
                results[target] = (HandoffState.DONE.value, None)
            elif isinstance(exc, HandoffError):
                state = HandoffState.REFUSED if exc.permanent else HandoffState.FAILED
                results[target] = (state.value, str(exc) or type(exc).__name__)
            else:
                results[target] = (HandoffState.FAILED.value, f"{type(exc).__name__}: {exc}")
        job.known.update((target, state) for target, (state, _error) in results.items())
        overall = overall_handoff_state(
            job.known.get(target, HandoffState.PENDING.value) for target in targets
        )
        outcome = HandoffOutcome(interaction.id, overall, results)
        if overall == HandoffState.DONE.value:
            self.refused.discard(interaction.id)  # a retry asked for went through
            self._handed_off.append(outcome)
            self._recording.add(interaction.id)
            return None
        failures = []
        for target, (outcome_state, error) in results.items():
            if outcome_state == HandoffState.DONE.value:
                continue
            kernel.metrics.handoff_target_failures.labels(target, outcome_state).inc()
            extra = {
                "interaction_id": interaction.id,
                "target": target,
                "mailbox": interaction.mailbox,
                "message_id": interaction.message_id,
            }
            if outcome_state == HandoffState.REFUSED.value:
                log.error("hand-off of %s refused for good by %s: %s", interaction.id, target,
                          error, extra=extra)  # fmt: skip
            else:
                failures.append(f"{target}: {error}")
                log.warning("hand-off of %s to %s failed (attempt %d): %s", interaction.id,
                            target, job.attempt, error, extra=extra)  # fmt: skip
        if failures:
            kernel.metrics.handoff_failures.inc()
        await kernel.store.record_handoffs([outcome])
        kernel.events.poke()
        if overall == HandoffState.REFUSED.value:
            self.refused.add(interaction.id)
            self._failed[Step.HANDOFF].discard(interaction.id)
            return None
        return "; ".join(failures) or f"hand-off {overall}"

    def _retry_later(self, job: _Job, error: str, *, logged: bool = False) -> None:
        """Try *job* again after back-off; *logged*: each failure was logged already."""
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
        if logged:
            log.info("%s retried in %.0fs", what, delay, extra=extra)
        else:
            log.warning(
                "%s failed (attempt %d), retrying in %.0fs: %s", what, job.attempt, delay, error,
                extra=extra,
            )  # fmt: skip
        job.attempt += 1
        self._timers[job.key] = self.kernel.clock.callLater(delay, self._start, job)

    # -- recording successes, idleness

    async def _flush_done(self) -> None:
        """Record the successes gathered so far in one transaction."""
        handed_off, self._handed_off = self._handed_off, []
        effects, self._done[Step.SIDE_EFFECTS] = self._done[Step.SIDE_EFFECTS], []
        if handed_off or effects:
            try:
                await self.kernel.store.record_handoffs(handed_off, after_commit=effects)
            except Exception:
                # Not recorded: they stay pending and run again after a restart
                # (both hooks are idempotent by contract).
                log.exception("recording %d finished steps failed", len(handed_off) + len(effects))
            finally:
                self._recording.difference_update(o.interaction_id for o in handed_off)
            self.kernel.events.poke()

    def _check_idle(self) -> None:
        if self._unrecorded() and _FLUSH not in self._in_flight:
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

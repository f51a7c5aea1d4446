"""One service per mailbox: connect, fetch, process, acknowledge, wait, repeat.

A mailbox's failures stay in its own service: an unreachable server makes
this one reconnect with back-off while every other mailbox keeps flowing. A
refused login (:class:`~postroom.errors.AuthenticationFailed`: a wrong
password, a revoked token) is told apart: state ``auth-failed``, and the login
policy's longer delays (:mod:`postroom.loginpolicy`), so the server never
locks the account. A message that fails ``max-attempts`` times is put in
quarantine (its raw bytes kept in the store) and acknowledged on the server,
so it can never block the mailbox; ``postroom quarantine`` lists and replays it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred

from postroom.backoff import Backoff, sleep
from postroom.drivers import SourceItem
from postroom.errors import AuthenticationFailed, ConnectionDown
from postroom.grants import NeedsReauthorisation
from postroom.loginpolicy import (
    AUTH_FAILED,
    CONNECTED,
    CONNECTION_FAILED,
    NEEDS_REAUTHORISATION,
    LoginPolicy,
)
from postroom.progress import THRESHOLD as PROGRESS_THRESHOLD
from postroom.progress import Progress
from postroom.services.health import MailboxHealth
from postroom.store.errors import StoreError
from postroom.workers import OverBudget

if TYPE_CHECKING:
    from postroom.config.site import MailboxConfig
    from postroom.kernel import Kernel
    from postroom.pipeline.inbound import InboundPipeline
    from postroom.services.handoff import HandoffService

log = logging.getLogger(__name__)


def _step(result: Any, progress: Progress) -> Any:
    progress.step()
    return result


def _chained(d: Deferred[None]) -> Deferred[None]:
    """Wait for *d* without taking its result away from other waiters."""
    waiter: Deferred[None] = Deferred()

    def passthrough(result: Any) -> Any:
        waiter.callback(None)
        return result

    d.addBoth(passthrough)
    return waiter


def _now(clock: Any) -> datetime:
    return datetime.fromtimestamp(clock.seconds(), UTC)


class MailboxService(service.Service):
    def __init__(
        self,
        kernel: Kernel,
        mailbox: MailboxConfig,
        pipeline: InboundPipeline,
        handoff: HandoffService,
        *,
        once: bool = False,
        backoff: Backoff | None = None,
        login_policy: LoginPolicy | None = None,
    ) -> None:
        self.kernel = kernel
        self.mailbox = mailbox
        self.pipeline = pipeline
        self.handoff = handoff
        self.once = once
        self.backoff = backoff or Backoff()
        self.login_policy = login_policy or LoginPolicy.from_config(kernel.config, kernel.clock)
        self.name = f"mailbox:{mailbox.name}"
        self.health = MailboxHealth()
        self.source: Any = None
        #: fires with True (all well) or False (something failed) when a
        #: --once pass ends, or when the service stops
        self.finished: Deferred[bool] = Deferred()
        self._loop: Deferred[None] | None = None
        self._pause: Deferred[Any] | None = None
        self._stopping = False
        self._pass_ok = True
        self._abandoned: BaseException | None = None
        self._cursor_held = False
        self._quarantined: set[str] = set()
        #: the quarantined keys of the previous pass (None: no pass yet)
        self._held: set[str] | None = None
        #: parses/analyses in flight: cancelled on stop (their workers are killed)
        self._analysing: set[Deferred[Any]] = set()
        #: state writes in flight (``mailbox_states``): a stop waits for them
        self._state_writes: set[Deferred[Any]] = set()

    # -- service

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._loop = ensureDeferred(self._run())
        self._loop.addErrback(self._crashed)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        if self._pause is not None and not self._pause.called:
            self._pause.cancel()
        # A stop never waits for a message in analysis: the message stays on
        # the server (not acknowledged, not counted) and is fetched next time.
        for analysing in list(self._analysing):
            analysing.cancel()
        done: Deferred[Any] = self._loop if self._loop is not None else defer.succeed(None)

        async def stop() -> None:
            if self.source is not None:
                try:
                    await self.source.disconnect()
                except Exception:
                    log.exception("mailbox %s: error while disconnecting", self.mailbox.name)
            await done
            if self._state_writes:
                await defer.DeferredList(list(self._state_writes))

        return ensureDeferred(stop())

    def _crashed(self, failure: Any) -> None:
        log.error("mailbox %s: service loop crashed: %s", self.mailbox.name, failure.getTraceback())
        self._finish(False)

    def _finish(self, ok: bool) -> None:
        if not self.finished.called:
            self.finished.callback(ok)

    # -- loop

    @property
    def clock(self) -> Any:
        return self.kernel.clock

    def _failed(self, error: BaseException, what: str) -> float:
        """Record a failed connection or pass; returns the delay before the next try.

        A refused login counts for the login policy only; a grant that needs
        re-authorisation waits for an administrator; every other failure
        counts for the connection back-off only."""
        name = self.mailbox.name
        metrics = self.kernel.metrics
        self.health.connected = False
        metrics.connected.labels(name).set(0)
        refused = isinstance(error, AuthenticationFailed)
        reauthorise = isinstance(error, NeedsReauthorisation)
        # a refusal says "login refused ..." with the server's words already
        self.health.last_error = str(error) if refused or reauthorise else f"{what}: {error}"
        self.health.last_error_at = _now(self.clock)
        state: str | None
        if reauthorise:
            # nothing changes until an administrator acts: look again (in the
            # store only, no identity provider request) at the longest login wait
            wait = self.login_policy.maximum
            state = NEEDS_REAUTHORISATION
            metrics.errors.labels(name, "auth").inc()
        elif refused:
            wait = self.login_policy.refused(str(error))
            state = AUTH_FAILED
            self.health.auth_failures = self.login_policy.failures
            metrics.errors.labels(name, "auth").inc()
            metrics.login_failures.labels(name).set(self.login_policy.failures)
        else:
            self.health.consecutive_failures += 1
            wait = self.backoff.delay(self.health.consecutive_failures)
            # after refused credentials the mailbox stays auth-failed until a
            # login goes through: a network blip does not hide the wrong password
            state = None if self.login_policy.refusing else CONNECTION_FAILED
            metrics.errors.labels(name, "connection").inc()
        retry_at = self.clock.seconds() + wait
        self.health.next_attempt = datetime.fromtimestamp(retry_at, UTC)
        metrics.next_attempt.labels(name).set(retry_at)
        if state is not None:
            self._set_state(state)
        if reauthorise:
            log.error(
                "mailbox %s: needs re-authorisation (see docs/auth.md), looking again at %s: %s",
                name,
                self.health.next_attempt.isoformat(),
                error.reason if isinstance(error, NeedsReauthorisation) else error,
                extra={"mailbox": name},
            )
        elif refused:
            log.error(
                "mailbox %s: login refused (%d in a row), next attempt at %s: %s",
                name,
                self.login_policy.failures,
                self.health.next_attempt.isoformat(),
                error,
                extra={"mailbox": name},
            )
        else:
            log.warning(
                "mailbox %s: %s: %s",
                name,
                what,
                error,
                extra={"mailbox": name},
            )
        return wait

    def _set_state(self, state: str) -> None:
        changed = state != self.health.state or state != CONNECTED
        self.health.state = state
        self.kernel.metrics.state.labels(self.mailbox.name).state(state)
        if changed:
            self._keep_state()

    def _keep_state(self) -> None:
        """Write the state to the store for ``postroom mailboxes``; a failing
        write is only logged (the store's own trouble shows elsewhere)."""
        health = self.health
        reason = None if health.state == CONNECTED else health.last_error
        failures = (
            self.login_policy.failures
            if health.state == AUTH_FAILED
            else health.consecutive_failures
        )
        d = self.kernel.store.save_mailbox_state(
            self.mailbox.name, health.state, reason, failures, health.next_attempt
        )
        d.addErrback(
            lambda f: log.warning(
                "mailbox %s: cannot keep its state: %s", self.mailbox.name, f.getErrorMessage()
            )
        )
        # a stop waits for it: the last state of a --once run is the one to keep
        self._state_writes.add(d)
        d.addBoth(lambda _: self._state_writes.discard(d))

    def _logged_in(self) -> None:
        """The source connected (and logged in): the login policy's count starts
        again (the connection back-off's does after a complete pass, as before)."""
        name = self.mailbox.name
        metrics = self.kernel.metrics
        self.health.connected = True
        metrics.connected.labels(name).set(1)
        if self.login_policy.refusing:
            log.info("mailbox %s: login accepted again", name, extra={"mailbox": name})
        if self.health.state != CONNECTED:  # the first connection, or the first after a failure
            log.info("mailbox %s: connected (%s)", name, describe(self.mailbox),
                     extra={"mailbox": name})  # fmt: skip
        self.login_policy.succeeded()
        self.health.auth_failures = 0
        self.health.next_attempt = None
        metrics.login_failures.labels(name).set(0)
        metrics.next_attempt.labels(name).set(0)
        self._set_state(CONNECTED)

    async def _run(self) -> None:
        poll = float(self.mailbox.get("poll-interval"))
        while not self._stopping:
            try:
                if self.source is None:
                    self.source = self.kernel.build_source(self.mailbox)
                await self.source.connect()
                self._logged_in()
                while not self._stopping:
                    await self.run_pass()
                    self.health.last_success = _now(self.clock)
                    self.kernel.metrics.last_success.labels(self.mailbox.name).set(
                        self.clock.seconds()
                    )
                    self.health.consecutive_failures = 0
                    if self.once:
                        self._finish(self._pass_ok)
                        return
                    self._pause = self.source.wait_for_new(poll)
                    await self._pause
            except defer.CancelledError:
                break
            except Exception as exc:
                wait = self._failed(exc, "connection failed")
                if self.once:
                    self._finish(False)
                    return
                try:
                    if self.source is not None:
                        await self.source.disconnect()
                except Exception:
                    log.debug("disconnect after failure failed too", exc_info=True)
                self.source = None
                self._pause = sleep(self.clock, wait)
                try:
                    await self._pause
                except defer.CancelledError:
                    break
        self._finish(self._pass_ok)

    async def run_pass(self) -> None:
        """Process everything the mailbox holds now, with bounded concurrency."""
        store = self.kernel.store
        cursor = await store.get_cursor(self.mailbox.name)
        self._quarantined = await store.quarantined_source_keys(self.mailbox.name)
        self._tell_released()
        items: list[SourceItem] = await self.source.list_new(cursor)
        if not items:
            return
        self._abandoned = None
        self._cursor_held = False
        log.info("mailbox %s: %d new message(s)", self.mailbox.name, len(items))
        limit = DeferredSemaphore(int(self.kernel.config.get("gateway", "concurrency")))
        # Fetch and parse run `concurrency` at a time; classify..commit runs
        # one message at a time in source order (each waits for the one before).
        turns: list[Deferred[None]] = [Deferred() for _ in items]
        previous: Deferred[None] = defer.succeed(None)
        jobs = []
        progress = (
            Progress(self.mailbox.name, len(items), self.clock)
            if len(items) >= PROGRESS_THRESHOLD
            else None
        )
        for item, turn in zip(items, turns, strict=True):
            if progress is not None:
                turn.addBoth(_step, progress)
            jobs.append(limit.run(self.process_item, item, previous, turn))
            previous = turn
        try:
            await defer.gatherResults(jobs, consumeErrors=True)
        finally:
            if progress is not None:
                progress.finish()
        if self._abandoned is not None:
            raise ConnectionDown(f"pass abandoned: {self._abandoned}")

    def _tell_released(self) -> None:
        """Tell the source which of its messages were released from quarantine
        (``postroom quarantine replay``) since the previous pass: one that could
        not be fetched is still on the server, and a source whose cursor has
        passed it (Graph, EWS) lists it again (``quarantine_released``)."""
        held, self._held = self._held, set(self._quarantined)
        released = held - self._quarantined if held is not None else set()
        tell = getattr(self.source, "quarantine_released", None)
        if released and tell is not None:
            log.info(
                "mailbox %s: %d message(s) released from quarantine",
                self.mailbox.name,
                len(released),
                extra={"mailbox": self.mailbox.name},
            )
            tell(released)

    async def process_item(
        self,
        item: SourceItem,
        before: Deferred[None] | None = None,
        turn: Deferred[None] | None = None,
    ) -> None:
        """Fetch, parse, then (in turn) complete, acknowledge, hand off."""
        try:
            await self._process_item(item, before)
        finally:
            if turn is not None and not turn.called:
                turn.callback(None)

    async def _process_item(self, item: SourceItem, before: Deferred[None] | None) -> None:
        name = self.mailbox.name
        if self._stopping or self._abandoned is not None:
            return  # not counted: nothing was wrong with this message
        if item.source_key in self._quarantined:
            return
        try:
            fetched = await self.source.fetch(item)
        except ConnectionDown as exc:
            # Only the message whose fetch broke the link is counted; the
            # rest of the pass is abandoned and the mailbox reconnects.
            if self._abandoned is None:
                self._abandoned = exc
                await self._count_failure(item, None, f"fetch failed: {exc}")
            return
        except Exception as exc:
            await self._count_failure(item, None, f"fetch failed: {exc}")
            return
        try:
            self.health.analysing[item.source_key] = self.clock.seconds()
            parsing = ensureDeferred(self.pipeline.parse(fetched, self.mailbox))
            self._analysing.add(parsing)
            try:
                message = await parsing
            finally:
                self._analysing.discard(parsing)
                self.health.analysing.pop(item.source_key, None)
            if before is not None:
                await _chained(before)
            if self._stopping or self._abandoned is not None:
                await self.source.release(fetched)
                return
            # After a failure in this pass the cursor stays where it was, so the
            # failed message is listed again (dedupe keys absorb the re-fetches).
            cursor = None if self._cursor_held else item.cursor
            processed = await self.pipeline.complete(fetched, message, self.mailbox, cursor)
        except defer.CancelledError:
            if not self._stopping:
                raise
            try:
                await self.source.release(fetched)
            except Exception:
                log.debug("releasing %s while stopping failed", item.source_key, exc_info=True)
            return
        except OverBudget as exc:
            # A retry would cost as much again: quarantine at once, go on.
            await self._count_failure(
                item, fetched, f"over budget: {exc.reason}", at_once=True
            )
            return
        except Exception as exc:
            # a full disk (StoreError)...: one line says it all; elsewhere a
            # bug somewhere: the traceback helps
            await self._count_failure(
                item,
                fetched,
                f"{type(exc).__name__}: {exc}",
                error=None if isinstance(exc, StoreError) else exc,
            )
            return
        try:
            await self.source.acknowledge(fetched)
        except Exception as exc:
            # Committed already: it will be fetched again, recognised as a
            # duplicate and acknowledged then. End this pass and reconnect.
            log.warning(
                "mailbox %s: acknowledging message %s failed: %s",
                name,
                item.source_key,
                exc,
                extra={"mailbox": name, "source_key": item.source_key},
            )
            if self._abandoned is None:
                self._abandoned = exc
        self.health.ingested += len(processed.result.new)
        self.health.duplicates += len(processed.result.duplicates)
        metrics = self.kernel.metrics
        metrics.ingested.labels(name).inc(len(processed.result.new))
        metrics.duplicates.labels(name).inc(len(processed.result.duplicates))
        if processed.result.new:
            lag = self.clock.seconds() - fetched.received_at.timestamp()
            metrics.lag.labels(name).observe(max(0.0, lag))
        self.handoff.submit(processed.result.new)

    async def _count_failure(
        self,
        item: SourceItem,
        fetched: Any,
        reason: str,
        *,
        at_once: bool = False,
        error: BaseException | None = None,
    ) -> None:
        """Count a failed attempt; quarantine after ``max-attempts`` (*at_once*: now).

        The one place a message's failure is logged, with its reason: a WARNING
        while it will be tried again, an ERROR when it is quarantined
        (*error*: with its traceback, for a bug)."""
        store = self.kernel.store
        name = self.mailbox.name
        self._pass_ok = False
        self._cursor_held = True
        self.health.failed += 1
        self.kernel.metrics.errors.labels(name, "message").inc()
        extra = {"mailbox": name, "source_key": item.source_key}
        max_attempts = int(self.kernel.config.get("gateway", "max-attempts"))
        try:
            attempts = await store.record_failure(name, item.source_key, reason)
        except Exception as exc:
            log.error(
                "mailbox %s: message %s failed, and recording the failure failed too (%s): %s",
                name, item.source_key, exc, reason, extra=extra, exc_info=error,
            )  # fmt: skip
            raise
        if attempts >= max_attempts or at_once:
            # Quarantined: kept in the store (with its bytes when we have them),
            # and out of the mailbox's way. A message that could not even be
            # fetched stays on the server and is skipped until it is released.
            await store.quarantine(
                name, item.source_key, reason, fetched.raw if fetched is not None else None
            )
            self.health.quarantined += 1
            self.kernel.metrics.quarantine_depth.labels(name).inc()
            log.error(
                "mailbox %s: message %s quarantined %s: %s", name, item.source_key,
                "at once" if at_once else f"after {attempts} attempts", reason,
                extra=extra, exc_info=error,
            )  # fmt: skip
            if fetched is not None:
                await self.source.acknowledge(fetched)
        else:
            log.warning(
                "mailbox %s: message %s failed (attempt %d of %d, tried again next pass): %s",
                name, item.source_key, attempts, max_attempts, reason, extra=extra,
                exc_info=error,
            )  # fmt: skip
            if fetched is not None:
                await self.source.release(fetched)


#: the options that say where a mailbox is, shown when it connects (never a secret)
_WHERE = ("server", "port", "mailbox", "folder-path")


def describe(mailbox: MailboxConfig) -> str:
    """``imap, server mail.example.com:993, account support@example.com``: the
    driver and where it reads (no password or token: only :data:`_WHERE`)."""
    found: dict[str, Any] = {}
    for option in _WHERE:
        try:
            value = mailbox.get(option)
        except KeyError:  # not an option of this driver
            continue
        if value not in (None, ""):
            found[option] = value
    parts = [mailbox.type]
    if "server" in found:
        port = f":{found['port']}" if "port" in found else ""
        parts.append(f"server {found['server']}{port}")
    if "mailbox" in found:
        parts.append(f"account {found['mailbox']}")
    if "folder-path" in found:
        parts.append(f"folder {found['folder-path']}")
    return ", ".join(parts)

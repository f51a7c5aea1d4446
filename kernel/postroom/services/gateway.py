"""The gateway as a Twisted service tree: embed it with ``setServiceParent``.

``Gateway`` is a ``MultiService`` holding one :class:`MailboxService` per
enabled mailbox, the :class:`HandoffService`, the :class:`OutboundService` and
(unless ``once``) the HTTP API (:class:`~postroom.web.ApiService`). Starting,
it takes the store's gateway lock (:mod:`postroom.store.lock`: one gateway
process owns a store), then opens the kernel (store migrations, startup hooks),
then starts its children; stopping, it stops them, closes the kernel and gives
the lock back. While it runs it checks every :data:`LOCK_CHECK_INTERVAL`
seconds that it still holds the lock (a PostgreSQL session can be lost) and
stops itself when it does not: :attr:`Gateway.lost` fires with the error.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from postroom.events import EventService
from postroom.kernel import Kernel
from postroom.model import Interaction, OutboundRequest
from postroom.pipeline.inbound import InboundPipeline
from postroom.pipeline.outbound import Preview
from postroom.services.handoff import HandoffService
from postroom.services.mailbox import MailboxService
from postroom.services.outbound import OutboundService, preview_send, queue_send
from postroom.services.retention import RetentionService
from postroom.services.retention import configured as retention_configured
from postroom.store.lock import ACQUIRE_METHOD, GatewayLock, GatewayLockLost
from postroom.web import ApiService, api_service

log = logging.getLogger(__name__)

#: seconds between two checks that the gateway still holds its store's lock
LOCK_CHECK_INTERVAL = 5.0


class Gateway(service.MultiService):
    def __init__(self, kernel: Kernel, *, once: bool = False, mailboxes: bool = True) -> None:
        """*mailboxes*: False for an outbox-only gateway (``postroom send --now``).

        A ``once`` gateway serves no HTTP API; otherwise the ``http`` section
        decides (port 0: none). A weak token or an exposed bind without one is
        refused here (ConfigError), before anything starts.
        """
        super().__init__()
        self.kernel = kernel
        self.once = once
        self.setName("postroom")
        self.pipeline = InboundPipeline(kernel.hooks, kernel.ctx, kernel.analysis)
        self.handoff = HandoffService(kernel, once=once)
        self.handoff.setServiceParent(self)
        self.events = EventService(kernel)
        self.events.setServiceParent(self)
        self.mailboxes: list[MailboxService] = []
        for mailbox in kernel.config.mailboxes if mailboxes else []:
            if not mailbox.get("enabled"):
                continue
            svc = MailboxService(kernel, mailbox, self.pipeline, self.handoff, once=once)
            svc.setServiceParent(self)
            self.mailboxes.append(svc)
        self.outbound = OutboundService(
            kernel,
            kernel.build_sender(),
            once=once,
            mailbox_senders=kernel.build_mailbox_senders(),
        )
        self.outbound.setServiceParent(self)
        self.retention: RetentionService | None = None
        if not once and retention_configured(kernel):
            self.retention = RetentionService(kernel)
            self.retention.setServiceParent(self)
        self.api: ApiService | None = None if once else api_service(self)
        if self.api is not None:
            self.api.setServiceParent(self)
        self.opened: Deferred[None] | None = None
        #: fires with the GatewayLockLost error if the store's lock is lost while running
        self.lost: Deferred[GatewayLockLost] = Deferred()
        self.lock: GatewayLock | None = None
        self._watchdog: task.LoopingCall | None = None
        self._stopping: Deferred[None] | None = None
        self._stop_waiters: list[Deferred[None]] = []
        self._stop_outcome: list[Failure | None] = []
        self._kernel_opened = False

    def startService(self) -> None:
        # Children start once the lock is held and the store open; the service
        # itself is "running" at once so the host's shutdown reaches us.
        service.Service.startService(self)
        for warning in self.kernel.unbudgeted_warnings():
            log.warning(warning)
        self.opened = ensureDeferred(self._open())
        self.opened.addErrback(self._open_failed)

    async def _open(self) -> None:
        lock = await self._acquire_lock()
        if not self.running:  # stopped while waiting for the lock
            if lock is not None:
                await self.kernel.runner.run(lock.release)
            return
        self.lock = lock
        self._kernel_opened = True  # closed on stop even when opening fails half-way
        await self.kernel.open()
        if not self.running:
            return
        self._log_started()
        if self.lock is not None:
            self._watchdog = task.LoopingCall(self._check_lock)
            self._watchdog.clock = self.kernel.clock
            self._watchdog.start(LOCK_CHECK_INTERVAL, now=False).addErrback(self._lock_lost)
        for child in self:
            child.startService()

    def _log_started(self) -> None:
        """The start-up lines: the store and the plugins (the mailboxes and the
        API say where they are when they connect and listen)."""
        kernel = self.kernel
        describe = getattr(kernel.store_driver, "describe", None)
        where = describe() if callable(describe) else kernel.config.store_driver
        log.info("store: %s", where)
        log.info("plugins loaded: %s", ", ".join(kernel.plugins.order) or "none")

    async def _acquire_lock(self) -> GatewayLock | None:
        """The store's gateway lock; GatewayLocked when another gateway holds it."""
        acquire = getattr(self.kernel.store_driver, ACQUIRE_METHOD, None)
        if acquire is None:
            log.warning(
                "the %s store cannot be locked: make sure only one gateway process runs on it",
                self.kernel.config.store_driver,
            )
            return None
        lock: GatewayLock = await self.kernel.runner.run(acquire)
        return lock

    def _check_lock(self) -> Deferred[None]:
        assert self.lock is not None
        return self.kernel.runner.run(self.lock.check)

    def _lock_lost(self, failure: Failure) -> None:
        error = failure.value
        if not isinstance(error, GatewayLockLost):
            error = GatewayLockLost(f"checking the gateway lock failed: {error}")
        log.error("%s", error)
        self._watchdog = None

        def tell(_: object) -> None:
            if not self.lost.called:
                self.lost.callback(error)

        self.stopService().addBoth(tell)

    def _open_failed(self, failure: Any) -> Any:
        log.error("gateway failed to start: %s", failure.getErrorMessage())
        return failure

    def stopService(self) -> Deferred[None]:
        """Stop the children, close the kernel, give the lock back.

        Once: a later call (the host's shutdown after the gateway stopped itself
        on a lost lock) gets the first stop's outcome.
        """
        done: Deferred[None] = Deferred()
        if self._stop_outcome:
            _fire(done, self._stop_outcome[0])
            return done
        self._stop_waiters.append(done)
        if self._stopping is None:
            self._stopping = ensureDeferred(self._stop())
            self._stopping.addBoth(self._stopped)
        return done

    def _stopped(self, outcome: Failure | None) -> None:
        self._stop_outcome.append(outcome)
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            _fire(waiter, outcome)

    async def _stop(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.running:
            watchdog.stop()
        try:
            await service.MultiService.stopService(self)
            if self._kernel_opened:
                await self.kernel.close()
        finally:
            lock, self.lock = self.lock, None
            if lock is not None:
                await self.kernel.runner.run(lock.release)

    def send(self, request: OutboundRequest) -> Deferred[Interaction]:
        """The Python API for a send: queue it, wake the outbox worker."""

        async def go() -> Interaction:
            self.outbound.expect()
            try:
                return await queue_send(self.kernel, request, self.outbound.forbidden)
            finally:
                self.outbound.arrived()

        return ensureDeferred(go())

    def preview(self, request: OutboundRequest) -> Deferred[Preview]:
        """What :meth:`send` would queue and the outbox send, nothing queued or sent
        (``POST /render``): validated as a send is (a refused request raises
        RequestError), then rendered, vetoed, enveloped and built as an attempt is."""
        return ensureDeferred(preview_send(self.kernel, request, self.outbound.pipeline))

    def health(self) -> dict[str, Any]:
        """Per mailbox: counters, last error, and the messages stuck in analysis
        (analysed for longer, in wall-clock time, than the CPU budget allows)."""
        now = self.kernel.clock.seconds()
        after = self.kernel.budget.cpu_seconds
        return {svc.mailbox.name: svc.health.as_dict(now, after) for svc in self.mailboxes}

    async def run_once(self) -> bool:
        """For ``--once``: fires True when every mailbox, the outbox and the
        hand-offs finished with nothing failed."""
        assert self.opened is not None, "start the service first"
        await self.opened
        results = await defer.gatherResults([m.finished for m in self.mailboxes])
        await self.handoff.wait_idle()
        outbound_ok = await self.outbound.finished
        return all(results) and outbound_ok and not self.handoff.failed


def _fire(waiter: Deferred[None], outcome: Failure | None) -> None:
    if isinstance(outcome, Failure):
        waiter.errback(outcome)
    else:
        waiter.callback(None)

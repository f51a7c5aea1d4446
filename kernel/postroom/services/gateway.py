"""The gateway as a Twisted service tree: embed it with ``setServiceParent``.

``Gateway`` is a ``MultiService`` holding one :class:`MailboxService` per
enabled mailbox, the :class:`HandoffService` and the
:class:`OutboundService`. It opens the kernel (store migrations, startup hooks)
before its children start and closes it after they stopped.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred

from postroom.kernel import Kernel
from postroom.model import Interaction, OutboundRequest
from postroom.pipeline.inbound import InboundPipeline
from postroom.services.handoff import HandoffService
from postroom.services.mailbox import MailboxService
from postroom.services.outbound import OutboundService, queue_send

log = logging.getLogger(__name__)


class Gateway(service.MultiService):
    def __init__(self, kernel: Kernel, *, once: bool = False, mailboxes: bool = True) -> None:
        """*mailboxes*: False for an outbox-only gateway (``postroom send``)."""
        super().__init__()
        self.kernel = kernel
        self.once = once
        self.setName("postroom")
        self.pipeline = InboundPipeline(kernel.hooks, kernel.ctx, kernel.analysis)
        self.handoff = HandoffService(kernel, once=once)
        self.handoff.setServiceParent(self)
        self.mailboxes: list[MailboxService] = []
        for mailbox in kernel.config.mailboxes if mailboxes else []:
            if not mailbox.get("enabled"):
                continue
            svc = MailboxService(kernel, mailbox, self.pipeline, self.handoff, once=once)
            svc.setServiceParent(self)
            self.mailboxes.append(svc)
        self.outbound = OutboundService(kernel, kernel.build_sender(), once=once)
        self.outbound.setServiceParent(self)
        self.opened: Deferred[None] | None = None

    def startService(self) -> None:
        # Children start once the store is open; the service itself is
        # "running" at once so the host's shutdown reaches us.
        service.Service.startService(self)
        for warning in self.kernel.unbudgeted_warnings():
            log.warning(warning)
        self.opened = self.kernel.open()

        def start_children(_: object) -> None:
            for child in self:
                child.startService()

        self.opened.addCallback(start_children)
        self.opened.addErrback(self._open_failed)

    def _open_failed(self, failure: Any) -> Any:
        log.error("gateway failed to start: %s", failure.getErrorMessage())
        return failure

    def stopService(self) -> Deferred[None]:
        async def stop() -> None:
            await service.MultiService.stopService(self)
            await self.kernel.close()

        return ensureDeferred(stop())

    def send(self, request: OutboundRequest) -> Deferred[Interaction]:
        """The Python API for a send: queue it, wake the outbox worker."""

        async def go() -> Interaction:
            self.outbound.expect()
            try:
                return await queue_send(self.kernel, request, self.outbound.forbidden)
            finally:
                self.outbound.arrived()

        return ensureDeferred(go())

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

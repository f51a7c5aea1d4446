"""The mailbox service tells its source which messages were released from
quarantine since its previous pass (Graph and EWS list them again then)."""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred

from postroom.pipeline.inbound import InboundPipeline
from postroom.services.handoff import HandoffService
from postroom.services.mailbox import MailboxService
from postroom.testing import FakeSource, TestKernel, result_of


class Told(FakeSource):
    def __init__(self) -> None:
        super().__init__()
        self.told: list[set[str]] = []

    def quarantine_released(self, keys: set[str]) -> None:
        self.told.append(set(keys))


def test_a_release_between_two_passes_is_told_to_the_source_once() -> None:
    with TestKernel() as tk:
        kernel = tk.kernel
        store = kernel.store
        pipeline = InboundPipeline(kernel.hooks, kernel.ctx, kernel.analysis)
        service = MailboxService(kernel, tk.mailbox(), pipeline, HandoffService(kernel))
        source = Told()
        service.source = source
        result_of(source.connect())

        def one_pass() -> None:
            result_of(ensureDeferred(service.run_pass()))

        for key in ("stuck", "other"):  # could not be fetched: quarantined without bytes
            result_of(store.quarantine("test", key, "fetch failed: cut"))
        one_pass()
        assert source.told == []  # nothing released since the first pass
        [entry] = [e for e in result_of(store.list_quarantine()) if e.source_key == "stuck"]
        result_of(store.release_quarantine(entry.id))
        result_of(store.quarantine("test", "new", "fetch failed: cut"))
        one_pass()
        assert source.told == [{"stuck"}]
        one_pass()
        assert source.told == [{"stuck"}]

"""The whole inbound pipeline as the gateway runs it, in-process, for the hostile-input tests.

Every installed plugin, a throwaway store, parse and analysis inline (the
budget's worker processes are tested on their own, in ``test_budget`` and
``test_live_gateway``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from postroom.ingest import ingest_mailbox
from postroom.kernel import Kernel
from postroom.model import FetchedMessage, Interaction, RawRef
from postroom.pipeline.inbound import InboundPipeline
from postroom.runner import InlineRunner
from tests.conftest import run

SPLIT = "copy-message-to-recipients"


class EveryPlugin:
    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.kernel = Kernel(store_override={"driver": "memory"}, runner=InlineRunner())
        run(self.kernel.open())
        self.inbound = InboundPipeline(self.kernel.hooks, self.kernel.ctx, self.kernel.analysis)
        self.mailbox = ingest_mailbox(self.kernel, "hostile")
        if SPLIT in self.mailbox.options:  # the split plugin is installed: let it fan out
            self.mailbox.options[SPLIT] = True

    def ingest(self, raw: bytes) -> list[Interaction]:
        """The interactions *raw* became (new ones, or the duplicates of earlier ones)."""
        path = self.spool / hashlib.sha256(raw).hexdigest()
        path.write_bytes(raw)
        try:
            fetched = FetchedMessage(
                mailbox=self.mailbox.name, source_key=path.name, raw=RawRef.from_path(path)
            )
            return run(self.inbound.process(fetched, self.mailbox)).interactions
        finally:
            path.unlink()

    def close(self) -> None:
        run(self.kernel.close())

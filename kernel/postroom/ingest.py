"""Running the inbound pipeline on files: ``postroom ingest`` and quarantine replay."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from postroom.config.loader import defaults
from postroom.config.options import Scope
from postroom.config.site import MailboxConfig
from postroom.model import FetchedMessage, Interaction, RawRef
from postroom.pipeline.inbound import InboundPipeline

if TYPE_CHECKING:
    from postroom.kernel import Kernel

INGEST_MAILBOX = "ingest"


def ingest_mailbox(kernel: Kernel, name: str = INGEST_MAILBOX) -> MailboxConfig:
    """A mailbox that exists only for ingest: the declared defaults, no driver."""
    options = defaults(kernel.schema, Scope.MAILBOX)
    options.update({"name": name, "type": "file"})
    return MailboxConfig(name=name, type="file", auth="none", options=options)


async def ingest_files(
    kernel: Kernel, paths: Sequence[Path], mailbox: MailboxConfig | None = None
) -> AsyncIterator[tuple[str, list[Interaction] | BaseException]]:
    """Yield ``(file, interactions)`` per file, or ``(file, error)``.

    *mailbox*: one of the site's, whose options apply (default: a mailbox of
    declared defaults). The source key is the file's resolved path, so
    ingesting the same file twice into a persistent store reports a duplicate.
    """
    pipeline = InboundPipeline(kernel.hooks, kernel.ctx, kernel.analysis)
    mailbox = mailbox or ingest_mailbox(kernel)
    for path in paths:
        try:
            raw = RawRef.from_path(path)
            fetched = FetchedMessage(
                mailbox=mailbox.name, source_key=f"file:{path.resolve()}", raw=raw
            )
            processed = await pipeline.process(fetched, mailbox)
        except Exception as exc:
            yield str(path), exc
            continue
        yield str(path), processed.interactions


async def replay_quarantined(kernel: Kernel, entry_id: str) -> list[Interaction]:
    """Run a quarantined message through the pipeline again; release it on success.

    An entry without bytes (the message could never be fetched) is only
    released: its mailbox fetches it again on the next pass.
    """
    entries = await kernel.store.list_quarantine(True)
    entry = next((e for e in entries if e.id == entry_id), None)
    if entry is None:
        raise KeyError(f"no quarantine entry {entry_id}")
    if entry.raw_sha256 is None:
        await kernel.store.release_quarantine(entry_id)
        return []
    fd, spool = tempfile.mkstemp(prefix="postroom-replay-", suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as fh:
            await kernel.store.read_quarantined_raw(entry_id, fh)
        mailbox = next((m for m in kernel.config.mailboxes if m.name == entry.mailbox), None)
        mailbox = mailbox or ingest_mailbox(kernel, entry.mailbox)
        fetched = FetchedMessage(
            mailbox=entry.mailbox, source_key=entry.source_key, raw=RawRef.from_path(spool)
        )
        pipeline = InboundPipeline(kernel.hooks, kernel.ctx, kernel.analysis)
        processed = await pipeline.process(fetched, mailbox)
    finally:
        os.unlink(spool)
    await kernel.store.release_quarantine(entry_id)
    return processed.result.new

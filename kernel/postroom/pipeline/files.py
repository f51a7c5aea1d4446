"""Files of a send request, made whole at queueing: read by reference, checked, bounded.

A file named by reference (``{interaction, index}``, and every file of a
forwarded interaction) is read from that interaction's raw message now, when
the request is queued: the outbox then holds its bytes, so the message sent
later carries what the agent saw even if the original is purged meanwhile. The
part is found by parsing the raw message again in a worker, under the
per-message budget (mail from outside is parsed nowhere else).

Every refusal is a :class:`~postroom.sendrequest.RequestError` naming the
request's field (``attachments``, or ``forward_of`` for the files a forward
carries): nothing is queued.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import TYPE_CHECKING

import attrs

from postroom.model import Interaction, OutboundAttachment, RawRef
from postroom.outbound_files import (
    FIELD,
    FileError,
    FileLimits,
    check_limits,
    file_limits,
    name_problem,
    sendable_type,
)
from postroom.parsing.parser import PartNotFound, part_bytes
from postroom.pipeline.inbound import limits_from
from postroom.sendrequest import RequestError
from postroom.workers import OverBudget

if TYPE_CHECKING:
    from postroom.kernel import Kernel

FORWARD_FIELD = "forward_of"


def forwarded_files(original: Interaction, start: int) -> list[OutboundAttachment]:
    """References to every file of *original* (a forward carries them), in order."""
    return [
        OutboundAttachment(interaction=original.id, index=index)
        for index in range(len(original.attachments))
    ][: max(0, 1000 - start)]


async def load_files(
    kernel: Kernel, files: list[OutboundAttachment], forwarded: int = 0
) -> list[OutboundAttachment]:
    """*files* with the bytes of those given by reference read in, all within the
    site's limits. The first *forwarded* files are a forward's (refusals name
    ``forward_of``); the others are the request's own (``attachments``)."""
    limits = file_limits(kernel.config)
    if len(files) > limits.max_count:
        # before any is read: each stored file costs a parse of its message
        field = FORWARD_FIELD if forwarded > limits.max_count else FIELD
        raise RequestError(
            field,
            f"{len(files)} files; the site allows {limits.max_count} "
            "(email-processing: outbound-attachment-max-count)",
        )
    loaded: list[OutboundAttachment] = []
    for n, item in enumerate(files):
        field, where = (
            (FORWARD_FIELD, f"file {n} of the forwarded mail: ")
            if n < forwarded
            else (FIELD, f"[{n - forwarded}]: ")
        )
        if not item.by_reference:
            loaded.append(item)
            continue
        try:
            loaded.append(await _read_file(kernel, item, limits))
        except FileError as exc:
            raise RequestError(field, where + exc.message) from None
    try:
        check_limits(loaded, limits)
    except FileError as exc:
        at = int(exc.where[1:-1]) if exc.where else None
        if at is not None and at < forwarded:
            raise RequestError(
                FORWARD_FIELD, f"file {at} of the forwarded mail: {exc.message}"
            ) from None
        where = f"[{at - forwarded}]: " if at is not None else ""
        raise RequestError(FIELD, where + exc.message) from None
    return loaded


async def _read_file(
    kernel: Kernel, item: OutboundAttachment, limits: FileLimits
) -> OutboundAttachment:
    assert item.interaction is not None and item.index is not None
    source = await kernel.store.get_interaction(item.interaction)
    if source is None:
        raise FileError("", f"no interaction {item.interaction!r} is stored")
    if item.index >= len(source.attachments):
        count = len(source.attachments)
        raise FileError(
            "",
            f"interaction {item.interaction!r} has {count} file{'s' * (count != 1)}; "
            f"there is no index {item.index}",
        )
    listed = source.attachments[item.index]
    if listed.size > limits.max_size:  # known already: do not read it for nothing
        raise FileError(
            "",
            f"{listed.filename or listed.safe_filename!r} is {listed.size} bytes; the site "
            f"allows {limits.max_size} per file (email-processing: outbound-attachment-max-size)",
        )
    data = await stored_part(kernel, source, listed.part_path)
    # the sender's name and type, unless they could not be sent (a path, a
    # control character): then the safe name made of it, a generic type
    name = listed.filename
    if not name or name_problem(name) is not None:
        name = listed.safe_filename
    return attrs.evolve(
        item,
        filename=item.filename or name,
        content_type=sendable_type(listed.content_type),
        data=data,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def stored_part(kernel: Kernel, source: Interaction, path: str) -> bytes:
    """The bytes of part *path* of *source*'s raw message, parsed in a worker
    (for a file sent by reference, and ``GET /interactions/{id}/attachments/{n}``).
    :class:`FileError` when the message or the part cannot be read."""
    fd, spool = tempfile.mkstemp(prefix="forward-", dir=kernel.spool_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                await kernel.store.read_raw(source.id, fh)
            except KeyError:
                raise FileError("", f"interaction {source.id!r} has no stored message") from None
        raw = await kernel.runner.run(RawRef.from_path, spool)
        try:
            data: bytes = await kernel.cpu_runner.run(
                part_bytes, raw, path, limits_from(kernel.ctx)
            )
        except PartNotFound as exc:
            raise FileError("", f"interaction {source.id!r}: {exc}") from None
        except OverBudget as exc:
            reason = f"interaction {source.id!r}: reading its file failed: {exc}"
            raise FileError("", reason) from None
        return data
    finally:
        os.unlink(spool)

"""The ``file`` sender: writes each outbound message to a folder (the embedded default).

One ``<message-id>.eml`` per message plus ``<message-id>.envelope.json`` with
the envelope, both written to a temporary name and renamed, so a reader never
sees half a file. Useful for development, for archiving, and for handing mail
to another system that picks files up.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer
from zope.interface import implementer

from postroom.config.options import OptionSchema, Scope
from postroom.drivers import DriverContext, SendResult
from postroom.errors import SendError
from postroom.interfaces import ISender
from postroom.model import Envelope

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


@implementer(ISender)
class FileSender:
    needs_auth = False  # a local folder: no server to log in to

    @staticmethod
    def postroom_add_options(schema: OptionSchema) -> None:
        schema.add(
            "folder-path",
            "path",
            default="var/outbox",
            scope=Scope.SMTP_CLIENT,
            types=("file",),
            description="Folder the outbound .eml files are written to; created if missing.",
        )

    def __init__(self, options: Any, context: DriverContext) -> None:
        self.folder = Path(options.get("folder-path"))
        self.context = context

    def _write(self, message: bytes, envelope: Envelope, message_id: str) -> SendResult:
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = _UNSAFE.sub("_", message_id.strip("<>")) or "message"
        for suffix, data in (
            (".eml", message),
            (".envelope.json", json.dumps(attrs.asdict(envelope), indent=1).encode()),
        ):
            target = self.folder / (stem + suffix)
            tmp = self.folder / ("." + stem + suffix + ".tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        return SendResult(
            message_id=message_id,
            accepted=list(envelope.rcpt_to),
            detail=str(self.folder / (stem + ".eml")),
        )

    def send(
        self, message: bytes, envelope: Envelope, message_id: str
    ) -> defer.Deferred[SendResult]:
        def write() -> SendResult:
            try:
                return self._write(message, envelope, message_id)
            except OSError as exc:
                raise SendError(f"cannot write to {self.folder}: {exc.strerror}") from exc

        return self.context.runner.run(write)

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)

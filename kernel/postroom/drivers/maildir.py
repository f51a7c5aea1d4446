"""The ``maildir`` source: a local drop folder (the embedded default).

Messages are read from ``new/`` (and files put straight into the folder are
accepted too, for drop folders filled by hand); a message is moved to
``cur/`` only after the store committed it, so a crash leaves it in place and
it is fetched again (the store's source key makes that a duplicate, not a
second interaction).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from zope.interface import implementer

from postroom.config.options import OptionSchema, Scope
from postroom.drivers import DriverContext, SourceItem
from postroom.errors import SourceError
from postroom.interfaces import ISource
from postroom.model import FetchedMessage, RawRef


@implementer(ISource)
class MaildirSource:
    supports_push = False
    needs_auth = False  # a local folder: no server to log in to

    @staticmethod
    def postroom_add_options(schema: OptionSchema) -> None:
        schema.add(
            "folder-path",
            "path",
            scope=Scope.MAILBOX,
            types=("maildir",),
            required=True,
            description="The maildir folder (with new/, cur/, tmp/); created if missing.",
        )

    def __init__(self, mailbox: Any, context: DriverContext) -> None:
        self.mailbox = mailbox
        self.context = context
        self.root = Path(mailbox.get("folder-path"))
        self._wait: defer.Deferred[None] | None = None

    def _sub(self, name: str) -> Path:
        return self.root / name

    def connect(self) -> defer.Deferred[None]:
        try:
            if self.root.exists() and not self.root.is_dir():
                raise SourceError(f"maildir {self.root} is not a directory")
            for sub in ("new", "cur", "tmp"):
                self._sub(sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return defer.fail(SourceError(f"cannot open maildir {self.root}: {exc.strerror}"))
        except SourceError as exc:
            return defer.fail(exc)
        return defer.succeed(None)

    def _candidates(self) -> list[Path]:
        found = [
            p for p in self._sub("new").iterdir() if p.is_file() and not p.name.startswith(".")
        ]
        found += [p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")]
        return sorted(found, key=lambda p: (p.name, str(p)))

    def list_new(self, cursor: Any) -> defer.Deferred[list[SourceItem]]:
        try:
            items = [
                SourceItem(source_key=self._key(p), size=p.stat().st_size)
                for p in self._candidates()
            ]
        except OSError as exc:
            return defer.fail(SourceError(f"cannot list maildir {self.root}: {exc.strerror}"))
        return defer.succeed(items)

    @staticmethod
    def _key(path: Path) -> str:
        """The unique part of a maildir name (flags after ``:2,`` change)."""
        return path.name.split(":", 1)[0]

    def _path_of(self, key: str) -> Path:
        for p in self._candidates():
            if self._key(p) == key:
                return p
        raise SourceError(f"message {key} vanished from {self.root}")

    def fetch(self, item: SourceItem) -> defer.Deferred[FetchedMessage]:
        try:
            path = self._path_of(item.source_key)
            raw = RawRef.from_path(path)
            arrived = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except (OSError, SourceError) as exc:
            return defer.fail(SourceError(str(exc)))
        return defer.succeed(
            FetchedMessage(
                mailbox=self.mailbox.name,
                source_key=item.source_key,
                raw=raw,
                server_size=item.size,
                received_at=arrived,  # when it was dropped in: the lag metric's start
            )
        )

    def acknowledge(self, message: FetchedMessage) -> defer.Deferred[None]:
        source = Path(message.raw.path)
        target = self._sub("cur") / (self._key(source) + ":2,S")
        try:
            os.replace(source, target)
        except FileNotFoundError:
            pass  # already moved by an earlier acknowledgement
        except OSError as exc:
            return defer.fail(SourceError(f"cannot move {source.name} to cur/: {exc.strerror}"))
        return defer.succeed(None)

    def release(self, message: FetchedMessage) -> defer.Deferred[None]:
        return defer.succeed(None)  # nothing spooled: the file stays in new/

    def wait_for_new(self, timeout: float) -> defer.Deferred[None]:
        self._wait = task.deferLater(self.context.clock, timeout, lambda: None)
        self._wait.addErrback(lambda f: f.trap(defer.CancelledError))
        return self._wait

    def disconnect(self) -> defer.Deferred[None]:
        if self._wait is not None and not self._wait.called:
            self._wait.cancel()
        return defer.succeed(None)

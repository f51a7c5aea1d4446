"""Coalescing the kernel's concurrent downloads into few ``UID FETCH`` commands.

The kernel fetches up to ``gateway: concurrency`` messages of a mailbox at
once, but an IMAP connection runs one command at a time: one ``UID FETCH`` per
message would make a mailbox's download one round trip per message. The
batcher collects the fetches asked for while the connection is busy (and
those asked in the same reactor turn) and sends them as one command. Large
messages are still downloaded in ``mail.imap.fetchsize`` pieces: only the
first piece of each goes in a batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from postroom_imap.client import BodyFetchCommand

if TYPE_CHECKING:
    from postroom_imap.client import IMAPClient, Sink

#: messages per command: enough to hide the round trips, few enough that one
#: slow message does not hold many others back
MAX_BATCH = 50


class FetchBatcher:
    """Downloads the first *length* bytes of messages (all of each when None)."""

    def __init__(self, reactor: Any, length: int | None, max_batch: int = MAX_BATCH) -> None:
        self.reactor = reactor
        self.length = length
        self.max_batch = max_batch
        self._waiting: list[_Wanted] = []
        self._busy = False
        self._scheduled = False

    def fetch(self, client: IMAPClient, uid: int, sink: Sink) -> Deferred[int | None]:
        """Write *uid* into *sink*: the number of bytes written, or None when
        the message is gone. Fails as the command does (e.g. ConnectionDown)."""
        wanted = _Wanted(client, uid, sink, Deferred())
        self._waiting.append(wanted)
        if not self._busy and not self._scheduled:
            # let the fetches asked for in this reactor turn join the batch
            self._scheduled = True
            self.reactor.callLater(0, self._send)
        return wanted.done

    def _send(self) -> None:
        self._scheduled = False
        if self._busy or not self._waiting:
            return
        client = self._waiting[0].client  # a reconnect makes a new client
        batch: dict[int, _Wanted] = {}
        rest: list[_Wanted] = []
        for wanted in self._waiting:
            if wanted.client is client and wanted.uid not in batch and len(batch) < self.max_batch:
                batch[wanted.uid] = wanted
            else:
                rest.append(wanted)
        self._waiting = rest
        self._busy = True
        offset = 0 if self.length is not None else None
        command = BodyFetchCommand({uid: w.sink for uid, w in batch.items()}, offset, self.length)
        d = client.send_body_fetch(command)

        def delivered(found: dict[int, int | None]) -> None:
            for uid, wanted in batch.items():
                wanted.done.callback(found.get(uid))

        def failed(failure: Failure) -> None:
            # The message whose download the break interrupted hears first: the
            # kernel counts the first failure of a broken pass against that
            # message, so one that always breaks the link ends in quarantine
            # instead of its batch-mates taking the blame in turn.
            culprit = command.culprit()
            first = [batch[culprit]] if culprit in batch else []
            for wanted in [*first, *(w for uid, w in batch.items() if uid != culprit)]:
                wanted.done.errback(failure)

        d.addCallbacks(delivered, failed)
        d.addBoth(self._sent)

    def _sent(self, _: Any) -> None:
        self._busy = False
        self._send()


@attrs.frozen
class _Wanted:
    client: IMAPClient
    uid: int
    sink: Sink
    done: Deferred[int | None]

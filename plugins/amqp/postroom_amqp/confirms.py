"""What the broker's answer to one publish means for its hand-off.

pika's Twisted channel gives each publish a Deferred that its confirm settles:
``basic.ack`` fires it, ``basic.nack`` fails it with ``NackError``, and an ack
that follows a ``basic.return`` (a mandatory message no queue took) fails it
with ``UnroutableError``. With many publishes in flight the broker may confirm
several at once (``multiple``), and pika then pins a return on the lowest
delivery tag of the batch, which need not be the message returned: the
message returned would count as delivered, the other as unroutable.

:class:`Returns` keeps the ``message_id`` of every message the broker returned
on the channel, so :meth:`Returns.settle` decides by the message itself: a
publish succeeds only when it was acked and never returned.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pika.exceptions import AMQPError, NackError, UnroutableError

from postroom.api import HandoffError


class Returns:
    """The messages one channel's broker returned, until their confirm comes."""

    def __init__(self) -> None:
        self._returned: Counter[str] = Counter()

    def __len__(self) -> int:
        return sum(self._returned.values())

    def returned(self, message: Any) -> None:
        """``add_on_return_callback``: a ``ReceivedMessage`` the broker returned."""
        message_id = getattr(message.properties, "message_id", None)
        if message_id is not None:
            self._returned[message_id] += 1

    def _take(self, message_id: str) -> bool:
        if self._returned.get(message_id, 0) <= 0:
            return False
        self._returned[message_id] -= 1
        if not self._returned[message_id]:
            del self._returned[message_id]
        return True

    def settle(self, message_id: str, error: BaseException | None, where: str) -> None:
        """Return when the broker took the message *message_id* for good; else
        raise :class:`HandoffError` (not permanent: the kernel retries).

        *error*: how the publish's Deferred failed (None: it fired, an ack).
        *where*: the exchange and routing key, for the error message.
        """
        if error is None or isinstance(error, UnroutableError):
            if self._take(message_id):
                raise HandoffError(
                    f"unroutable: no queue is bound for {where} (the broker returned the message)"
                )
            if error is None or _returned_ids(error) - {message_id}:
                return  # acked; a return pinned on it was another message's
            raise HandoffError(f"unroutable: the broker returned the message ({where})")
        self._take(message_id)
        if isinstance(error, NackError):
            raise HandoffError("the broker refused the message (basic.nack)")
        raise HandoffError(f"no confirm from the broker: {describe(error)}")


def _returned_ids(error: UnroutableError) -> set[str]:
    return {
        str(getattr(message.properties, "message_id", None)) for message in error.messages or ()
    }


def describe(error: BaseException) -> str:
    """A broker or connection failure in words, without credentials (pika's
    errors carry reply codes and texts, never the connection parameters)."""
    from postroom.api import describe_connection_error, tls_reasons

    tls = tls_reasons(error)
    if tls is not None:
        return f"TLS: {', '.join(tls)}"
    known = describe_connection_error(error)
    if known is not None:
        return known
    if isinstance(error, AMQPError):
        text = str(error) or type(error).__name__
        return f"{type(error).__name__}: {text}" if text != type(error).__name__ else text
    return f"{type(error).__name__}: {error}"

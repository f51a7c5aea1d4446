"""Exponential back-off with jitter, for reconnects and retries."""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred


@attrs.define
class Backoff:
    """``delay(n)`` for the n-th consecutive failure (n >= 1): initial * 2**(n-1),
    capped at *maximum*, with +/- *jitter* fraction (so a hundred mailboxes
    that lost the same server do not all come back in the same second)."""

    initial: float = 1.0
    maximum: float = 300.0
    jitter: float = 0.2
    rand: Callable[[], float] = random.random

    def delay(self, failures: int) -> float:
        base = min(self.maximum, self.initial * (2 ** max(0, failures - 1)))
        spread = base * self.jitter
        return max(0.0, base - spread + 2 * spread * self.rand())


def sleep(clock: object, seconds: float) -> Deferred[None]:
    """A cancellable pause on the injected clock (``task.Clock`` in tests)."""
    return task.deferLater(clock, seconds, lambda: None)  # type: ignore[arg-type]

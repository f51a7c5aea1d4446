"""Whether the directory is worth asking now: a circuit breaker on the injected clock.

After a failed look-up the directory is left alone until a retry time
(``retry-initial``, doubling per consecutive failure up to ``retry-max``);
then one look-up is let through as a trial: its success closes the circuit,
its failure pushes the retry time out. While open, a look-up costs nothing.
"""

from __future__ import annotations

from typing import Any

from postroom.api import Backoff


class Circuit:
    def __init__(self, backoff: Backoff, clock: Any) -> None:
        self.backoff = backoff
        self.clock = clock
        self.failures = 0
        self.retry_at: float | None = None
        self.reason: str | None = None
        self._trial = False

    @property
    def state(self) -> str:
        """``closed`` (asking), ``open`` (until ``retry_at``) or ``trial``."""
        if self.failures == 0:
            return "closed"
        return "trial" if self._trial else "open"

    def allows(self) -> bool:
        """May a look-up go to the directory now? (Takes the trial slot when due.)"""
        if self.failures == 0:
            return True
        if self._trial or self.retry_at is None or self.clock.seconds() < self.retry_at:
            return False
        self._trial = True
        return True

    def failed(self, reason: str) -> float:
        """Record a failure; the seconds until the next try."""
        self.failures += 1
        self._trial = False
        self.reason = reason
        delay = self.backoff.delay(self.failures)
        self.retry_at = self.clock.seconds() + delay
        return delay

    def succeeded(self) -> bool:
        """Record a success; True when that closed an open circuit."""
        was_open = self.failures > 0
        self.failures, self.retry_at, self.reason, self._trial = 0, None, None, False
        return was_open

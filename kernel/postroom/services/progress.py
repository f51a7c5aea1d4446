"""Progress of a long pass (the first import of a full mailbox): count, rate, time left.

Reported every ``interval`` seconds of the injected clock: on a terminal as one
line rewritten in place, otherwise as log lines, so an operator watching a
6,000-message import sees it move and knows when it ends.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from twisted.internet import task

log = logging.getLogger(__name__)

#: passes with fewer messages than this finish too soon to need a display
THRESHOLD = 100


class Progress:
    def __init__(
        self,
        mailbox: str,
        total: int,
        clock: Any,
        *,
        interval: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.total = total
        self.clock = clock
        self.done = 0
        self.started = clock.seconds()
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._loop = task.LoopingCall(self.report)
        self._loop.clock = clock
        self._loop.start(interval, now=False)

    def step(self, count: int = 1) -> None:
        self.done += count

    def line(self) -> str:
        elapsed = max(self.clock.seconds() - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = f"about {_duration(left)} left" if left is not None else "starting"
        return f"mailbox {self.mailbox}: {self.done:,} of {self.total:,} ({rate:,.1f} msg/s, {eta})"

    def report(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()
        else:
            log.info("%s", self.line(), extra={"mailbox": self.mailbox})

    def finish(self) -> None:
        if self._loop.running:
            self._loop.stop()
        elapsed = max(self.clock.seconds() - self.started, 1e-9)
        summary = (
            f"mailbox {self.mailbox}: {self.done:,} of {self.total:,} in "
            f"{_duration(elapsed)} ({self.done / elapsed:,.1f} msg/s)"
        )
        if self.tty:
            self.stream.write("\r" + summary + "\x1b[K\n")
            self.stream.flush()
        log.info("%s", summary, extra={"mailbox": self.mailbox})


def _duration(value: float) -> str:
    seconds = round(value)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"

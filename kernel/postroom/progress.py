"""Progress of long work on a mailbox: the first import of a full folder, and
the listing that comes before it.

Reported every ``interval`` seconds of the injected clock: on a terminal as one
line rewritten in place, otherwise as log lines, so an operator watching a
6,000-message import sees it move and knows when it ends. Work that ends
before the first report shows nothing but its summary (an import) or nothing
at all (a listing).

:class:`Progress` is the kernel's, for a pass whose size is known.
:class:`ListingProgress` is for sources (public through ``postroom.api``):
Graph and EWS list a large folder page by page, which takes minutes for
100,000 messages before the kernel knows how many there are.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any, TextIO

from twisted.internet import task

log = logging.getLogger(__name__)

#: passes with fewer messages than this finish too soon to need a display
THRESHOLD = 100
#: seconds between two reports
INTERVAL = 5.0


class _Report:
    """What both displays share: the clock, the cadence, terminal or log."""

    def __init__(self, mailbox: str, clock: Any, interval: float, stream: TextIO | None) -> None:
        self.mailbox = mailbox
        self.clock = clock
        self.started = clock.seconds()
        self.reports = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._loop = task.LoopingCall(self.report)
        self._loop.clock = clock
        self._loop.start(interval, now=False)

    def line(self) -> str:
        raise NotImplementedError

    def elapsed(self) -> float:
        return max(self.clock.seconds() - self.started, 1e-9)

    def report(self) -> None:
        self.reports += 1
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()
        else:
            log.info("%s", self.line(), extra={"mailbox": self.mailbox})

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def summary(self, text: str) -> None:
        """The last line: ends the rewritten line on a terminal, and is logged."""
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K\n")
            self.stream.flush()
        log.info("%s", text, extra={"mailbox": self.mailbox})


class Progress(_Report):
    """A pass over *total* messages; :meth:`step` as each one is done."""

    def __init__(
        self,
        mailbox: str,
        total: int,
        clock: Any,
        *,
        interval: float = INTERVAL,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.done = 0
        super().__init__(mailbox, clock, interval, stream)

    def step(self, count: int = 1) -> None:
        self.done += count

    def line(self) -> str:
        rate = self.done / self.elapsed()
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = f"about {_duration(left)} left" if left is not None else "starting"
        return f"mailbox {self.mailbox}: {self.done:,} of {self.total:,} ({rate:,.1f} msg/s, {eta})"

    def finish(self) -> None:
        self.stop()
        elapsed = self.elapsed()
        self.summary(
            f"mailbox {self.mailbox}: {self.done:,} of {self.total:,} in "
            f"{_duration(elapsed)} ({self.done / elapsed:,.1f} msg/s)"
        )


class ListingProgress(_Report):
    """A source listing a folder page by page: :meth:`add` each page's count.

    Used as a context manager around the listing; a listing done before the
    first report shows nothing, a longer one ends with a summary line (or, when
    it failed, a line saying where it stopped).
    """

    def __init__(
        self,
        mailbox: str,
        clock: Any,
        *,
        interval: float = INTERVAL,
        stream: TextIO | None = None,
    ) -> None:
        self.listed = 0
        super().__init__(mailbox, clock, interval, stream)

    def add(self, count: int) -> None:
        """*count* more messages listed (one page)."""
        self.listed += count

    def line(self) -> str:
        rate = self.listed / self.elapsed()
        return (
            f"mailbox {self.mailbox}: listing… {self.listed:,} message(s) so far "
            f"({rate:,.1f} msg/s)"
        )

    def finish(self, complete: bool = True) -> None:
        """Stop reporting; after a report, say how it ended."""
        self.stop()
        if not self.reports:
            return
        took = _duration(self.elapsed())
        if complete:
            self.summary(f"mailbox {self.mailbox}: listed {self.listed:,} message(s) in {took}")
        else:
            self.summary(
                f"mailbox {self.mailbox}: listing stopped after {self.listed:,} message(s) "
                f"in {took}"
            )

    def __enter__(self) -> ListingProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish(complete=kind is None)


def _duration(value: float) -> str:
    seconds = round(value)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"

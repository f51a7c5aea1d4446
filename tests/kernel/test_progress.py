"""The progress display of long passes and of long listings, driven by task.Clock."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import pytest
from twisted.internet import task

from postroom.api import ListingProgress
from postroom.progress import Progress
from tests.kernel.test_gateway import make_kernel, once


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_reports_count_rate_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "postroom.progress")
    clock = task.Clock()
    progress = Progress("support", 6000, clock, interval=5, stream=io.StringIO())
    progress.step(500)
    clock.advance(5)
    assert "mailbox support: 500 of 6,000 (100.0 msg/s, about 55 s left)" in caplog.text
    progress.step(5500)
    clock.advance(55)
    progress.finish()
    assert "6,000 of 6,000 in 1 min 00 s (100.0 msg/s)" in caplog.text
    assert not clock.getDelayedCalls()


def test_on_a_terminal_one_line_is_rewritten() -> None:
    clock = task.Clock()
    screen = Terminal()
    progress = Progress("support", 200, clock, interval=2, stream=screen)
    progress.step(20)
    clock.advance(2)
    progress.step(20)
    clock.advance(2)
    progress.finish()
    text = screen.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")
    assert "40 of 200 (10.0 msg/s, about 16 s left)" in text


def test_a_paged_listing_reports_its_count_then_a_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "postroom.progress")
    clock = task.Clock()
    with ListingProgress("support", clock, interval=5, stream=io.StringIO()) as listing:
        for _ in range(4):  # a page of 512 every 3 s
            clock.advance(3)
            listing.add(512)
    assert [r.getMessage() for r in caplog.records] == [
        "mailbox support: listing… 512 message(s) so far (85.3 msg/s)",
        "mailbox support: listing… 1,536 message(s) so far (128.0 msg/s)",
        "mailbox support: listed 2,048 message(s) in 12 s",
    ]
    assert not clock.getDelayedCalls()


def test_a_quick_listing_shows_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "postroom.progress")
    clock = task.Clock()
    screen = Terminal()
    with ListingProgress("support", clock, interval=5, stream=screen) as listing:
        clock.advance(4.9)
        listing.add(80)
    clock.advance(60)
    assert screen.getvalue() == "" and caplog.records == []
    assert not clock.getDelayedCalls()


def test_a_failed_listing_says_where_it_stopped_on_the_terminal_line() -> None:
    clock = task.Clock()
    screen = Terminal()
    with (
        pytest.raises(ConnectionError),
        ListingProgress("support", clock, interval=2, stream=screen) as listing,
    ):
        listing.add(100)
        clock.advance(2)
        raise ConnectionError("cut")
    text = screen.getvalue()
    assert "\rmailbox support: listing… 100 message(s) so far (50.0 msg/s)" in text
    assert text.endswith("\rmailbox support: listing stopped after 100 message(s) in 2 s\x1b[K\n")
    assert not clock.getDelayedCalls()


def test_a_long_first_import_shows_progress(
    quickstart: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postroom.progress")
    new = quickstart.parent / "maildir" / "new"
    template = new / "1762071300.M1P1.quickstart"
    for n in range(150):
        copy = new / f"1762100000.M{n}P2.bulk"
        shutil.copy(template, copy)
        copy.write_bytes(copy.read_bytes().replace(b"4711-report@", f"bulk-{n}@".encode()))
    ok, gateway = once(make_kernel(quickstart))
    assert ok and gateway.mailboxes[0].health.ingested == 154
    assert "mailbox support: 154 of 154 in" in caplog.text

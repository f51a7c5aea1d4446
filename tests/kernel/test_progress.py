"""The progress display of long passes, driven by task.Clock."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import pytest
from twisted.internet import task

from postroom.services.progress import Progress
from tests.kernel.test_gateway import make_kernel, once


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_reports_count_rate_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "postroom.services.progress")
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


def test_a_long_first_import_shows_progress(
    quickstart: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postroom.services.progress")
    new = quickstart.parent / "maildir" / "new"
    template = new / "1762071300.M1P1.quickstart"
    for n in range(150):
        copy = new / f"1762100000.M{n}P2.bulk"
        shutil.copy(template, copy)
        copy.write_bytes(copy.read_bytes().replace(b"4711-report@", f"bulk-{n}@".encode()))
    ok, gateway = once(make_kernel(quickstart))
    assert ok and gateway.mailboxes[0].health.ingested == 154
    assert "mailbox support: 154 of 154 in" in caplog.text

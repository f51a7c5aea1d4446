"""The process pool that parses on every core."""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from postroom.model import RawRef
from postroom.parsing.limits import ParseLimits
from postroom.parsing.parser import parse_message
from postroom.runner import InlineRunner, ProcessPoolRunner


def test_calls_run_in_another_process_and_results_come_back(quickstart: Path) -> None:
    runner = ProcessPoolRunner(InlineRunner(), workers=1)
    try:
        assert runner._call(os.getpid) != os.getpid()
        raw = RawRef.from_path(next((quickstart.parent / "maildir" / "new").iterdir()))
        parsed = runner._call(parse_message, raw, ParseLimits())
        assert parsed.raw_sha256 == raw.sha256 and parsed.subject
    finally:
        runner.close()


def test_a_dead_worker_fails_that_call_and_the_next_call_gets_a_new_pool() -> None:
    runner = ProcessPoolRunner(InlineRunner(), workers=1)
    try:
        with pytest.raises(BrokenProcessPool):
            runner._call(os._exit, 3)
        assert runner._call(os.getpid) != os.getpid()
    finally:
        runner.close()


def test_deferred_interface_through_the_thread_runner() -> None:
    from tests.conftest import run

    runner = ProcessPoolRunner(InlineRunner(), workers=1)
    try:
        assert run(runner.run(sum, [1, 2, 3])) == 6
        with pytest.raises(TypeError):
            runner.run(sorted, [2, 1], reverse=True)
    finally:
        runner.close()

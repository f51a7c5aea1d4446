"""Deadline (connect-timeout) and ResponseTimer (protocol-timeout) on an injected clock."""

from __future__ import annotations

from twisted.internet import task

from postroom.api import Deadline, ResponseTimer


def test_deadline_fires_once_at_its_time() -> None:
    clock = task.Clock()
    fired: list[bool] = []
    deadline = Deadline(clock, 30, lambda: fired.append(True))
    clock.advance(29.9)
    assert (fired, deadline.expired) == ([], False)
    clock.advance(0.1)
    assert (fired, deadline.expired) == ([True], True)
    clock.advance(100)
    assert fired == [True]
    deadline.cancel()  # after expiry: harmless


def test_deadline_cancelled_by_leaving_the_block() -> None:
    clock = task.Clock()
    fired: list[bool] = []
    with Deadline(clock, 5, lambda: fired.append(True)) as deadline:
        clock.advance(4)
    clock.advance(10)
    assert fired == [] and not deadline.expired
    assert clock.getDelayedCalls() == []


def test_response_timer_runs_only_while_a_command_waits() -> None:
    clock = task.Clock()
    timeouts: list[float] = []
    timer = ResponseTimer(clock, 60, lambda: timeouts.append(clock.seconds()))
    timer.touch(waiting=False)  # idle between commands: no limit
    clock.advance(1000)
    assert timeouts == [] and not timer.running
    timer.touch(waiting=True)  # a command sent at t=1000
    clock.advance(50)
    timer.touch(waiting=True)  # some bytes came: the server gets the full time again
    clock.advance(59)
    assert timeouts == []
    clock.advance(1)
    assert timeouts == [1110]
    assert not timer.running


def test_response_timer_stops_when_the_answer_is_complete() -> None:
    clock = task.Clock()
    timeouts: list[bool] = []
    timer = ResponseTimer(clock, 10, lambda: timeouts.append(True))
    timer.touch(waiting=True)
    clock.advance(5)
    timer.touch(waiting=False)
    clock.advance(100)
    assert timeouts == [] and clock.getDelayedCalls() == []


def test_response_timer_without_a_limit() -> None:
    clock = task.Clock()
    timer = ResponseTimer(clock, 0, lambda: None)
    timer.touch(waiting=True)
    assert clock.getDelayedCalls() == [] and not timer.running


def test_stop_is_idempotent() -> None:
    clock = task.Clock()
    timer = ResponseTimer(clock, 10, lambda: None)
    timer.stop()
    timer.touch(waiting=True)
    timer.stop()
    timer.stop()
    assert clock.getDelayedCalls() == []

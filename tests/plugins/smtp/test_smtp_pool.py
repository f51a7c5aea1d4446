"""The connection pool's rules, with fake connections and a fake clock.

:class:`~tests.plugins.smtp.fakes.FakeFactory` is a fake for the pool logic
only (no SMTP): it counts opens, NOOP checks and disposals.
"""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.internet.defer import CancelledError

from postroom_smtp.pool import ConnectionPool, PoolClosed
from tests.conftest import run
from tests.plugins.smtp.fakes import FakeConnection, FakeFactory


def make_pool(
    factory: FakeFactory, clock: task.Clock, size: int = 2, check: float = 30, max_idle: float = 300
) -> ConnectionPool[FakeConnection]:
    return ConnectionPool(
        size=size,
        check_idle=check,
        max_idle=max_idle,
        clock=clock,
        open=factory.open,
        check=factory.check,
        dispose=factory.dispose,
    )


def test_reuses_a_released_connection() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock)
    first = run(pool.acquire())
    pool.release(first)
    clock.advance(5)
    again = run(pool.acquire())
    assert again is first
    assert len(factory.opened) == 1
    assert factory.checked == []  # idle 5 s < 30 s: no NOOP
    assert pool.stats.reused == 1


def test_never_more_than_size_connections_and_waiters_are_served_in_order() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock, size=2)
    a = run(pool.acquire())
    b = run(pool.acquire())
    third = pool.acquire()
    fourth = pool.acquire()
    assert not third.called and not fourth.called
    assert len(factory.opened) == 2 and pool.waiting == 2
    pool.release(b)
    assert run(third) is b
    assert not fourth.called
    pool.release(a)
    assert run(fourth) is a
    assert len(factory.opened) == 2
    assert pool.stats.waited == 2


def test_a_broken_connection_frees_its_slot_for_a_waiter() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock, size=1)
    a = run(pool.acquire())
    waiting = pool.acquire()
    pool.release(a, broken=True)
    b = run(waiting)
    assert b is not a and a.closed
    assert pool.stats.discarded == 1
    assert pool.in_use == 1


def test_the_slot_is_counted_while_a_connection_is_being_opened() -> None:
    factory, clock = FakeFactory(pending=True), task.Clock()
    pool = make_pool(factory, clock, size=1)
    first = pool.acquire()
    second = pool.acquire()
    assert len(factory.opened) == 1 and pool.waiting == 1
    factory.finish_open(0)
    conn = run(first)
    pool.release(conn)
    assert run(second) is conn


def test_a_failed_open_frees_the_slot_and_reports_the_error() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock, size=1)
    factory.fail_next_open = OSError("connection refused")
    with pytest.raises(OSError):
        run(pool.acquire())
    assert pool.in_use == 0
    assert run(pool.acquire()).number == 1
    assert pool.stats.open_failures == 1


def test_noop_check_after_idle_longer_than_check_time() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock, check=30)
    conn = run(pool.acquire())
    pool.release(conn)
    clock.advance(31)
    assert run(pool.acquire()) is conn
    assert factory.checked == [conn]
    assert pool.stats.checks == 1 and pool.stats.check_failures == 0


def test_a_failed_noop_is_replaced_by_a_new_connection_transparently() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock, size=1, check=30)
    conn = run(pool.acquire())
    pool.release(conn)
    conn.alive = False  # the server dropped it meanwhile
    clock.advance(60)
    fresh = run(pool.acquire())
    assert fresh is not conn
    assert conn.closed
    assert pool.stats.check_failures == 1
    assert pool.in_use == 1  # the slot was kept, not counted twice


def test_connections_idle_for_max_idle_are_closed_by_the_clock() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock, size=2, max_idle=300)
    a = run(pool.acquire())
    b = run(pool.acquire())
    pool.release(a)
    clock.advance(100)
    pool.release(b)
    clock.advance(199)
    assert not a.closed
    clock.advance(1)  # a: 300 s idle
    assert a.closed and not b.closed
    assert pool.idle == 1
    clock.advance(100)  # b: 300 s idle
    assert b.closed
    assert pool.idle == 0 and pool.stats.expired == 2
    assert clock.getDelayedCalls() == []
    assert run(pool.acquire()).number == 3


def test_max_idle_zero_keeps_nothing_idle() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock, max_idle=0)
    conn = run(pool.acquire())
    pool.release(conn)
    assert conn.closed and pool.idle == 0


def test_most_recently_used_first_so_spare_connections_age_out() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock, size=2)
    a = run(pool.acquire())
    b = run(pool.acquire())
    pool.release(a)
    clock.advance(1)
    pool.release(b)
    assert run(pool.acquire()) is b


def test_close_quits_idle_connections_waits_for_busy_ones_and_fails_waiters() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock, size=2)
    a = run(pool.acquire())
    b = run(pool.acquire())
    pool.release(a)
    waiter = pool.acquire()
    assert run(waiter) is a  # took the idle one
    waiter2 = pool.acquire()
    closed = pool.close()
    with pytest.raises(PoolClosed):
        run(waiter2)
    assert not closed.called  # a and b are still in use
    pool.release(a)
    assert a.closed and not closed.called
    pool.release(b)
    assert b.closed
    run(closed)
    with pytest.raises(PoolClosed):
        run(pool.acquire())
    assert clock.getDelayedCalls() == []


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    factory, clock = FakeFactory(), task.Clock()
    pool = make_pool(factory, clock, size=1)
    a = run(pool.acquire())
    waiting = pool.acquire()
    waiting.cancel()
    with pytest.raises(CancelledError):
        run(waiting)
    assert pool.waiting == 0
    pool.release(a)
    assert pool.idle == 1

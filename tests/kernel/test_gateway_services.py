"""What an embedding application gets from the gateway service tree: the store's
gateway lock (one gateway process owns a store), the HTTP API as a child
service that closes its port on stop, and a kernel whose default runner keeps
blocking calls off the reactor thread.

The subprocess side (a second ``postroom run``, SIGKILL, ``send`` beside a
running gateway) is in ``tests/integration/test_one_gateway.py``.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import selectreactor, task
from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import MemoryReactorClock

from postroom.kernel import Kernel
from postroom.runner import InlineRunner, ThreadPoolRunner
from postroom.services.gateway import LOCK_CHECK_INTERVAL, Gateway
from postroom.store.lock import FileLock, GatewayLocked, GatewayLockLost
from postroom.store.sqlite import MemoryStore, SQLiteStore
from postroom.web import ApiService
from tests.conftest import run
from tests.integration.sites import free_port
from tests.kernel.test_gateway import make_kernel

# ----------------------------------------------------------------------- the lock


def test_a_file_lock_is_exclusive_names_its_holder_and_is_given_back(tmp_path: Path) -> None:
    path = str(tmp_path / "site" / "store.db.lock")  # its folder is made
    first = FileLock.acquire(path, "SQLite database store.db")
    with pytest.raises(GatewayLocked) as refused:  # another open file: as another process
        FileLock.acquire(path, "SQLite database store.db")
    assert refused.value.store == "SQLite database store.db"
    assert refused.value.holder is not None and f"pid {os.getpid()} " in refused.value.holder
    assert str(refused.value).startswith(
        "SQLite database store.db is in use by another gateway (pid "
    )
    assert "one gateway process owns a store" in str(refused.value)
    first.check()
    first.release()
    first.release()  # once; later calls do nothing
    with pytest.raises(GatewayLockLost):
        first.check()
    again = FileLock.acquire(path, "SQLite database store.db")
    again.release()
    assert Path(path).exists()  # never deleted (see FileLock)


def test_the_sqlite_lock_is_a_file_beside_the_database(tmp_path: Path) -> None:
    store = SQLiteStore({"path": str(tmp_path / "store.db")})
    lock = store.acquire_gateway_lock()
    try:
        assert isinstance(lock, FileLock) and lock.path == str(tmp_path / "store.db.lock")
        with pytest.raises(GatewayLocked, match=r"SQLite database .*store\.db is in use"):
            SQLiteStore({"path": str(tmp_path / "store.db")}).acquire_gateway_lock()
    finally:
        lock.release()
    assert not (tmp_path / "store.db").exists()  # the database itself is not touched


def test_a_memory_store_is_locked_per_store_object() -> None:
    one, other = MemoryStore(), MemoryStore()
    held = one.acquire_gateway_lock()
    with pytest.raises(GatewayLocked, match="this process"):
        one.acquire_gateway_lock()
    other.acquire_gateway_lock().release()  # another store: another lock
    held.release()
    one.acquire_gateway_lock().release()


def test_a_second_gateway_on_the_store_does_nothing_and_fails_at_once(quickstart: Path) -> None:
    first = Gateway(make_kernel(quickstart), mailboxes=False)
    first.startService()
    run(first.opened)
    second = Gateway(make_kernel(quickstart))
    second.startService()
    failures: list[Any] = []
    assert second.opened is not None
    second.opened.addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(GatewayLocked)
    assert not any(child.running for child in second)  # no mailbox, outbox or API started
    run(second.stopService())
    assert first.outbound.running  # the holder is untouched
    run(first.stopService())
    third = Gateway(make_kernel(quickstart), once=True)  # given back on stop
    third.startService()
    assert run(third.run_once())
    run(third.stopService())


class FakeLock:
    """A stand-in for a PostgreSQL session lock whose session can be cut."""

    def __init__(self) -> None:
        self.alive = True
        self.checks = 0
        self.released = 0

    def check(self) -> None:
        self.checks += 1
        if not self.alive:
            raise GatewayLockLost("PostgreSQL database x: lost the database session")

    def release(self) -> None:
        self.released += 1


def test_a_lost_lock_stops_the_gateway_and_says_so(
    quickstart: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = task.Clock()
    kernel = make_kernel(quickstart, clock=clock)
    lock = FakeLock()
    monkeypatch.setattr(kernel.store_driver, "acquire_gateway_lock", lambda: lock, raising=False)
    gateway = Gateway(kernel)
    lost: list[GatewayLockLost] = []
    gateway.lost.addCallback(lost.append)
    gateway.startService()
    run(gateway.opened)
    clock.advance(LOCK_CHECK_INTERVAL)
    assert (lock.checks, lost, gateway.running) == (1, [], True)
    lock.alive = False
    clock.advance(LOCK_CHECK_INTERVAL)
    assert len(lost) == 1 and "lost the database session" in str(lost[0])
    assert not gateway.running and not any(child.running for child in gateway)
    assert lock.released == 1
    assert "lost the database session" in caplog.text
    run(gateway.stopService())  # the host's own stop later: nothing twice
    assert lock.released == 1
    clock.advance(10 * LOCK_CHECK_INTERVAL)
    assert lock.checks == 2  # the watchdog stopped with the gateway


def test_a_store_without_the_lock_is_run_with_a_warning(
    quickstart: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = make_kernel(quickstart)

    class Unlockable:  # a third-party driver that offers no acquire_gateway_lock
        def __getattr__(self, name: str) -> Any:
            if name == "acquire_gateway_lock":
                raise AttributeError(name)
            return getattr(driver, name)

    driver = kernel.store_driver
    monkeypatch.setattr(kernel, "store_driver", Unlockable())
    gateway = Gateway(kernel, once=True)
    gateway.startService()
    assert run(gateway.run_once())
    run(gateway.stopService())
    assert "cannot be locked: make sure only one gateway process runs on it" in caplog.text


# ------------------------------------------------------------------- the HTTP API


def test_the_api_is_a_child_service_whose_port_closes_on_stop(quickstart: Path) -> None:
    port = free_port()
    quickstart.write_text(quickstart.read_text() + f"http: {{port: {port}}}\n")
    reactor = selectreactor.SelectReactor()
    kernel = make_kernel(quickstart, reactor=reactor)
    gateway = Gateway(kernel)
    api = gateway.getServiceNamed("http")
    assert isinstance(api, ApiService) and gateway.api is api
    assert api.port is None  # nothing listens before the gateway starts
    gateway.startService()
    run(gateway.opened)
    assert api.running and api.port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    stopped = gateway.stopService()
    for _ in range(20):
        reactor.iterate(0)
        if stopped.called:
            break
    run(stopped)
    assert api.port is None and not api.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_once_gateway_and_port_0_serve_no_api(quickstart: Path) -> None:
    assert Gateway(make_kernel(quickstart), once=True).api is None
    quickstart.write_text(quickstart.read_text() + "http: {port: 0}\n")
    gateway = Gateway(make_kernel(quickstart))
    assert gateway.api is None
    assert "http" not in [child.name for child in gateway]


def test_an_exposed_api_without_token_is_refused_when_the_gateway_is_made(
    quickstart: Path,
) -> None:
    from postroom.errors import ConfigError

    quickstart.write_text(quickstart.read_text() + "http: {bind: 0.0.0.0, port: 7999}\n")
    kernel = make_kernel(quickstart)
    with pytest.raises(ConfigError, match=r"http\.token"):
        Gateway(kernel)
    assert isinstance(kernel.reactor, MemoryReactorClock) and kernel.reactor.tcpServers == []


# ---------------------------------------------------------------- the default runner


def test_without_a_runner_store_calls_run_in_the_kernels_threads(quickstart: Path) -> None:
    reactor = selectreactor.SelectReactor()
    kernel = Kernel(quickstart, reactor=reactor, clock=task.Clock(), enabled_plugins=[])
    assert isinstance(kernel.runner, ThreadPoolRunner)
    threads: list[int] = []
    driver_get_cursor = kernel.store_driver.get_cursor

    def get_cursor(mailbox: str) -> Any:
        threads.append(threading.get_ident())
        return driver_get_cursor(mailbox)

    kernel.store_driver.get_cursor = get_cursor  # type: ignore[method-assign]
    outcome: list[Any] = []

    async def work() -> None:
        await kernel.open()
        try:
            outcome.append(await kernel.store.get_cursor("support"))
        finally:
            await kernel.close()

    def go() -> None:
        d = task.deferLater(reactor, 0, lambda: None)
        d.addCallback(lambda _: ensureDeferred(work()))
        d.addErrback(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=False)
    assert outcome == [None]
    assert threads and threading.get_ident() not in threads
    assert not kernel.runner.pool.started  # stopped with the reactor


def test_an_inline_runner_is_still_there_for_tests_that_ask(quickstart: Path) -> None:
    kernel = make_kernel(quickstart)
    assert isinstance(kernel.runner, InlineRunner)

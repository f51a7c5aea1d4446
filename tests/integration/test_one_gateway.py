"""One gateway process owns a store (SQLite and PostgreSQL), with real processes.

While one ``postroom run`` holds a store, a second exits 3 at once naming the
holder; after the holder is SIGKILLed a new one starts without any clean-up.
``postroom send`` beside the running gateway only queues: the gateway sends
the message once, and the gateway's in-flight send is left alone (before, the
command ran an outbox worker of its own that re-queued and sent it again).

No mail servers: the quickstart's maildir and ``file`` sender, whose folder
holds one ``.eml`` per message sent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from postroom.model import Interaction, OutboundRequest
from postroom.store.lock import GatewayLocked, GatewayLockLost
from postroom_postgresql.lock import lock_key
from tests import pg
from tests.integration.sites import POSTROOM, explain, free_port, http
from tests.kernel.test_cli import postroom

#: how long a gateway may take to answer /health, or a sent message to appear
PATIENCE = 60.0
#: how long a gateway may take to stop on SIGTERM. A clean stop closes the
#: SQLite store, whose last checkpoint syncs the disk; on the CI machines one
#: such sync has been seen to take over a minute (the stopping thread inside
#: fdatasync or close, the reactor waiting for it, nothing else running), so a
#: stop is given minutes; one that takes longer is reported with every thread's
#: kernel and Python stack
STOP_PATIENCE = 300.0


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    try:
        admin = pg.find_or_start_postgres()
    except pg.PostgresUnavailable as exc:
        pytest.fail(f"these tests need PostgreSQL: {exc}", pytrace=False)
    dsn, name = pg.create_database(admin)
    yield dsn
    pg.drop_database(admin, name)


def kernel_waits(pid: int) -> str:
    """Each thread's state, wait channel, system call and kernel stack (root only),
    and the machine's I/O pressure: tells a thread stuck on a disk from one on a lock."""
    lines = []
    for name in ("/proc/pressure/io", "/proc/loadavg"):
        with contextlib.suppress(OSError):
            lines.append(f"{name}: {Path(name).read_text().strip()}")
    tasks = Path(f"/proc/{pid}/task")
    for task in sorted(tasks.iterdir()) if tasks.exists() else []:
        facts = []
        for name in ("comm", "wchan", "syscall", "stack"):
            try:
                facts.append(f"{name}={(task / name).read_text().strip()}")
            except OSError as exc:
                facts.append(f"{name}=<{exc.strerror}>")
        lines.append(f"thread {task.name}: " + " | ".join(facts))
    return "\n".join(lines)


class Site:
    """The quickstart on SQLite or PostgreSQL, with the HTTP API on a free port."""

    def __init__(self, quickstart: Path, backend: str, request: pytest.FixtureRequest) -> None:
        self.config = quickstart
        self.dir = quickstart.parent
        self.outbox = self.dir / "outbox"
        self.port = free_port()
        self.backend = backend
        text = quickstart.read_text()
        if backend == "postgresql":
            dsn = request.getfixturevalue("pg_dsn")
            self.store_options: dict[str, Any] = {
                "dsn": dsn, "schema": f"t_{uuid.uuid4().hex[:16]}"
            }
            text = text.replace(
                "store: {driver: sqlite, path: postroom.db}",
                f"store: {{driver: postgresql, dsn: '{dsn}', "
                f"schema: {self.store_options['schema']}}}",
            )
        else:
            self.store_options = {"path": str(self.dir / "postroom.db")}
        quickstart.write_text(text + f"http: {{port: {self.port}}}\n")
        self.processes: list[subprocess.Popen[str]] = []

    def driver(self) -> Any:
        """The store driver, opened in this process (as a second process would)."""
        if self.backend == "postgresql":
            from postroom_postgresql.store import PostgreSQLStore

            store: Any = PostgreSQLStore(self.store_options)
        else:
            from postroom.store.sqlite import SQLiteStore

            store = SQLiteStore(self.store_options)
        store.open()
        return store

    def start(self) -> subprocess.Popen[str]:
        """``postroom run``, once it answers on its API (lock held, store open)."""
        proc = subprocess.Popen(
            [POSTROOM, "run", "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(proc)
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            try:
                http(self.port, "/health")
                return proc
            except OSError:  # not listening yet: wait on the process (it must not exit)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
                if proc.poll() is not None:
                    break
        proc.kill()
        _out, err = proc.communicate()
        raise AssertionError(f"the gateway never answered (exit {proc.returncode}):\n{err}")

    def stop(self, proc: subprocess.Popen[str]) -> str:
        """SIGTERM; it must stop cleanly. Returns its standard error."""
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=STOP_PATIENCE)
        except subprocess.TimeoutExpired:
            # what is it waiting for? where each thread is in the kernel, its
            # Python stacks (SIGUSR1), then kill it
            waits = kernel_waits(proc.pid)
            proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            proc.kill()
            _out, err = proc.communicate()
            raise AssertionError(
                f"the gateway did not stop on SIGTERM:\n{waits}\n{err}"
            ) from None
        assert proc.returncode == 0, err
        return err

    def sent(self) -> list[bytes]:
        return [p.read_bytes() for p in self.outbox.glob("*.eml")] if self.outbox.exists() else []

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def site(quickstart: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    made = Site(quickstart, request.param, request)
    yield made
    made.close()


def holder_name(site: Site, pid: int) -> str:
    """How the refusal names the running gateway *pid*."""
    return f"postroom gateway pid {pid}" if site.backend == "postgresql" else f"pid {pid} on "


def wait_until_session_ended(site: Site, pid: int) -> None:
    """PostgreSQL: the server ends a killed client's session when it sees the
    socket close, and the lock goes with it (no clean-up by hand). Wait for that
    by asking for the same lock and blocking until the server grants it (no
    polling), for at most PATIENCE; then give it back at once."""
    if site.backend != "postgresql":
        return
    key = lock_key(site.store_options.get("schema"))
    with psycopg.connect(site.store_options["dsn"], autocommit=True) as conn:
        conn.execute(f"SET lock_timeout = '{int(PATIENCE * 1000)}ms'")
        try:
            conn.execute("SELECT pg_advisory_lock(%s::bigint)", (key,))
        except psycopg.errors.LockNotAvailable:
            raise AssertionError(f"the lock of gateway pid {pid} outlived its process") from None
        conn.execute("SELECT pg_advisory_unlock(%s::bigint)", (key,))


def test_a_second_gateway_exits_at_once_and_a_killed_ones_lock_is_gone(site: Site) -> None:
    first = site.start()
    second = subprocess.run(
        [POSTROOM, "run", "-c", str(site.config)], capture_output=True, text=True, timeout=PATIENCE
    )
    assert second.returncode == 3, explain(second)
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "is in use by another gateway" in line, line
    assert holder_name(site, first.pid) in line, line
    assert "Traceback" not in second.stderr
    once = postroom("run", "-c", str(site.config), "--once")
    assert once.returncode == 3 and "is in use by another gateway" in once.stderr

    now = postroom("send", "-c", str(site.config), "--to", "a@example.com", "--now")
    assert now.returncode == 3, explain(now)
    assert "--now:" in now.stderr and "nothing was queued" in now.stderr
    listed = postroom("interactions", "list", "-c", str(site.config), "--json")
    assert listed.returncode == 0 and '"Outbound"' not in listed.stdout

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=PATIENCE)
    wait_until_session_ended(site, first.pid)
    third = site.start()  # no lock file to remove, no session to end by hand
    site.stop(third)


def test_send_beside_a_running_gateway_is_sent_once(site: Site) -> None:
    # An entry the running gateway will be sending: queued now, due tomorrow
    # (so the gateway leaves it), made "sending" once the gateway runs.
    store = site.driver()
    in_flight = Interaction(
        tenant_id=101, type="Outbound", subtype="OutboundNew", status="Queued",
        message_id="<in-flight@postroom.test>", subject="in flight",
        from_addr="postroom@example.com", to=["b@example.com"],
    )  # fmt: skip
    store.queue_outbound(in_flight, OutboundRequest(to=["b@example.com"], subject="in flight"))
    store.mark_outbound(in_flight.id, "queued", next_attempt_at=datetime.now(UTC) + timedelta(1))
    gateway = site.start()
    try:
        store.mark_outbound(in_flight.id, "sending")  # as the gateway does when it claims it

        queued = postroom(
            "send", "-c", str(site.config), "--to", "a@example.com", "--subject", "once"
        )
        assert queued.returncode == 0, explain(queued)
        interaction_id, message_id, status = queued.stdout.split()
        assert status == "Queued"
        eml = site.dir / "beside.eml"
        eml.write_bytes(
            b"From: c@example.com\r\nTo: support@example.com\r\nSubject: beside\r\n"
            b"Message-ID: <beside@postroom.test>\r\n\r\nHello\r\n"
        )
        ingested = postroom("ingest", "-c", str(site.config), "--json", str(eml))
        assert ingested.returncode == 0, explain(ingested)

        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline and not site.sent():
            with contextlib.suppress(subprocess.TimeoutExpired):
                gateway.wait(timeout=0.1)
        assert gateway.poll() is None
    finally:
        err = site.stop(gateway)
    sent = site.sent()
    assert len(sent) == 1 and message_id.encode() in sent[0], err
    entry = store.get_outbox(interaction_id)
    assert entry is not None and entry.state == "sent"
    untouched = store.get_outbox(in_flight.id)
    assert untouched is not None and untouched.state == "sending"  # never re-queued
    store.close()


def test_postroom_run_records_its_pid_in_the_sqlite_lock_file(quickstart: Path) -> None:
    site = Site(quickstart, "sqlite", None)  # type: ignore[arg-type]
    try:
        proc = site.start()
        note = (site.dir / "postroom.db.lock").read_text()
        assert note.startswith(f"pid {proc.pid} on ") and "postroom run" in note, note
        site.stop(proc)
        assert (site.dir / "postroom.db.lock").read_text() == ""
    finally:
        site.close()
    assert os.path.exists(site.dir / "postroom.db.lock")


@pytest.mark.postgresql
def test_the_postgresql_lock_is_exclusive_and_notices_a_lost_session(pg_dsn: str) -> None:
    from postroom_postgresql.lock import SessionLock

    schema = f"t_{uuid.uuid4().hex[:16]}"
    held = SessionLock.acquire(pg_dsn, {}, schema, "PostgreSQL database x")
    with pytest.raises(GatewayLocked) as refused:
        SessionLock.acquire(pg_dsn, {}, schema, "PostgreSQL database x")
    assert refused.value.holder is not None
    assert refused.value.holder.startswith(f"postroom gateway pid {os.getpid()}")
    SessionLock.acquire(pg_dsn, {}, f"{schema}_other", "other").release()  # another store
    held.check()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"postroom gateway pid {os.getpid()}",),
        ).fetchall()
    assert ended == [(True,)]
    with pytest.raises(GatewayLockLost, match="lost the database session holding the gateway"):
        held.check()
    again = SessionLock.acquire(pg_dsn, {}, schema, "PostgreSQL database x")  # the server freed it
    again.release()
    held.release()


@pytest.mark.postgresql
def test_a_gateway_whose_lock_session_is_cut_stops_with_status_3(
    quickstart: Path, request: pytest.FixtureRequest
) -> None:
    site = Site(quickstart, "postgresql", request)
    try:
        proc = site.start()
        with psycopg.connect(site.store_options["dsn"], autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (f"postroom gateway pid {proc.pid}",),
            )
        _out, err = proc.communicate(timeout=PATIENCE)  # the watchdog's next check
        assert proc.returncode == 3, err
        assert "lost the database session holding the gateway lock" in err
        assert "Traceback" not in err
    finally:
        site.close()

"""A live gateway while a hostile message is analysed: nothing else waits for it.

The gateway runs as its own process (:mod:`tests.hostile.live_gateway`) with the
real reactor, worker processes and HTTP API; its hostile message is one whose
analysis never ends (:mod:`tests.hostile.slow_plugin`), which tells the test
through a FIFO the moment its worker starts spinning.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT
from tests.hostile.slow_plugin import PID_PATH, TRIGGER
from tests.integration.servers import wait_for
from tests.integration.sites import free_port, http

WAIT = 60.0  # the longest any step may take before the test fails (never a sleep)


class LiveSite:
    def __init__(self, directory: Path, cpu_limit: str) -> None:
        self.dir = directory
        self.maildir = directory / "maildir"
        for sub in ("new", "cur", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        self.fifo = directory / "spinning"
        self.port = free_port()
        self.db = directory / "store.db"
        self.path = directory / "site.yaml"
        self.path.write_text(yaml.safe_dump({
            "store": {"driver": "sqlite", "path": str(self.db)},
            "gateway": {"parse-workers": 2, "analysis-cpu-limit": cpu_limit},
            "http": {"port": self.port},
            "pop-client": [{"name": "support", "type": "maildir",
                            "folder-path": str(self.maildir), "poll-interval": 1}],
        }))
        self.count = 0

    def deliver(self, subject: str) -> None:
        self.count += 1
        name = f"{self.count}.M{self.count}P1.live"
        body = (f"From: customer{self.count}@example.com\r\nTo: support@example.com\r\n"
                f"Subject: {subject}\r\nMessage-ID: <{self.count}@live.example>\r\n\r\nHello\r\n")
        (self.maildir / "tmp" / name).write_text(body)
        os.rename(self.maildir / "tmp" / name, self.maildir / "new" / name)

    def health(self) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        _status, body = http(self.port, "/health")
        return time.perf_counter() - started, body["mailboxes"]["support"]

    def best_health_latency(self) -> float:
        return min(self.health()[0] for _ in range(5))

    def spinning_worker(self) -> int:
        """Wait until a worker is spinning on a hostile message; its process id."""
        fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            readable, _, _ = select.select([fd], [], [], WAIT)
            assert readable, "no worker started analysing the hostile message"
            os.set_blocking(fd, True)  # the writer is there: wait for its digits and EOF
            data = b""
            while True:  # the writer writes a few digits and closes
                chunk = os.read(fd, 64)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        return int(data)

    def subjects(self, table: str = "interactions") -> list[str]:
        import sqlite3

        try:
            with contextlib.closing(sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True)) as c:
                if table == "interactions":
                    return [r[0] for r in c.execute("SELECT subject FROM interactions")]
                return [r[0] for r in c.execute("SELECT reason FROM quarantine")]
        except sqlite3.OperationalError:
            return []


@contextlib.contextmanager
def running(site: LiveSite) -> Iterator[subprocess.Popen[bytes]]:
    os.mkfifo(site.fifo)
    log = (site.dir / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hostile.live_gateway", str(site.path)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, PID_PATH: str(site.fifo)},
    )

    def ready() -> bool:
        assert proc.poll() is None, (site.dir / "gateway.log").read_text()[-3000:]
        with contextlib.suppress(OSError):
            return bool(site.health()[1]["last_success"])
        return False

    try:
        wait_for(ready, WAIT, "the gateway to start")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_health_answers_and_mail_flows_while_a_hostile_message_is_analysed(
    tmp_path: Path,
) -> None:
    site = LiveSite(tmp_path, cpu_limit="00:00:02")
    with running(site):
        baseline = site.best_health_latency()
        site.deliver(f"please {TRIGGER}")
        spinner = site.spinning_worker()

        during = site.best_health_latency()
        _latency, health = site.health()
        assert health["analysing"] >= 1
        assert during < 20 * max(baseline, 0.001), (baseline, during)

        site.deliver("an ordinary question")
        wait_for(lambda: "an ordinary question" in site.subjects(), WAIT, "the ordinary mail")

        wait_for(lambda: site.subjects("quarantine"), WAIT, "the hostile message's quarantine")
        [reason] = site.subjects("quarantine")
        assert "more than 2 s of CPU time" in reason
        assert not alive(spinner)  # its worker was killed
        assert TRIGGER not in " ".join(site.subjects())
        _latency, health = site.health()
        assert health["quarantined"] == 1 and health["connected"]

        site.deliver("one more after it")  # the replaced worker takes new mail
        wait_for(lambda: "one more after it" in site.subjects(), WAIT, "mail after the hostile one")


def test_sigterm_stops_the_gateway_while_a_worker_is_busy(tmp_path: Path) -> None:
    site = LiveSite(tmp_path, cpu_limit="00:10:00")
    with running(site) as proc:
        site.deliver(f"please {TRIGGER}")
        spinner = site.spinning_worker()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=WAIT)
        log = (site.dir / "gateway.log").read_text()
        assert code == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        wait_for(lambda: not alive(spinner), WAIT, "the busy worker to be gone")

"""Site files for the gateway-level integration tests, and ways to look at a run.

A :class:`Site` is a site configuration in a test's tmp_path whose mailboxes
and smtp-client point at the real test servers (:mod:`tests.integration.servers`).
Tests run the real ``postroom`` command on it (a subprocess: the real reactor,
TLS and store) and read the results back: the SQLite store read-only with
:mod:`sqlite3` (safe while a gateway writes it, or after one was killed), or
through the ``postroom`` command itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from tests.integration.servers import MailServers

POSTROOM = str(Path(sys.executable).with_name("postroom"))
RUN_TIMEOUT = 300.0
#: the environment variable that marks the processes of one gateway run
MARK = "POSTROOM_TEST_MARK"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the HTTP API, whose option refuses 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def marked_processes(mark: str) -> dict[int, str]:
    """Live processes with ``POSTROOM_TEST_MARK=<mark>`` in their environment
    (see :meth:`Site.start`): pid -> command line. Zombies are left out."""
    wanted = f"{MARK}={mark}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if state != "Z":
            found[int(entry.name)] = command.strip()[:160]
    return found


def kill_marked(mark: str) -> None:
    """SIGKILL what is left of the processes a test started with *mark*, one by one."""
    for pid in marked_processes(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def explain(done: subprocess.CompletedProcess[str]) -> str:
    """A failed run, for an assertion message."""
    return f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-6000:]}"


def http(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """GET (or POST *body* as JSON) on the gateway's API: status and decoded JSON."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:  # 503 from /health still has a body
        return exc.code, json.loads(exc.read() or b"null")


class Site:
    """A site file (``site.yaml``) and its SQLite store (``store.db``) in *directory*."""

    def __init__(self, directory: Path, servers: MailServers) -> None:
        self.dir = directory
        self.servers = servers
        self.path = directory / "site.yaml"
        self.db = directory / "store.db"
        self.mailboxes: list[dict[str, Any]] = []
        self.sections: dict[str, Any] = {}
        #: the HTTP API's port while :func:`running_gateway` runs it
        self.api_port = 0

    # --- the file ------------------------------------------------------------------

    def mailbox(
        self,
        name: str,
        user: str,
        *,
        kind: str = "imap",
        port: str | int = "imap",
        security: str = "starttls",
        **options: Any,
    ) -> dict[str, Any]:
        """Add a mailbox (``type`` *kind*) of *user* on the test servers; *port* is a port name
        of :attr:`MailServers.ports` or a number (e.g. a proxy's);
        *options* are more keys, ``_`` standing for ``-``."""
        entry: dict[str, Any] = {
            "name": name,
            "type": kind,
            "server": self.servers.host,
            "port": port if isinstance(port, int) else self.servers.ports[port],
            "pop-connection-security": security,
            "ca-file": self.servers.ca_file,
            "mailbox": user,
            "password": self.servers.password(user),
            "connect-timeout": "00:00:10",
            "protocol-timeout": "00:00:30",
        }
        entry.update({k.replace("_", "-"): v for k, v in options.items()})
        self.mailboxes.append(entry)
        return entry

    def smtp_client(self, user: str) -> dict[str, Any]:
        """Send through Postfix's submission port as *user* (STARTTLS, AUTH)."""
        section = {
            "server-type": "smtp",
            "server": self.servers.host,
            "port": self.servers.ports["submission"],
            "smtp-connection-security": "starttls",
            "ca-file": self.servers.ca_file,
            "enable-authentication": True,
            "user": user,
            "password": self.servers.password(user),
            "connect-timeout": "00:00:10",
            "protocol-timeout": "00:00:30",
        }
        self.sections["smtp-client"] = section
        return section

    def write(self) -> Path:
        document: dict[str, Any] = {"store": {"driver": "sqlite", "path": str(self.db)}}
        if self.mailboxes:
            document["pop-client"] = self.mailboxes
        document.update(self.sections)
        self.path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return self.path

    # --- running postroom ----------------------------------------------------------

    def postroom(
        self, *args: str, timeout: float = RUN_TIMEOUT, mark: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``postroom ARGS`` (the site file is not added: pass ``-c``, see :meth:`cli`);
        *mark* as for :meth:`start`."""
        return subprocess.run(
            [POSTROOM, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, MARK: mark} if mark is not None else None,
        )

    def cli(self, *command: str) -> subprocess.CompletedProcess[str]:
        """``postroom COMMAND... -c site.yaml`` (e.g. ``cli("quarantine", "list")``)."""
        return self.postroom(*command, "-c", str(self.path))

    def run_once(
        self, *global_args: str, mark: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Write the file, then ``postroom [GLOBAL_ARGS] run -c site.yaml --once``."""
        self.write()
        return self.postroom(*global_args, "run", "-c", str(self.path), "--once", mark=mark)

    def start(
        self,
        log: IO[bytes],
        *args: str,
        mark: str | None = None,
        global_args: tuple[str, ...] = (),
    ) -> subprocess.Popen[bytes]:
        """Write the file, then start ``postroom [GLOBAL_ARGS] run -c site.yaml ARGS``
        (output to *log*).

        *mark*: put in the environment of the gateway, so that every process it
        starts can be found with :func:`marked_processes`, even once orphaned.
        """
        self.write()
        env = {**os.environ, MARK: mark} if mark is not None else None
        return subprocess.Popen(
            [POSTROOM, *global_args, "run", "-c", str(self.path), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def quarantine(self) -> list[str]:
        """The lines of ``postroom quarantine list`` (empty when it says so)."""
        done = self.cli("quarantine", "list")
        assert done.returncode == 0, explain(done)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        return [] if lines == ["quarantine is empty"] else lines

    # --- reading the store -----------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of *sql* on the store, opened read-only (a gateway may be writing)."""
        uri = f"{self.db.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
            return conn.execute(sql, params).fetchall()

    def count(self, mailbox: str | None = None) -> int:
        """Interactions stored (of *mailbox*); 0 while the store is not made yet."""
        try:
            if mailbox is None:
                [(n,)] = self.query("SELECT COUNT(*) FROM interactions")
            else:
                [(n,)] = self.query("SELECT COUNT(*) FROM interactions WHERE mailbox = ?", mailbox)
        except sqlite3.OperationalError:  # no file yet, or no tables yet
            return 0
        return int(n)

    def rows(self, where: str = "1 = 1", *params: Any) -> list[dict[str, Any]]:
        """Interactions as dicts of their columns, in insertion order."""
        uri = f"{self.db.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
            conn.row_factory = sqlite3.Row
            found = conn.execute(f"SELECT * FROM interactions WHERE {where} ORDER BY seq", params)
            return [dict(row) for row in found]

    def raw(self, interaction_id: str) -> bytes:
        """The raw bytes the store keeps for an interaction (through the store driver)."""
        from postroom.store.sqlite import SQLiteStore

        store = SQLiteStore({"path": self.db})
        store.open()
        try:
            sink = io.BytesIO()
            store.read_raw(interaction_id, sink)
            return sink.getvalue()
        finally:
            store.close()


@contextlib.contextmanager
def running_gateway(site: Site, mailbox: str, *global_args: str) -> Iterator[Callable[[], None]]:
    """``postroom [GLOBAL_ARGS] run`` on *site* with its HTTP API on a free port
    (``site.api_port``); its output goes to ``site.dir / "gateway.log"``.

    Yields once *mailbox* is connected and its first pass is done; what it
    yields checks that the gateway is still running (and paces a poll: call
    it in ``wait_for`` conditions). On leaving, SIGTERM must stop the gateway
    cleanly: exit 0, no traceback in its log.
    """
    site.api_port = free_port()
    site.sections["http"] = {"port": site.api_port}
    log_path = site.dir / "gateway.log"

    def running() -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)  # paces the poll; an early exit fails here
        assert proc.returncode is None, log_path.read_text(errors="replace")[-5000:]

    def ready() -> bool:
        running()
        try:
            _status, health = http(site.api_port, "/health")
        except OSError:
            return False  # not listening yet
        box = health["mailboxes"][mailbox]
        return bool(box["connected"] and box["last_success"])

    with log_path.open("wb") as log:
        proc = site.start(log, global_args=global_args)
    try:
        site.servers.wait_for(ready, 30, f"mailbox {mailbox} to be connected with a pass done")
        yield running
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            # minutes: the store's last disk sync has been seen to take over a
            # minute on CI machines (tests/integration/test_one_gateway.py)
            code = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = log_path.read_text(errors="replace")
    assert code == 0, text[-5000:]
    assert "Traceback" not in text, text[-5000:]

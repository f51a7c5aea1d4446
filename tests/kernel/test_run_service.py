"""The gateway as a process: ``postroom run`` with the site's ``logging:`` section,
and ``twist postroom`` (the Twisted application plugin), each started on the
quickstart site (maildir) and stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.integration.sites import POSTROOM, free_port, http
from tests.integration.test_one_gateway import PATIENCE, STOP_PATIENCE

TWIST = str(Path(sys.executable).with_name("twist"))
TOKEN = "a-token-of-twenty-chars"


def with_sections(quickstart: Path, text: str) -> int:
    """Add *text* (YAML) and an API on a free port to the site; the port."""
    port = free_port()
    quickstart.write_text(quickstart.read_text() + text + f"http: {{port: {port}}}\n")
    return port


@contextlib.contextmanager
def started(
    command: list[str], port: int, log: IO[bytes], status: int = 0
) -> Iterator[subprocess.Popen[bytes]]:
    """*command* running until its API says the mailbox had its first pass;
    then the test's body; then SIGTERM, which must stop it with *status*."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            assert proc.poll() is None, f"exited {proc.returncode}"
            try:
                code, body = http(port, "/health")
                if code == 200 and body["mailboxes"]["support"]["last_success"]:
                    break
            except OSError:  # not listening yet
                pass
            assert time.monotonic() < deadline, "the gateway never had its first pass"
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_PATIENCE) == status
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_writes_json_lines_from_the_start_up_lines_on(quickstart: Path) -> None:
    """The issue's "done when": ``logging: {level: info, format: json}``."""
    port = with_sections(quickstart, "logging: {level: info, format: json}\n")
    log_path = quickstart.parent / "gateway.log"
    with log_path.open("wb") as log, started(
        [POSTROOM, "run", "-c", str(quickstart)], port, log
    ):
        pass
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert all(list(line)[:4] == ["time", "level", "logger", "message"] for line in lines)
    messages = [line["message"] for line in lines]
    start = messages[:4]  # the order they are made in: store, plugins, mailbox, API
    assert start[0] == f"store: SQLite database {quickstart.parent / 'postroom.db'}"
    assert start[1].startswith("plugins loaded: core-options, core-parser, ")
    mailbox = next(line for line in lines if line["message"].startswith("mailbox support: conn"))
    assert mailbox["message"] == (
        f"mailbox support: connected (maildir, folder {quickstart.parent / 'maildir'})"
    )
    assert mailbox["mailbox"] == "support" and mailbox["level"] == "info"
    assert f"HTTP API listening on http://127.0.0.1:{port} (no token: loopback only)" in start
    committed = [line for line in lines if line["message"].startswith("committed interaction")]
    assert len(committed) == 4
    assert all(line["interaction_id"] and line["source_key"] for line in committed)
    # Twisted's own lines come through the same handler: below WARNING only at debug
    assert not [line for line in lines if line["logger"].startswith("twisted")]


@pytest.mark.parametrize("level", [["--log-level", "info"], ["-v"]])
def test_the_command_line_overrides_the_site_level_and_format(
    quickstart: Path, level: list[str]
) -> None:
    quickstart.write_text(quickstart.read_text() + "logging: {level: error, format: json}\n")
    done = subprocess.run(
        [POSTROOM, *level, "--log-format", "text", "run", "-c", str(quickstart), "--once"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(" INFO postroom.services.gateway: store: SQLite" in line for line in lines)
    assert not [line for line in lines if line.startswith("{")]


def test_twist_runs_the_gateway_and_stops_it_on_sigterm(quickstart: Path) -> None:
    port = with_sections(quickstart, "")
    log_path = quickstart.parent / "twist.log"
    # twist ends by the signal that stopped it, once its reactor stopped (as
    # systemd expects: SIGTERM is a clean exit for it)
    with log_path.open("wb") as log, started(
        [TWIST, "--log-format", "text", "postroom", "-c", str(quickstart)], port, log,
        status=-signal.SIGTERM,
    ):
        assert http(port, "/health")[1]["mailboxes"]["support"]["ingested"] == 4
    text = log_path.read_text()
    assert f"[postroom.web#info] HTTP API listening on http://127.0.0.1:{port}" in text
    assert "[postroom.services.mailbox#info] mailbox support: connected (maildir" in text
    assert "Traceback" not in text and "Unhandled" not in text
    assert text.rstrip().endswith("Main loop terminated.")
    # stopped cleanly: the store's lock is free, a second run goes through
    again = subprocess.run(
        [POSTROOM, "run", "-c", str(quickstart), "--once"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert again.returncode in (0, 1), again.stderr


def test_twistd_runs_the_gateway_in_the_foreground(quickstart: Path) -> None:
    port = with_sections(quickstart, "")
    log_path = quickstart.parent / "twistd.log"
    twistd = str(Path(sys.executable).with_name("twistd"))
    with log_path.open("wb") as log, started(
        [twistd, "-n", "--pidfile=", "postroom", "-c", str(quickstart)], port, log,
        status=-signal.SIGTERM,  # as twist
    ):
        pass
    text = log_path.read_text()
    assert f"[postroom.web#info] HTTP API listening on http://127.0.0.1:{port}" in text
    assert "Traceback" not in text and text.rstrip().endswith("Server Shut Down.")


def test_twist_with_a_broken_site_says_why_and_exits_2(quickstart: Path) -> None:
    quickstart.write_text(quickstart.read_text() + "logging: {level: loud}\n")
    done = subprocess.run(
        [TWIST, "postroom", "-c", str(quickstart)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "logging.level" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [[], ["-c", "site.yaml", "--log-level", "loud"]])
def test_twist_usage_errors(args: list[str]) -> None:
    done = subprocess.run(
        [TWIST, "postroom", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr + done.stdout


def test_twist_on_a_store_another_gateway_holds_exits_3(quickstart: Path) -> None:
    port = with_sections(quickstart, "")
    with (quickstart.parent / "gateway.log").open("wb") as log, started(
        [POSTROOM, "run", "-c", str(quickstart)], port, log
    ):
        done = subprocess.run(
            [TWIST, "--log-format", "text", "postroom", "-c", str(quickstart)],
            capture_output=True, text=True, timeout=STOP_PATIENCE, check=False,
        )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "gateway failed to start" in done.stdout and "Traceback" not in done.stdout


def test_the_systemd_unit_runs_what_these_tests_run_and_waits_long_enough() -> None:
    """contrib/systemd/postroom.service: the commands tested above, and a stop
    timeout longer than the worker grace (at most 60 s) and a send in flight
    (the sender's protocol-timeout, 2 minutes by default) together."""
    from tests.conftest import ROOT

    unit = (ROOT / "contrib" / "systemd" / "postroom.service").read_text()
    settings = [line.split("=", 1) for line in unit.splitlines() if "=" in line and
                not line.startswith("#")]  # fmt: skip
    values: dict[str, list[str]] = {}
    for key, value in settings:
        values.setdefault(key, []).append(value)
    [start] = values["ExecStart"]
    assert start.endswith("/twist --log-format=text postroom -c /etc/postroom/site.yaml")
    assert "# ExecStart=/opt/postroom/bin/postroom run -c /etc/postroom/site.yaml" in unit
    assert values["KillSignal"] == ["SIGTERM"] and values["KillMode"] == ["mixed"]
    assert int(values["TimeoutStopSec"][0]) > 60 + 120
    assert values["Restart"] == ["on-failure"] and values["RestartPreventExitStatus"] == ["2"]
    assert values["ProtectSystem"] == ["strict"] and values["DynamicUser"] == ["yes"]

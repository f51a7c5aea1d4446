"""The pop3 driver against real Dovecot, driven as an operator does: ``postroom run --once``.

Each test writes a site configuration in its tmp_path, runs the gateway as a
subprocess, then reads the store back through ``postroom interactions list
--json`` (and the raw bytes through the store driver). Every test starts by
clearing the test users it uses, as the servers are shared by the whole run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from tests.integration.servers import MailServers, make_message

POSTROOM = str(Path(sys.executable).with_name("postroom"))
RUN_TIMEOUT = 600.0


@attrs.frozen
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_kb: int


#: Runs postroom as its grandchild and reports that process's peak RSS. A child's
#: ru_maxrss also counts the memory it had between fork and exec, i.e. a copy
#: of this (large) test process; forking from a small launcher avoids that.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_pid, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def postroom(*args: str, timeout: float = RUN_TIMEOUT) -> Run:
    """Run the postroom command; with its exit status, time and peak memory."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, rss.name, POSTROOM, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"postroom {' '.join(args)} ran over {timeout:g}s") from None
        seconds = time.monotonic() - started
        peak = rss.read().strip()
    return Run(
        returncode=proc.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        seconds=seconds,
        max_rss_kb=int(peak or 0),
    )


def mailbox(
    ms: MailServers, name: str, user: str, security: str = "starttls", **options: Any
) -> dict[str, Any]:
    port = {"starttls": ms.ports["pop3"], "ssl": ms.ports["pop3s"], "none": ms.ports["pop3_notls"]}
    entry: dict[str, Any] = {
        "name": name,
        "type": "pop3",
        "server": ms.host,
        "port": port[security],
        "pop-connection-security": security,
        "ca-file": ms.ca_file,
        "mailbox": user,
        "password": ms.password(user),
        "connect-timeout": "00:00:20",
        "protocol-timeout": "00:01:00",
    }
    entry.update(options)
    return entry


def site(tmp_path: Path, *mailboxes: dict[str, Any], **sections: Any) -> Path:
    config = {
        "store": {"driver": "sqlite", "path": str(tmp_path / "store.db")},
        "pop-client": list(mailboxes),
        **sections,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_once(config: Path, *global_args: str) -> Run:
    return postroom(*global_args, "run", "-c", str(config), "--once")


def interactions(config: Path) -> list[dict[str, Any]]:
    result = postroom("interactions", "list", "-c", str(config), "--json", "--limit", "100000")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def subjects(rows: list[dict[str, Any]], box: str | None = None) -> list[str]:
    return sorted(r["subject"] for r in rows if box is None or r["mailbox"] == box)


def messages(ms: MailServers, prefix: str, count: int, user: str) -> list[bytes]:
    return [
        make_message(subject=f"{prefix} {n:04d}", to=ms.address(user), body=f"Body {n}.\r\n")
        for n in range(count)
    ]


# ------------------------------------------------------------------ the basics


def test_delete_mode_over_stls_empties_the_mailbox(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    ms.clear("agent1")
    ms.deliver_many("agent1", messages(ms, "stls", 3, "agent1"))
    config = site(tmp_path, mailbox(ms, "stls-box", "agent1", "starttls"))
    result = run_once(config)
    assert result.returncode == 0, result.stderr
    rows = interactions(config)
    assert subjects(rows) == ["stls 0000", "stls 0001", "stls 0002"]
    assert {r["mailbox"] for r in rows} == {"stls-box"}
    assert {r["type"] for r in rows} == {"Inbound"}
    assert ms.message_count("agent1") == 0
    # nothing new: a second run stores nothing and fails nothing
    again = run_once(config)
    assert again.returncode == 0, again.stderr
    assert len(interactions(config)) == 3


def test_pop3s_and_clear_text_in_one_run(mail_servers: MailServers, tmp_path: Path) -> None:
    ms = mail_servers
    ms.clear("agent2", "agent3")
    ms.deliver_many("agent2", messages(ms, "pop3s", 2, "agent2"))
    ms.deliver_many("agent3", messages(ms, "clear", 2, "agent3"))
    config = site(
        tmp_path,
        mailbox(ms, "tls-box", "agent2", "ssl"),
        mailbox(ms, "plain-box", "agent3", "none"),
    )
    result = run_once(config)
    assert result.returncode == 0, result.stderr
    rows = interactions(config)
    assert subjects(rows, "tls-box") == ["pop3s 0000", "pop3s 0001"]
    assert subjects(rows, "plain-box") == ["clear 0000", "clear 0001"]
    assert ms.message_count("agent2") == 0
    assert ms.message_count("agent3") == 0


def test_leave_mode_keeps_the_mail_and_never_stores_it_twice(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    ms.clear("agent4")
    ms.deliver_many("agent4", messages(ms, "leave", 2, "agent4"))
    config = site(
        tmp_path, mailbox(ms, "leave-box", "agent4", "ssl", **{"after-processing": "leave"})
    )
    first = run_once(config)
    assert first.returncode == 0, first.stderr
    assert subjects(interactions(config)) == ["leave 0000", "leave 0001"]
    assert ms.message_count("agent4") == 2  # untouched
    second = run_once(config)
    assert second.returncode == 0, second.stderr
    assert len(interactions(config)) == 2  # fetched again, recognised, not stored again
    assert ms.message_count("agent4") == 2
    ms.deliver("agent4", make_message(subject="leave later", to=ms.address("agent4")))
    third = run_once(config)
    assert third.returncode == 0, third.stderr
    assert subjects(interactions(config)) == ["leave 0000", "leave 0001", "leave later"]
    assert ms.message_count("agent4") == 3


# ------------------------------------------------------------------ errors, one mailbox each


def test_starttls_not_offered_fails_that_mailbox_only(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    ms.clear("agent5", "agent6")
    ms.deliver_many("agent5", messages(ms, "never", 1, "agent5"))
    ms.deliver_many("agent6", messages(ms, "fine", 2, "agent6"))
    wrong = mailbox(ms, "notls-box", "agent5", "starttls", port=ms.ports["pop3_notls"])
    config = site(tmp_path, wrong, mailbox(ms, "good-box", "agent6", "ssl"))
    result = run_once(config)
    assert result.returncode == 1
    assert (
        f"mailbox notls-box: connection failed: server {ms.host}:{ms.ports['pop3_notls']} "
        "does not offer STLS, but pop-connection-security is starttls: refusing to go on "
        "in clear text"
    ) in result.stderr
    assert ms.password("agent5") not in result.stderr
    assert subjects(interactions(config)) == ["fine 0000", "fine 0001"]
    assert ms.message_count("agent5") == 1
    assert ms.message_count("agent6") == 0


def test_bad_certificate_is_a_clear_error(mail_servers: MailServers, tmp_path: Path) -> None:
    ms = mail_servers
    ms.clear("agent7", "agent8")
    ms.deliver_many("agent7", messages(ms, "badcert", 1, "agent7"))
    ms.deliver_many("agent8", messages(ms, "ok", 1, "agent8"))
    bad = mailbox(ms, "badcert-box", "agent7", "ssl", port=ms.ports["pop3s_badcert"])
    config = site(tmp_path, bad, mailbox(ms, "ok-box", "agent8", "starttls"))
    result = run_once(config)
    assert result.returncode == 1
    assert (
        f"mailbox badcert-box: connection failed: cannot connect to server "
        f"{ms.host}:{ms.ports['pop3s_badcert']}: TLS handshake failed: certificate verify failed"
    ) in result.stderr
    assert ms.password("agent7") not in result.stderr
    assert subjects(interactions(config)) == ["ok 0000"]
    assert ms.message_count("agent7") == 1


def test_wrong_password_is_a_clear_error_and_others_go_on(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    ms.clear("agent9", "agent1")
    ms.deliver_many("agent9", messages(ms, "locked out", 1, "agent9"))
    ms.deliver_many("agent1", messages(ms, "let in", 1, "agent1"))
    wrong = mailbox(ms, "wrong-box", "agent9", "ssl", password="not-the-password-9f3a")
    config = site(tmp_path, wrong, mailbox(ms, "right-box", "agent1", "ssl"))
    result = run_once(config)
    assert result.returncode == 1
    assert (
        f"login refused for mailbox wrong-box on server {ms.host}:{ms.ports['pop3s']}: "
        "[AUTH] Authentication failed."
    ) in result.stderr
    assert "not-the-password-9f3a" not in result.stderr
    assert subjects(interactions(config)) == ["let in 0000"]
    assert ms.message_count("agent9") == 1


def test_disabletop_trace_has_no_top_and_no_password(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    ms.clear("agent2")
    ms.deliver_many("agent2", messages(ms, "no top", 2, "agent2"))
    box = mailbox(
        ms,
        "notop-box",
        "agent2",
        "starttls",
        **{"mail.pop3.disabletop": True, "enable-debug": True},
    )
    config = site(tmp_path, box)
    result = run_once(config, "-vv")
    assert result.returncode == 0, result.stderr
    assert subjects(interactions(config)) == ["no top 0000", "no top 0001"]
    trace = result.stderr
    assert "notop-box C: RETR 1" in trace and "notop-box C: RETR 2" in trace
    assert "notop-box C: PASS <redacted>" in trace
    # no TOP command (the server's CAPA may still list TOP: that is its line, not ours)
    assert "C: TOP" not in trace and not re.search(r"\bTOP \d", trace)
    assert ms.password("agent2") not in trace
    assert "not honoured" not in trace  # mail.pop3.disabletop is a declared option


#: ``postroom run --once`` that dies (exit 3) after its DELEs, before QUIT
_CRASH_BEFORE_QUIT = """
import os, sys
from postroom_pop3.source import POP3Source

async def crash(self, why):
    os._exit(3)

POP3Source._end_session = crash
from postroom.cli.main import main
sys.exit(main(["run", "-c", sys.argv[1], "--once"]))
"""


def test_a_crash_before_quit_deletes_nothing_and_stores_nothing_twice(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    ms.clear("agent5")
    ms.deliver_many("agent5", messages(ms, "crash", 3, "agent5"))
    config = site(tmp_path, mailbox(ms, "crash-box", "agent5", "ssl"))
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH_BEFORE_QUIT, str(config)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert crashed.returncode == 3, crashed.stderr
    assert len(interactions(config)) == 3  # committed before the DELEs
    ms.wait_for(lambda: ms.message_count("agent5") == 3, 10, "DELE without QUIT to count nil")
    again = run_once(config)
    assert again.returncode == 0, again.stderr
    assert subjects(interactions(config)) == ["crash 0000", "crash 0001", "crash 0002"]
    assert ms.message_count("agent5") == 0


# ------------------------------------------------------------------ volume


def test_500_messages_are_ingested_exactly_once(
    mail_servers: MailServers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ms = mail_servers
    ms.clear("bulk1")
    sent = messages(ms, "bulk", 500, "bulk1")
    ms.deliver_many("bulk1", sent)
    config = site(tmp_path, mailbox(ms, "bulk-box", "bulk1", "ssl"))
    result = run_once(config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = interactions(config)
    assert len(rows) == 500
    assert subjects(rows) == [f"bulk {n:04d}" for n in range(500)]
    assert len({r["message_id"] for r in rows}) == 500
    assert ms.message_count("bulk1") == 0
    again = run_once(config)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(interactions(config)) == 500
    with capsys.disabled():
        print(f"\n[pop3] 500 messages: {result.seconds:.1f}s, peak RSS {result.max_rss_kb} KiB")


def test_a_20_mb_message_is_stored_byte_for_byte(
    mail_servers: MailServers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ms = mail_servers
    ms.clear("bulk2")
    # a line over Twisted's 16 KiB limit, lines that need dot-stuffing, and 20 MB of body
    line = b"".join(b"%08d " % n + b"x" * 66 + b"\r\n" for n in range(20 * 1024 * 1024 // 76))
    body = b".leading dot\r\n..two dots\r\n.\r\n" + b"L" * 100_000 + b"\r\n" + line
    big = make_message(subject="twenty megabytes", to=ms.address("bulk2")) + body
    # the same gateway run on one small message: the memory baseline
    ms.deliver("bulk2", make_message(subject="small", to=ms.address("bulk2")))
    baseline = run_once(site(tmp_path / "small", mailbox(ms, "small-box", "bulk2", "ssl")))
    assert baseline.returncode == 0, baseline.stderr
    assert ms.message_count("bulk2") == 0

    ms.deliver("bulk2", big)
    served = ms.messages("bulk2")[0]  # CRLF, as POP3 serves it
    assert served.endswith(body)

    config = site(tmp_path, mailbox(ms, "big-box", "bulk2", "ssl"))
    result = run_once(config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = interactions(config)
    assert len(rows) == 1
    raw = read_raw(tmp_path / "store.db", rows[0]["id"])
    assert len(raw) == len(served)
    assert raw == served
    assert ms.message_count("bulk2") == 0
    growth = result.max_rss_kb - baseline.max_rss_kb
    assert growth * 1024 < len(served), "the message was held whole in memory"
    with capsys.disabled():
        print(
            f"\n[pop3] {len(served) / 1e6:.1f} MB message: {result.seconds:.1f}s, peak RSS "
            f"{result.max_rss_kb} KiB ({growth:+d} KiB over a one small message run)"
        )


def read_raw(db: Path, interaction_id: str) -> bytes:
    """The raw bytes the store holds for an interaction (through the store driver)."""
    import io

    from postroom.store.sqlite import SQLiteStore

    store = SQLiteStore({"path": db})
    store.open()
    try:
        sink = io.BytesIO()
        store.read_raw(interaction_id, sink)
        return sink.getvalue()
    finally:
        store.close()


# ------------------------------------------------------------------ a running gateway


def free_port() -> int:
    """A port for the gateway's HTTP API (the option refuses 0, which would disable it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_running_gateway_polls_and_commits_deletions_each_pass(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    """Without --once: each pass ends with QUIT (deletions committed, new mail seen)."""
    ms = mail_servers
    ms.clear("agent3")
    ms.deliver_many("agent3", messages(ms, "first", 2, "agent3"))
    box = mailbox(ms, "live-box", "agent3", "starttls", **{"poll-interval": "00:00:01"})
    config = site(tmp_path, box, http={"port": free_port()})
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [POSTROOM, "-v", "run", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        ms.wait_for(lambda: len(interactions(config)) == 2, 60, "the first two interactions")
        ms.wait_for(lambda: ms.message_count("agent3") == 0, 30, "the first pass's QUIT")
        ms.deliver("agent3", make_message(subject="later", to=ms.address("agent3")))
        ms.wait_for(lambda: len(interactions(config)) == 3, 60, "mail delivered meanwhile")
        ms.wait_for(lambda: ms.message_count("agent3") == 0, 30, "the second pass's QUIT")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "gateway.log").read_text(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    assert subjects(interactions(config)) == ["first 0000", "first 0001", "later"]
    assert "Traceback" not in output and "Unhandled" not in output, output[-3000:]

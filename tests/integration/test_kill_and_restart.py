"""SIGKILL during an import of 500 messages, then a restart: each stored exactly once.

For IMAP (``after-processing: delete`` and ``seen``) and POP3 (``delete``): 500
distinct small messages are put in a mailbox, then ``postroom run --once`` is
started and killed with SIGKILL a few times, each time once the store holds a
number of interactions drawn from a seeded random generator (so every kill
lands during the import, at a different point: between a commit and the
acknowledgement on the server, in the middle of an acknowledgement batch, while
the previous run's committed-but-unacknowledged messages are fetched again...).
A last run then goes to the end. The store must hold exactly 500 interactions,
one per Message-ID, and the mailbox must be empty (delete) or all \\Seen (seen).

The seed is printed; ``POSTROOM_KILL_SEED=<seed>`` repeats a run's kill points.

A last test checks that a SIGKILLed gateway leaves no process behind (its
parse workers, ``gateway.parse-workers``).
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.servers import MailServers, wait_for
from tests.integration.sites import Site, explain, kill_marked, marked_processes

TOTAL = 500
KILLS = 4
#: the last messages are never a kill point: the kills land during the import
TAIL = 60
#: a run must reach its kill point within this many seconds (a full run takes ~5 s)
KILL_GUARD = 90.0
#: what a killed gateway started (its parse workers) must be gone this soon after it
ORPHAN_GRACE = 3.0


@dataclass(frozen=True)
class Mode:
    kind: str
    port: str
    security: str
    after: str
    user: str


MODES = {
    "imap-delete": Mode("imap", "imap", "starttls", "delete", "bulk1"),
    "imap-seen": Mode("imap", "imaps", "ssl", "seen", "bulk2"),
    "pop3-delete": Mode("pop3", "pop3s", "ssl", "delete", "bulk1"),
}


@dataclass(frozen=True)
class Kill:
    threshold: int  # the kill point: interactions in the store
    before: int  # interactions when the run started
    at: int  # interactions once it was dead
    seconds: float  # from start to SIGKILL


def seeded() -> tuple[int, random.Random]:
    seed = int(os.environ.get("POSTROOM_KILL_SEED") or random.SystemRandom().randrange(2**32))
    return seed, random.Random(seed)


def corpus(ms: MailServers, user: str, tag: str) -> tuple[list[bytes], list[str]]:
    """TOTAL small messages with distinct Message-IDs (and bodies); and those ids."""
    run = uuid.uuid4().hex[:10]
    date = email.utils.formatdate(localtime=False)
    ids = [f"<{tag}-{n:03d}.{run}@kill.postroom.test>" for n in range(TOTAL)]
    messages = [
        (
            f"From: customer{n}@shop.example\r\n"
            f"To: {ms.address(user)}\r\n"
            f"Subject: {tag} {n:03d}\r\n"
            f"Date: {date}\r\n"
            f"Message-ID: {mid}\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
            f"Message {n} of run {run}.\r\n"
        ).encode()
        for n, mid in enumerate(ids)
    ]
    return messages, ids


def run_and_kill(site: Site, mailbox: str, threshold: int, log: Path, mark: str) -> Kill:
    """Start ``postroom run --once``; SIGKILL it once *mailbox* has *threshold* interactions."""
    before = site.count(mailbox)
    with log.open("wb") as out:
        proc = site.start(out, "--once", mark=mark)
    started = time.monotonic()
    try:
        while site.count(mailbox) < threshold:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)  # paces the poll; notices an early exit
            assert proc.returncode is None, (
                f"the run ended (exit {proc.returncode}) before {threshold} interactions:\n"
                + log.read_text(errors="replace")[-4000:]
            )
            assert time.monotonic() - started < KILL_GUARD, (
                f"no {threshold} interactions after {KILL_GUARD:g} s:\n"
                + log.read_text(errors="replace")[-4000:]
            )
        seconds = time.monotonic() - started
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, log.read_text(errors="replace")[-4000:]
    return Kill(threshold, before, site.count(mailbox), seconds)


def survivors(mark: str, grace: float) -> dict[int, str]:
    """The processes of *mark* still there after *grace* seconds: pid -> command line."""
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not marked_processes(mark), grace, "the processes to end")
    return marked_processes(mark)


@pytest.mark.parametrize("mode_name", list(MODES))
def test_sigkill_during_the_import_then_a_restart_stores_each_message_once(
    mode_name: str,
    mail_servers: MailServers,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ms = mail_servers
    mode = MODES[mode_name]
    seed, rng = seeded()
    with capsys.disabled():
        print(f"\n[{mode_name}] POSTROOM_KILL_SEED={seed}")
    ms.clear(mode.user)
    messages, ids = corpus(ms, mode.user, mode_name)
    uids = ms.deliver_many(mode.user, messages)
    assert len(uids) == TOTAL

    site = Site(tmp_path, ms)
    name = f"kill-{mode_name}"
    site.mailbox(
        name,
        mode.user,
        kind=mode.kind,
        port=mode.port,
        security=mode.security,
        after_processing=mode.after,
    )
    points = sorted(rng.sample(range(1, TOTAL - TAIL), KILLS))
    kills = []
    mark = uuid.uuid4().hex  # in the environment of every process of these runs
    try:
        for n, point in enumerate(points):
            threshold = max(point, site.count(name) + 1)
            kill = run_and_kill(site, name, threshold, tmp_path / f"killed-{n}.log", mark)
            kills.append(kill)
            assert kill.at < TOTAL, f"seed {seed}: kill {n} landed after the import: {kill}"
            # What a killed gateway leaves running is the subject of the test
            # below; here it is only cleared away, so that nothing piles up.
            kill_marked(mark)
        started = time.monotonic()
        done = site.run_once()
        last_run = time.monotonic() - started
    finally:
        kill_marked(mark)
    assert done.returncode == 0, f"seed {seed}, kills {kills}\n" + explain(done)
    assert "Traceback" not in done.stderr, explain(done)

    # exactly once: 500 interactions, one for each Message-ID seeded
    rows = site.query(
        "SELECT message_id, COUNT(*) FROM interactions WHERE mailbox = ? GROUP BY message_id",
        name,
    )
    twice = {mid: n for mid, n in rows if n != 1}
    assert twice == {}, f"seed {seed}, kills {kills}: stored more than once: {twice}"
    assert sorted(mid for mid, _ in rows) == sorted(ids), f"seed {seed}, kills {kills}"
    assert site.count() == TOTAL
    assert site.quarantine() == []

    # acknowledged on the server, each of them
    if mode.after == "delete":
        assert ms.message_count(mode.user) == 0, f"seed {seed}, kills {kills}"
    else:
        flags = ms.flags(mode.user)
        assert sorted(flags) == sorted(uids), f"seed {seed}, kills {kills}"
        unseen = [uid for uid, f in flags.items() if "\\Seen" not in f]
        deleted = [uid for uid, f in flags.items() if "\\Deleted" in f]
        assert unseen == [] and deleted == [], f"seed {seed}, kills {kills}: {unseen} {deleted}"

    with capsys.disabled():
        shown = ", ".join(f"{k.threshold}: {k.before}->{k.at} ({k.seconds:.1f} s)" for k in kills)
        print(f"[{mode_name}] killed at {shown}; last run {last_run:.1f} s")


def test_a_killed_gateway_leaves_no_process_behind(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    """What the gateway starts (the parse workers of ``gateway.parse-workers``)
    dies with it, even when it is SIGKILLed and cannot stop them itself.

    Processes are found by a mark in their environment, which every descendant
    inherits, whoever its parent is once the gateway is gone.
    """
    ms = mail_servers
    ms.clear("agent9")
    messages, _ids = corpus(ms, "agent9", "orphans")
    ms.deliver_many("agent9", messages[:200])
    site = Site(tmp_path, ms)
    site.mailbox("orphans", "agent9", port="imap_notls", security="none")
    killed, finished = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        run_and_kill(site, "orphans", 20, tmp_path / "killed.log", killed)  # parsing by then
        orphans = survivors(killed, ORPHAN_GRACE)
        kill_marked(killed)
        done = site.run_once(mark=finished)
        assert done.returncode == 0, explain(done)
        left = survivors(finished, ORPHAN_GRACE)
    finally:
        kill_marked(killed)
        kill_marked(finished)
    assert left == {}, f"processes left running by a run that exited: {left}"
    assert orphans == {}, (
        f"processes of the SIGKILLed gateway still running {ORPHAN_GRACE:g} s later "
        f"(orphans: nothing ends them): {orphans}"
    )

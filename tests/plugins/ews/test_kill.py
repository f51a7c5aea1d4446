"""SIGKILL during an EWS import, then a restart: each message stored exactly once.

300 distinct messages in the fake's inbox; ``postroom run --once`` is started
and killed with SIGKILL a few times, each time once the store holds a number
of interactions drawn from a seeded generator (``POSTROOM_KILL_SEED`` repeats
a run), then a last run goes to the end. The store must hold 300
interactions, one per Message-ID, the inbox must be empty, and the fake must
have seen no protocol error. The fake lives in the test process, so it
outlives every killed gateway, as a server would.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakes.ews.server import EWSFake
from tests.integration.sites import Site, explain
from tests.plugins.ews.conftest import message

TOTAL = 300
KILLS = 3
TAIL = 40
KILL_GUARD = 90.0


def test_sigkill_during_an_ews_import_then_a_restart_stores_each_once(
    fake: EWSFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("POSTROOM_KILL_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    with capsys.disabled():
        print(f"\n[ews] POSTROOM_KILL_SEED={seed}")
    for n in range(TOTAL):
        fake.store.add(message(n))
    site = Site(tmp_path, None)  # type: ignore[arg-type]  # no mail servers: the fake
    site.mailboxes.append(
        {
            "name": "support",
            "type": "ews",
            "server": fake.url,
            "mailbox": fake.user,
            "password": fake.password,
            "ca-file": fake.ca_file,
            "protocol-timeout": "00:00:30",
        }
    )
    thresholds = sorted(rng.sample(range(1, TOTAL - TAIL), KILLS))
    for number, threshold in enumerate(thresholds):
        log = tmp_path / f"run-{number}.log"
        with log.open("wb") as out:
            proc = site.start(out, "--once")
        started = time.monotonic()
        try:
            while site.count("support") < threshold:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.02)  # paces the poll; notices an early exit
                assert proc.returncode is None, log.read_text(errors="replace")[-4000:]
                assert time.monotonic() - started < KILL_GUARD, log.read_text()[-4000:]
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.returncode is None:
                proc.kill()
            proc.wait(timeout=30)
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    rows = site.query("SELECT message_id FROM interactions WHERE mailbox = 'support'")
    assert len(rows) == TOTAL, f"seed {seed}"
    assert {mid for (mid,) in rows} == {f"<ews-{n}@example.test>" for n in range(TOTAL)}
    assert fake.store.folders["inbox"].items == []

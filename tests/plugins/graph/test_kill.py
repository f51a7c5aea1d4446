"""SIGKILL during a Graph import, then a restart: each message stored exactly once.

As tests/integration/test_kill_and_restart.py does for IMAP and POP3 (same
helpers, seeded kill points, ``POSTROOM_KILL_SEED`` repeats them): 300 messages
in the fake's folder, ``postroom run --once`` killed three times during the
import, then a run to the end. The store must hold 300 interactions, one per
Message-ID, and every message must have been moved to the processed folder.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.fakes.graph import GraphFake
from tests.integration.oauth import OAuthServers
from tests.integration.sites import explain, kill_marked
from tests.integration.test_kill_and_restart import run_and_kill, seeded
from tests.plugins.graph.test_gateway import USER, graph_site, message

TOTAL = 300
KILLS = 3
TAIL = 40


def test_sigkill_during_a_graph_import_stores_each_message_once(
    oauth_servers: OAuthServers, live_graph: GraphFake, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    graph = live_graph
    seed, rng = seeded()
    with capsys.disabled():
        print(f"\n[graph] POSTROOM_KILL_SEED={seed}")
    ids = [graph.add_message(USER, "Inbox/Support", message(n)) for n in range(TOTAL)]
    graph.folder(USER, "Inbox/Done")
    site = graph_site(tmp_path, oauth_servers, graph)
    site.write()
    points = sorted(rng.sample(range(1, TOTAL - TAIL), KILLS))
    kills = []
    mark = uuid.uuid4().hex
    try:
        for n, point in enumerate(points):
            threshold = max(point, site.count("graph") + 1)
            kill = run_and_kill(site, "graph", threshold, tmp_path / f"killed-{n}.log", mark)
            kills.append(kill)
            assert kill.at < TOTAL, f"seed {seed}: kill {n} landed after the import: {kill}"
            kill_marked(mark)
        started = time.monotonic()
        done = site.run_once()
        last_run = time.monotonic() - started
    finally:
        kill_marked(mark)
    assert done.returncode == 0, f"seed {seed}, kills {kills}\n" + explain(done)
    rows = site.query("SELECT message_id, COUNT(*) FROM interactions GROUP BY message_id")
    twice = {mid: n for mid, n in rows if n != 1}
    assert twice == {}, f"seed {seed}, kills {kills}: stored more than once: {twice}"
    assert sorted(mid for mid, _ in rows) == sorted(
        f"<graph-{n}@example.test>" for n in range(TOTAL)
    ), f"seed {seed}, kills {kills}"
    assert site.quarantine() == []
    assert graph.messages_in(USER, "Inbox/Support") == [], f"seed {seed}, kills {kills}"
    assert sorted(m.id for m in graph.messages_in(USER, "Inbox/Done")) == sorted(ids)
    with capsys.disabled():
        shown = ", ".join(f"{k.threshold}: {k.before}->{k.at} ({k.seconds:.1f} s)" for k in kills)
        print(f"[graph] killed at {shown}; last run {last_run:.1f} s")

"""The pop3 driver inside the real kernel (task.Clock, inline runner, SQLite store).

The kernel builds the driver from its entry point with the ``basic`` auth
driver; only the network is the scripted server. This is where the kernel's
bookkeeping and the driver's sessions meet: duplicates after a lost QUIT, and a
message that breaks the connection every time being quarantined while the
others flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet import defer, task

from postroom.kernel import Kernel
from postroom.runner import InlineRunner
from postroom.services.gateway import Gateway
from postroom_pop3.source import POP3Source
from tests.conftest import run
from tests.plugins.pop3.fakes import FakeEndpoint, FakePOP3Server


def msg(n: int) -> bytes:
    head = b"Message-ID: <k%d@example.test>\r\nFrom: c@shop.example\r\n" % n
    return head + b"Subject: k %d\r\n\r\nhi\r\n" % n


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakePOP3Server:
    fake = FakePOP3Server([(f"uid-{n}", msg(n)) for n in range(1, 6)])
    monkeypatch.setattr(POP3Source, "_endpoint", lambda self: FakeEndpoint(fake))
    monkeypatch.setattr(POP3Source, "tls", lambda self: "verifying-creator")
    return fake


def site(tmp_path: Path, **gateway: Any) -> Path:
    config = {
        "store": {"driver": "sqlite", "path": str(tmp_path / "store.db")},
        "gateway": {"concurrency": 3, **gateway},
        "pop-client": [
            {
                "name": "box",
                "type": "pop3",
                "server": "pop.example.test",
                "port": 110,
                "pop-connection-security": "starttls",
                "mailbox": "agent1",
                "password": "secret-pw",
            }
        ],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def once(config: Path, server: FakePOP3Server) -> tuple[bool, Kernel]:
    """One ``--once`` run of a fresh kernel; pumps the scripted server until it ends."""
    clock = task.Clock()
    kernel = Kernel(config, reactor=clock, clock=clock, runner=InlineRunner(), enabled_plugins=[])
    gateway = Gateway(kernel, once=True)
    gateway.startService()
    done: defer.Deferred[bool] = defer.ensureDeferred(gateway.run_once())
    for _ in range(2000):
        if done.called:
            break
        server.pump()
        clock.advance(1)
    ok = run(done)
    stopped = gateway.stopService()
    for _ in range(100):
        if stopped.called:
            break
        server.pump()
        clock.advance(1)
    run(stopped)
    return ok, kernel


def stored(config: Path) -> list[Any]:
    clock = task.Clock()
    kernel = Kernel(config, reactor=clock, clock=clock, runner=InlineRunner(), enabled_plugins=[])
    run(kernel.open())
    try:
        return list(reversed(run(kernel.store.list_interactions(1000))))
    finally:
        run(kernel.close())


def test_a_pass_stores_everything_and_quits(tmp_path: Path, server: FakePOP3Server) -> None:
    config = site(tmp_path)
    ok, _kernel = once(config, server)
    assert ok
    assert [i.subject for i in stored(config)] == [f"k {n}" for n in range(1, 6)]
    assert server.maildrop == []
    names = server.command_names()
    assert names.count("RETR") == 5 and names.count("DELE") == 5 and names[-1] == "QUIT"


def test_lost_quit_means_duplicates_then_deletion(tmp_path: Path, server: FakePOP3Server) -> None:
    config = site(tmp_path)
    server.on[b"QUIT"] = lambda _line: server.drop()  # the connection dies at QUIT
    ok, _kernel = once(config, server)
    assert ok
    assert len(stored(config)) == 5
    assert len(server.maildrop) == 5  # nothing deleted without a clean QUIT
    del server.on[b"QUIT"]
    ok, _kernel = once(config, server)
    assert ok
    interactions = stored(config)
    assert len(interactions) == 5  # fetched again, recognised, not stored twice
    assert server.maildrop == []


def test_a_message_that_kills_the_connection_is_quarantined_and_the_rest_flow(
    tmp_path: Path, server: FakePOP3Server
) -> None:
    config = site(tmp_path, **{"max-attempts": 2})

    def poison(_line: bytes) -> None:
        server.proto.dataReceived(b"+OK\r\nSubject: half of it\r\n")
        server.drop()

    server.on[b"RETR 3"] = poison
    ok, _kernel = once(config, server)
    assert not ok  # one message failed
    assert sorted(i.subject for i in stored(config)) == ["k 1", "k 2", "k 4", "k 5"]
    assert [u for u, _m in server.maildrop] == ["uid-3"]  # the others deleted at QUIT
    server.on[b"RETR 1"] = poison  # uid-3 is message 1 now
    ok, kernel = once(config, server)
    assert not ok
    run(kernel.open())
    [entry] = run(kernel.store.list_quarantine())
    run(kernel.close())
    assert entry.source_key == "uid-3"
    assert "connection closed by the server" in entry.reason
    ok, _kernel = once(config, server)
    assert ok  # quarantined: skipped, the mailbox is not stuck
    assert [u for u, _m in server.maildrop] == ["uid-3"]

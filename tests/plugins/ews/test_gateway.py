"""The real ``postroom`` command over the EWS fake: ``run --once`` imports a
folder exactly once, ``check --connect`` logs in, and ``run`` picks up new
mail at once through streaming notifications."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.ews.server import EWSFake
from tests.integration.sites import free_port
from tests.pki import TestCA
from tests.plugins.ews.conftest import message

POSTROOM = str(Path(sys.executable).with_name("postroom"))
#: the issue's size (about 24 s on a busy machine); ``POSTROOM_EWS_IMPORT``
#: lowers it for a quicker run
COUNT = int(os.environ.get("POSTROOM_EWS_IMPORT") or 2000)


@pytest.fixture
def fake(ews_tls: TestCA) -> Iterator[EWSFake]:
    with EWSFake(ews_tls) as server:
        yield server
    assert server.protocol_errors == [], server.protocol_errors


def site(tmp_path: Path, fake: EWSFake, **options: Any) -> Path:
    mailbox = {
        "name": "support",
        "type": "ews",
        "server": fake.url,
        "mailbox": fake.user,
        "password": fake.password,
        "ca-file": fake.ca_file,
        "protocol-timeout": "00:00:30",
    } | {k.replace("_", "-"): v for k, v in options.items()}
    document = {
        "store": {"driver": "sqlite", "path": str(tmp_path / "store.db")},
        "pop-client": [mailbox],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def postroom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [POSTROOM, *args], capture_output=True, text=True, timeout=300, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def stored(tmp_path: Path) -> list[tuple[str, str]]:
    """(source key, Message-ID) of each interaction the store holds for the mailbox."""
    uri = f"{(tmp_path / 'store.db').resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        rows = conn.execute(
            "SELECT substr(k.key, length('src:support:') + 1), i.message_id "
            "FROM interactions i JOIN dedupe_keys k ON k.interaction_id = i.id "
            "WHERE i.mailbox = 'support' AND k.key LIKE 'src:support:%'"
        ).fetchall()
    return [(str(key), str(mid)) for key, mid in rows]


def interactions(tmp_path: Path) -> int:
    uri = f"{(tmp_path / 'store.db').resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        [(count,)] = conn.execute("SELECT COUNT(*) FROM interactions").fetchall()
    return int(count)


def test_run_once_imports_the_folder_exactly_once_and_deletes_it(
    fake: EWSFake, tmp_path: Path
) -> None:
    ids = [fake.store.add(message(n)) for n in range(COUNT)]
    path = site(tmp_path, fake)
    done = postroom("run", "-c", str(path), "--once")
    assert done.returncode == 0, done.stderr
    rows = stored(tmp_path)
    assert interactions(tmp_path) == COUNT
    assert sorted(key for key, _ in rows) == sorted(ids)
    assert sorted(mid for _, mid in rows) == sorted(f"<ews-{n}@example.test>" for n in range(COUNT))
    assert fake.store.folders["inbox"].items == []
    # a second run finds nothing new, stores nothing twice
    fake.store.add(message(COUNT))
    again = postroom("run", "-c", str(path), "--once")
    assert again.returncode == 0, again.stderr
    assert len(stored(tmp_path)) == interactions(tmp_path) == COUNT + 1
    assert fake.counts["GetItem"] == COUNT + 1


def test_run_once_moves_to_the_processed_folder(fake: EWSFake, tmp_path: Path) -> None:
    processed = fake.store.add_folder(None, fake.store.folders["msgfolderroot"].id, "Processed")
    for n in range(3):
        fake.store.add(message(n))
    path = site(tmp_path, fake, after_processing="move", move_to_folder="Processed")
    done = postroom("run", "-c", str(path), "--once")
    assert done.returncode == 0, done.stderr
    assert len(stored(tmp_path)) == 3
    assert fake.store.folders["inbox"].items == []
    assert len(processed.items) == 3


def test_check_connect_logs_in(fake: EWSFake, tmp_path: Path) -> None:
    path = site(tmp_path, fake)
    done = postroom("check", "--connect", "-c", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert fake.counts.get("GetFolder", 0) >= 1


def test_check_connect_names_a_refused_password(fake: EWSFake, tmp_path: Path) -> None:
    path = site(tmp_path, fake, password="wrong")
    done = postroom("check", "--connect", "-c", str(path))
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "support" in output and "refused" in output
    assert "wrong" not in output


@pytest.mark.parametrize("replaced", [False, True])
def test_a_reply_to_a_sent_message_threads_to_its_outbound_interaction(
    fake: EWSFake, tmp_path: Path, replaced: bool
) -> None:
    if replaced:  # Exchange gives the message its own Message-ID: replies quote that one
        fake.replace_message_id = "<AM0PR01MB0001.4711@exchange.example.com>"
    path = site(tmp_path, fake)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["smtp-client"] = {
        "server-type": "ews", "server": fake.url, "user": fake.user,
        "password": fake.password, "ca-file": fake.ca_file, "enable-authentication": True,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    queued = postroom("send", "-c", str(path), "--from", fake.user,
                      "--to", "customer@example.test", "--subject", "Your order 4711",
                      "--text", "It has shipped.")  # fmt: skip
    assert queued.returncode == 0, queued.stdout + queued.stderr
    sent = postroom("run", "-c", str(path), "--once")
    assert sent.returncode == 0, sent.stderr
    store = (tmp_path / "store.db").resolve().as_uri()
    with contextlib.closing(sqlite3.connect(f"{store}?mode=ro", uri=True)) as conn:
        [(outbound, sent_mid, status)] = conn.execute(
            "SELECT id, message_id, status FROM interactions WHERE type = 'Outbound'"
        ).fetchall()
    assert status == "Sent"
    [(mime, _disposition, _rcpt)] = fake.sent
    assert f"Message-ID: {sent_mid}".encode() in mime
    assert (sent_mid == "<AM0PR01MB0001.4711@exchange.example.com>") == replaced
    reply = (f"Message-ID: <reply-1@example.test>\r\nFrom: customer@example.test\r\n"
             f"To: {fake.user}\r\nSubject: Re: Your order 4711\r\nIn-Reply-To: {sent_mid}\r\n"
             f"References: {sent_mid}\r\n\r\nThanks!\r\n").encode()  # fmt: skip
    fake.store.add(reply)
    again = postroom("run", "-c", str(path), "--once")
    assert again.returncode == 0, again.stderr
    with contextlib.closing(sqlite3.connect(f"{store}?mode=ro", uri=True)) as conn:
        [(message_id, parent)] = conn.execute(
            "SELECT message_id, parent_id FROM interactions WHERE type = 'Inbound'"
        ).fetchall()
    assert (message_id, parent) == ("<reply-1@example.test>", outbound)


def test_run_picks_up_new_mail_at_once_through_streaming_notifications(
    fake: EWSFake, tmp_path: Path
) -> None:
    """With an hour's poll interval, a message delivered after the start is
    stored within seconds: the stream woke the mailbox. SIGTERM stops the
    gateway promptly with the stream open, and the subscription is ended."""
    path = site(tmp_path, fake, poll_interval="01:00:00")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["http"] = {"port": free_port()}  # not the default port another gateway may hold
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [POSTROOM, "-v", "run", "-c", str(path)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        # the first pass is done and the stream is open (a bounded wait on the fake)
        assert fake.wait_until(lambda: fake.open_streams == 1, 60), log_path.read_text()
        assert proc.poll() is None, log_path.read_text()
        delivered = time.monotonic()
        item = fake.store.add(message(1))
        # stored, then deleted from the folder once the store committed it
        emptied = fake.wait_until(lambda: item not in fake.store.folders["inbox"].items, 30)
        latency = time.monotonic() - delivered
        assert emptied, log_path.read_text()
        assert stored(tmp_path) == [(item, "<ews-1@example.test>")]
        print(f"\nEWS streaming: delivered to stored in {latency:.2f} s (poll interval 1 h)")
        assert latency < 20
        assert fake.counts["Subscribe"] == 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = log_path.read_text(errors="replace")
    assert code == 0, text[-5000:]
    assert time.monotonic() - stopping < 15, "the open stream held up the shutdown"
    assert "Traceback" not in text, text[-5000:]
    assert len(fake.unsubscribed) == 1

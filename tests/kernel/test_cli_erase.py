"""``postroom erase`` and ``postroom purge`` as a user runs them, over a maildir site.

The mail is fetched by the gateway (``run --once``), the auto-reply plugin logs
the automatic one in its own table, the erasure removes every trace of the
address from the SQLite file (every table and column read back here, raw
chunks included), and the same files put back into the maildir (mail left on
a server) are not imported again."""

from __future__ import annotations

import re
import sqlite3
import textwrap
from pathlib import Path

from tests.kernel.test_cli import postroom

#: the address in lower-cased bytes, not as the end of another address
NEEDLE = re.compile(rb"(?<![a-z0-9._%+-])bob@example\.org(?![a-z0-9-])")


def site(tmp_path: Path, retention: str = "") -> Path:
    (tmp_path / "maildir" / "new").mkdir(parents=True)
    config = tmp_path / "site.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            store: {driver: sqlite, path: store.db}
            email-processing:
              default-domain: c.example
              enable-message-id-check: true
              enable-autowar-detect: true
            pop-client:
              - name: support
                type: maildir
                folder-path: maildir
            smtp-client:
              server-type: file
              folder-path: outbox
            """
        )
        + retention
    )
    return config


MAILS = {
    "bob": (
        "From: Bob <BOB@Example.ORG>\r\nTo: support@c.example\r\nSubject: order 17\r\n"
        "Message-ID: <b1@example.org>\r\n\r\nWhere is my order? Bob\r\n"
    ),
    "bob-auto": (
        "From: bob@example.org\r\nTo: support@c.example\r\nSubject: Out of office\r\n"
        "Auto-Submitted: auto-replied\r\nMessage-ID: <b2@example.org>\r\n\r\naway\r\n"
    ),
    "alice": (
        "From: alice@example.org\r\nTo: support@c.example\r\nCc: Bob@example.org\r\n"
        "Subject: for bob@example.org too\r\nMessage-ID: <a1@example.org>\r\n\r\nhi both\r\n"
    ),
    "carol": (
        "From: carol@example.org\r\nTo: support@c.example\r\nSubject: hello\r\n"
        "Message-ID: <c1@example.org>\r\n\r\nnothing about him\r\n"
    ),
}


def drop(config: Path) -> None:
    for name, text in MAILS.items():
        (config.parent / "maildir" / "new" / f"{name}.eml").write_bytes(text.encode())


def table_rows(db: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: list(conn.execute(f'SELECT * FROM "{t}"')) for t in tables}
    finally:
        conn.close()


def traces(db: Path) -> list[str]:
    found = []
    for table, rows in table_rows(db).items():
        for row in rows:
            for value in row:
                data = value if isinstance(value, bytes) else str(value).encode()
                if NEEDLE.search(data.lower()):
                    found.append(table)
    return sorted(set(found))


def test_erase_removes_every_trace_and_the_mail_left_in_place_is_not_imported_again(
    tmp_path: Path,
) -> None:
    config = site(tmp_path)
    drop(config)
    ran = postroom("run", "-c", str(config), "--once")
    assert ran.returncode == 0, ran.stderr
    db = tmp_path / "store.db"
    assert {"raw_chunks", "interactions", "autoreply_exchanges"} <= set(traces(db))
    assert len(table_rows(db)["interactions"]) == 4

    refused = postroom("erase", "-c", str(config), "--address", "bob@example.org")
    assert refused.returncode == 2 and "--yes" in refused.stderr

    before = table_rows(db)
    dry = postroom("erase", "-c", str(config), "--address", "Bob@Example.org", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "interactions: 2" in dry.stdout and "autoreply_exchanges" in dry.stdout
    assert "dry run: nothing was changed" in dry.stdout
    assert table_rows(db) == before

    done = postroom("-v", "erase", "-c", str(config), "--address", "BOB@example.ORG", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "erasure complete" in done.stdout
    assert "plugin autoreply: {'autoreply_exchanges': 1}" in done.stdout
    assert not NEEDLE.search((done.stdout + done.stderr).lower().encode())  # hash only
    assert traces(db) == []
    rows = table_rows(db)
    assert len(rows["interactions"]) == 2  # alice's (Bob replaced) and carol's
    assert len(rows["erasure_audit"]) == 1
    conn = sqlite3.connect(db)
    [(alice,)] = conn.execute("SELECT id FROM interactions WHERE from_addr LIKE 'alice%'")
    conn.close()
    raw = postroom("interactions", "show", "-c", str(config), alice, "--raw")
    assert raw.returncode == 1 and raw.stdout == ""
    assert "its raw message was purged by an erasure on" in raw.stderr

    checked = postroom("erase", "-c", str(config), "--check", "bob@EXAMPLE.org")
    assert checked.returncode == 0 and "complete" in checked.stdout
    never = postroom("erase", "-c", str(config), "--check", "dan@example.org")
    assert never.returncode == 1

    # the same files are still "on the server": put them back and fetch again
    drop(config)
    again = postroom("run", "-c", str(config), "--once")
    assert again.returncode == 0, again.stderr
    assert len(table_rows(db)["interactions"]) == 2
    assert traces(db) == []
    assert not list((config.parent / "maildir" / "new").iterdir())  # fetched, acknowledged


def test_an_erasure_a_plugin_could_not_finish_is_reported_incomplete(tmp_path: Path) -> None:
    config = site(tmp_path)
    drop(config)
    assert postroom("run", "-c", str(config), "--once").returncode == 0
    db = tmp_path / "store.db"
    conn = sqlite3.connect(db)
    with conn:  # the plugin's table gone: its erasure fails
        conn.execute("ALTER TABLE autoreply_exchanges RENAME TO kept_elsewhere")
    conn.close()
    result = postroom("erase", "-c", str(config), "--address", "bob@example.org", "--yes")
    assert result.returncode == 1
    assert "plugin autoreply: {'error':" in result.stdout
    assert "still found in kept_elsewhere.address" in result.stdout
    assert "INCOMPLETE" in result.stderr


def test_purge_by_hand_with_nothing_old_enough_and_as_a_dry_run(tmp_path: Path) -> None:
    config = site(tmp_path, "retention:\n  raw-max-age: '720:00:00'\n")
    drop(config)
    assert postroom("run", "-c", str(config), "--once").returncode == 0
    dry = postroom("purge", "-c", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == "would purge nothing"
    real = postroom("purge", "-c", str(config), "--json")
    assert real.returncode == 0 and '"counts": {}' in real.stdout
    off = postroom("purge", "-c", str(site(tmp_path / "b")))
    assert off.returncode == 0 and "nothing is purged" in off.stdout

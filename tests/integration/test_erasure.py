"""Erasure against the real Dovecot: mail left on the server is not imported again.

A POP3 mailbox with ``after-processing: leave`` keeps every message on the
server and, after a restart, lists them all again, asking the store which it
holds; an IMAP mailbox marked ``seen`` whose UID cursor is lost (a UIDVALIDITY
change, a restored store) fetches them all again and commits them. After
``postroom erase``, the erased person's mail must be recognised by its hashed
tombstones in both cases: not imported again, no bytes stored, and no trace of
the address anywhere in the store.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from tests.integration.servers import MailServers, make_message
from tests.integration.sites import Site, explain

#: the address in lower-cased bytes, not as the end of another address
NEEDLE = re.compile(rb"(?<![a-z0-9._%+-])bob@example\.org(?![a-z0-9-])")


def seed(ms: MailServers, user: str) -> None:
    ms.clear(user)
    ms.deliver_many(
        user,
        [
            make_message("order 17", "Where is it? Bob\r\n", sender="Bob <Bob@Example.org>"),
            make_message("order 18", "and this one\r\n", sender="bob@example.org"),
            make_message(
                "about Bob",
                "cc him\r\n",
                sender="alice@example.org",
                headers={"Cc": "BOB@example.org"},
            ),
            make_message("hello", "nothing about him\r\n", sender="carol@example.org"),
        ],
    )


def traces(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        found = set()
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    data = value if isinstance(value, bytes) else str(value).encode()
                    if NEEDLE.search(data.lower()):
                        found.add(table)
        return sorted(found)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("kind", "port", "options"),
    [
        ("pop3", "pop3", {"after_processing": "leave"}),
        ("imap", "imap", {"after_processing": "seen"}),
    ],
)
def test_erased_mail_left_on_the_server_is_not_imported_again(
    mail_servers: MailServers, tmp_path: Path, kind: str, port: str, options: dict[str, str]
) -> None:
    ms = mail_servers
    seed(ms, "bulk2")
    site = Site(tmp_path, ms)
    site.mailbox("box", "bulk2", kind=kind, port=port, **options)
    first = site.run_once()
    assert first.returncode == 0, explain(first)
    assert site.count() == 4
    assert "raw_chunks" in traces(site.db)

    erased = site.cli("erase", "--address", "bob@EXAMPLE.org", "--yes")
    assert erased.returncode == 0, explain(erased)
    assert "erasure complete" in erased.stdout
    assert traces(site.db) == []
    assert site.count() == 2  # alice's (Bob replaced) and carol's

    if kind == "imap":  # the UID cursor lost: every message is fetched again
        conn = sqlite3.connect(site.db)
        with conn:
            conn.execute("DELETE FROM cursors")
        conn.close()
    again = site.run_once()
    assert again.returncode == 0, explain(again)
    assert site.count() == 2
    assert traces(site.db) == []
    assert len(ms.messages("bulk2")) == 4  # all still on the server

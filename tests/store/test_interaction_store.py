"""The interaction store's contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import pytest
from zope.interface.verify import verifyClass, verifyObject

from postroom.interfaces import IStore
from postroom.model import (
    Attachment,
    Cursor,
    Interaction,
    OutboundRequest,
    RawRef,
)
from postroom.store.errors import DatabaseError, FencingError, RawIntegrityError, StoreError
from postroom.store.sql import interactions as interactions_module
from postroom.store.sql.raw import CHUNK_SIZE
from postroom.store.sql.store import SQLStore
from postroom.store.sqlite import MemoryStore, SQLiteStore

MakeStore = Callable[..., SQLStore]
RawOf = Callable[[bytes], RawRef]

MAIL = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
BINARY = b"Subject: x\r\n\r\n" + bytes(range(256)) * 7 + b"\x00\r\r\n\n\r\x00\xff\xfe.\r\n.\r\n"


def count(store: SQLStore, table: str) -> int:
    return int(store._read(lambda tx: tx.scalar(f"SELECT COUNT(*) FROM {table}")))


def counts(store: SQLStore) -> dict[str, int]:
    tables = ["raw_messages", "raw_chunks", "interactions", "dedupe_keys", "handoffs", "cursors"]
    return {table: count(store, table) for table in tables}


def read_back(store: SQLStore, interaction_id: str) -> bytes:
    out = io.BytesIO()
    size = store.read_raw(interaction_id, out)
    assert size == len(out.getvalue())
    return out.getvalue()


def inbound(**fields: Any) -> Interaction:
    return Interaction(mailbox="support", subject="hi", **fields)


def write_as_before_0008(store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """*store* (opened at an older schema) writes interactions with the columns
    they had before migration 0008 (and no events), as an older postroom did."""

    def insert(tx: Any, item: Interaction, raw_id: str | None, now: datetime) -> None:
        tx.execute(
            "INSERT INTO interactions (id, tenant_id, type, subtype, status, mailbox, "
            "message_id, subject, from_addr, to_addrs, cc_addrs, attachments, attached_data, "
            "created_at, raw_id, stored_at) "
            f"VALUES ({', '.join(['?'] * 16)})",
            (item.id, item.tenant_id, item.type, item.subtype, item.status, item.mailbox,
             item.message_id, item.subject, item.from_addr, json.dumps(item.to),
             json.dumps(item.cc), "[]", "{}", store._dt_param(item.created_at), raw_id,
             store._dt_param(now)),
        )  # fmt: skip

    monkeypatch.setattr(store, "_insert_interaction", insert)
    # nor did it record events (migration 0010)
    monkeypatch.setattr(interactions_module, "insert_events", lambda tx, at, events: None)


# ------------------------------------------------------------------ contract


def test_backends_implement_the_interface(store: SQLStore) -> None:
    assert verifyObject(IStore, store)
    assert verifyClass(IStore, type(store))


def test_migrations_are_versioned_and_applied_once(make_store: MakeStore) -> None:
    first = make_store()
    versions = [migration.version for migration in first.migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    assert first.schema_version() == versions[-1]
    applied = first._read(
        lambda tx: tx.all("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    )
    assert [row[0] for row in applied] == versions
    first.close()

    again = make_store()  # re-open the same database: nothing is applied twice
    again.open()  # and open() on an open store is a no-op
    assert (
        again._read(
            lambda tx: tx.all("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        )
        == applied
    )
    assert again.schema_version() == versions[-1]


def test_every_backend_has_the_same_migration_versions() -> None:
    folders = {
        "sqlite": resources.files("postroom.store").joinpath("sql", "sqlite"),
        "postgresql": resources.files("postroom_postgresql").joinpath("sql", "postgresql"),
    }
    names = {
        backend: sorted(e.name[:4] for e in folder.iterdir() if e.name.endswith(".sql"))
        for backend, folder in folders.items()
    }
    assert names["sqlite"] == names["postgresql"] != []


def test_concurrent_open_applies_each_migration_once(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes start at once on an empty database."""
    stores = [make_store(open=False) for _ in range(2)]
    runs: list[str] = []
    locks = 0
    cond = threading.Condition()
    for store in stores:
        real_lock, real_run = store.dialect.lock_migrations, store.dialect.run_script

        def lock(tx: Any, real: Any = real_lock) -> None:
            nonlocal locks
            with cond:
                locks += 1
                cond.notify_all()
            real(tx)

        def run_script(tx: Any, sql: str, real: Any = real_run) -> None:
            runs.append(threading.current_thread().name)
            if len(runs) == 1:
                # The first to migrate goes on only once the other has asked
                # for the lock of its first migration (bootstrap + 1 each).
                with cond:
                    assert cond.wait_for(lambda: locks >= 4, timeout=30)
            real(tx, sql)

        if store.concurrent_writers:  # SQLite: BEGIN IMMEDIATE queues the other up front
            monkeypatch.setattr(store.dialect, "lock_migrations", lock)
            monkeypatch.setattr(store.dialect, "run_script", run_script)

    errors: list[BaseException] = []
    start = threading.Barrier(len(stores), timeout=30)

    def run(store: SQLStore) -> None:
        try:
            start.wait()
            store.open()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    migrations = stores[0].migrations()
    assert {s.schema_version() for s in stores} == {migrations[-1].version}
    assert count(stores[0], "schema_migrations") == len(migrations)
    if stores[0].concurrent_writers:
        assert len(runs) == len(migrations)  # the other waited, then found them applied


def test_store_must_be_opened(make_store: MakeStore) -> None:
    store = make_store(open=False)
    with pytest.raises(StoreError, match="not open"):
        store.get_interaction("x")


def test_options_are_checked() -> None:
    from postroom_postgresql.store import PostgreSQLStore

    with pytest.raises(ValueError, match="path"):
        SQLiteStore({})
    with pytest.raises(ValueError, match="dsn"):
        PostgreSQLStore({})
    with pytest.raises(ValueError, match="schema"):
        PostgreSQLStore({"dsn": "dbname=x", "schema": 'x"; DROP TABLE y; --'})


def test_memory_store_is_a_throwaway_sqlite_store(raw_of: RawOf) -> None:
    store = MemoryStore({"path": "ignored.sqlite"})
    store.open()
    try:
        result = store.commit_fetched("mb", "1", raw_of(MAIL), [inbound()])
        assert read_back(store, result.new[0].id) == MAIL
    finally:
        store.close()
    other = MemoryStore({})
    other.open()
    assert other.list_interactions() == []
    other.close()


# ------------------------------------------------------------ unit of work


def test_commit_of_a_new_message_stores_every_field(store: SQLStore, raw_of: RawOf) -> None:
    raw = raw_of(MAIL)
    created = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    item = Interaction(
        tenant_id=101,
        subtype="InboundReport",
        status="New",
        parent_id="parent-1",
        mailbox="support",
        message_id="<m1@example.org>",
        subject="Ünïcode ✓",
        from_addr="a@example.org",
        to=["b@example.org", "c@example.org"],
        cc=["d@example.org"],
        reply_to=["orders@example.org", "team@example.org"],
        references=["<r1@example.org>", "<r2@example.org>", "<m0@example.org>"],
        # the sender's offset is kept, not turned into UTC
        date=datetime(2024, 3, 1, 13, 29, 58, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        text="body\n",
        html="<p>body</p>",
        attachments=[Attachment("a.pdf", "application/pdf", 1234, False, "attachment", None, "2")],
        attached_data={"_AttachmentFileNames": "a.pdf", "n": 3, "f": 1.5, "b": True},
        created_at=created,
    )
    result = store.commit_fetched(
        "support", "4711:1", raw, [item], cursor=Cursor("support", "4711:1")
    )
    assert result.duplicates == []
    [new] = result.new
    assert new.id == item.id and new.raw_sha256 == raw.sha256 and new.duplicate_of is None
    got = store.get_interaction(item.id)
    assert got == attrs.evolve(item, raw_sha256=raw.sha256)
    assert got is not None and got.created_at.tzinfo is not None
    assert got.created_at.utcoffset() == timedelta(0)
    assert got.date is not None and got.date.utcoffset() == timedelta(hours=-5, minutes=-30)
    assert store.get_cursor("support") == Cursor("support", "4711:1")
    assert store.get_cursor("other") is None
    assert store.handoff_status(item.id) == ("pending", 0, None)
    assert store.get_interaction("unknown") is None
    assert read_back(store, item.id) == MAIL


def test_attached_data_is_added_after_the_commit(store: SQLStore, raw_of: RawOf) -> None:
    """An enrichment that finished late (a directory that was down) merges its keys
    and drops its own marker; the rest of the interaction is untouched."""
    item = Interaction(mailbox="support", attached_data={"keep": 1, "ldap.LookupPending": "down"})
    store.commit_fetched("support", "late-1", raw_of(MAIL), [item])
    before = store.get_interaction(item.id)
    store.update_attached_data(
        item.id, {"ContactId": "C-1001", "Contact.FirstName": "Jürgen"},
        remove=["ldap.LookupPending", "never-there"],
    )  # fmt: skip
    after = store.get_interaction(item.id)
    assert after is not None and before is not None
    assert after.attached_data == {"keep": 1, "ContactId": "C-1001", "Contact.FirstName": "Jürgen"}
    assert attrs.evolve(after, attached_data=before.attached_data) == before
    with pytest.raises(KeyError):
        store.update_attached_data("unknown", {"x": 1})


def test_commit_fills_in_mailbox_and_digest(store: SQLStore, raw_of: RawOf) -> None:
    raw = raw_of(MAIL)
    result = store.commit_fetched("sales", "7", raw, [Interaction()])
    got = store.get_interaction(result.new[0].id)
    assert got is not None and got.mailbox == "sales" and got.raw_sha256 == raw.sha256
    assert store.list_interactions(mailbox="sales") == [got]


def test_attachment_names_come_back_original_and_safe(store: SQLStore, raw_of: RawOf) -> None:
    hostile = ["../../etc/passwd", "invoice\u202efdp.exe", "CON", None, "invoicefdp.exe"]
    attachments = [Attachment(name, "application/pdf", 1) for name in hostile]
    item = inbound(attachments=attachments)
    [stored] = store.commit_fetched("mb", "1", raw_of(MAIL), [item]).new
    got = store.get_interaction(stored.id)
    assert got is not None
    assert [(a.filename, a.safe_filename) for a in got.attachments] == [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("CON", "_CON"),
        (None, "attachment.pdf"),
        ("invoicefdp.exe", "invoicefdp (2).exe"),
    ]
    # rows stored before safe names existed: made on reading
    text = store._read(
        lambda tx: tx.scalar("SELECT attachments FROM interactions WHERE id = ?", (stored.id,))
    )
    rows = json.loads(text)
    assert [row.pop("safe_filename") for row in rows][:1] == ["_.._etc_passwd"]
    store._write(
        lambda tx: tx.execute(
            "UPDATE interactions SET attachments = ? WHERE id = ?", (json.dumps(rows), stored.id)
        )
    )
    again = store.get_interaction(stored.id)
    assert again is not None and again.attachments == got.attachments


def test_commit_needs_an_interaction(store: SQLStore, raw_of: RawOf) -> None:
    with pytest.raises(ValueError):
        store.commit_fetched("mb", "1", raw_of(MAIL), [])
    assert count(store, "raw_messages") == 0


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(random.Random(7).randbytes(2 * CHUNK_SIZE + 512 * 1024 + 3), id="2.5MiB"),
        pytest.param(BINARY, id="nul-cr-lf-8bit"),
        pytest.param(b"x" * CHUNK_SIZE, id="exactly-one-chunk"),
    ],
)
def test_raw_bytes_come_back_identical_in_chunks(
    store: SQLStore, raw_of: RawOf, data: bytes
) -> None:
    result = store.commit_fetched("mb", "1", raw_of(data), [inbound()])
    writes: list[int] = []

    class Sink(io.BytesIO):
        def write(self, b: Any, /) -> int:
            writes.append(len(b))
            return super().write(b)

    sink = Sink()
    assert store.read_raw(result.new[0].id, sink) == len(data)
    assert sink.getvalue() == data
    assert max(writes) <= CHUNK_SIZE
    assert len(writes) == -(-len(data) // CHUNK_SIZE)
    assert count(store, "raw_chunks") == len(writes)


def test_raw_bytes_are_streamed_never_read_whole(
    store: SQLStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(8).randbytes(3 * CHUNK_SIZE + 10)
    raw = raw_of(data)
    reads: list[int] = []
    real_open = RawRef.open

    class Spy:
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def read(self, size: int = -1) -> bytes:
            reads.append(size)
            return bytes(self.fh.read(size))

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

    def no_whole_read(self: RawRef) -> bytes:
        raise AssertionError("the store read the whole message")

    monkeypatch.setattr(RawRef, "read", no_whole_read)
    monkeypatch.setattr(RawRef, "open", lambda self: Spy(real_open(self)))
    result = store.commit_fetched("mb", "1", raw, [inbound()])
    assert reads and all(0 < size <= CHUNK_SIZE for size in reads)
    monkeypatch.undo()
    assert read_back(store, result.new[0].id) == data


def test_a_raw_file_changed_under_the_store_is_refused(store: SQLStore, raw_of: RawOf) -> None:
    raw = raw_of(MAIL)
    with open(raw.path, "ab") as fh:
        fh.write(b"more")
    with pytest.raises(StoreError, match="changed"):
        store.commit_fetched("mb", "1", raw, [inbound()])
    assert counts(store) == dict.fromkeys(counts(store), 0)


def test_read_raw_of_unknown_interaction_is_a_key_error(store: SQLStore) -> None:
    with pytest.raises(KeyError):
        store.read_raw("nope", io.BytesIO())


def _corrupt(store: SQLStore, how: str, seq: int) -> None:
    """Damage one stored chunk with plain SQL, as a failing disk or a careless hand would."""
    if how == "flipped":
        query = "SELECT data FROM raw_chunks WHERE seq = ?"
        data = bytes(store._read(lambda tx: tx.scalar(query, (seq,))))
        changed = bytes([data[0] ^ 1]) + data[1:]  # same size, one bit off
        sql, params = "UPDATE raw_chunks SET data = ? WHERE seq = ?", (changed, seq)
    elif how == "truncated":
        sql, params = "UPDATE raw_chunks SET data = ? WHERE seq = ?", (b"Subject", seq)
    elif how == "missing":
        sql, params = "DELETE FROM raw_chunks WHERE seq = ?", (seq,)
    else:
        sql, params = "UPDATE raw_messages SET sha256 = ?", ("0" * 64,)
    store._write(lambda tx: tx.execute(sql, params))


@pytest.mark.parametrize("how", ["flipped", "truncated", "missing", "digest"])
@pytest.mark.parametrize("seq", [0, 1], ids=["first-chunk", "second-chunk"])
def test_corrupt_raw_bytes_are_an_error_not_wrong_bytes(
    store: SQLStore, raw_of: RawOf, how: str, seq: int
) -> None:
    data = random.Random(9).randbytes(CHUNK_SIZE + 1000)
    raw = raw_of(data)
    result = store.commit_fetched("mb", "1", raw, [inbound()])
    entry = store.quarantine("mb", "2", "reason", raw_of(data))
    _corrupt(store, how, seq)
    interaction_id = result.new[0].id
    with pytest.raises(RawIntegrityError) as info:
        store.read_raw(interaction_id, io.BytesIO())
    error = info.value
    assert isinstance(error, StoreError)
    assert f"the stored raw bytes of interaction {interaction_id} are corrupt" in str(error)
    assert error.expected_size == len(data) and error.expected_sha256 != error.sha256
    with pytest.raises(RawIntegrityError, match=f"quarantine entry {entry.id}"):
        store.read_quarantined_raw(entry.id, io.BytesIO())


# ------------------------------------------------------------------- dedupe


def test_same_source_key_is_a_duplicate(store: SQLStore, raw_of: RawOf) -> None:
    first = store.commit_fetched("mb", "9:1", raw_of(MAIL), [inbound()])
    changed = raw_of(MAIL + b"re-delivered with other bytes\r\n")
    again = store.commit_fetched("mb", "9:1", changed, [inbound()])
    assert again.new == []
    assert [d.duplicate_of for d in again.duplicates] == [first.new[0].id]
    assert again.raw_id == first.raw_id  # the original's bytes, not stored again
    assert count(store, "raw_messages") == 1
    # the same place in another mailbox is another message
    other = store.commit_fetched("mb2", "9:1", changed, [inbound()])
    assert len(other.new) == 1
    assert count(store, "interactions") == 2


def test_same_bytes_under_another_source_key_is_a_duplicate(
    store: SQLStore, raw_of: RawOf
) -> None:
    first = store.commit_fetched("mb", "1", raw_of(MAIL), [inbound()])
    again = store.commit_fetched("mb", "2", raw_of(MAIL), [inbound()])
    assert again.new == [] and again.duplicates[0].duplicate_of == first.new[0].id
    assert again.raw_id == first.raw_id
    assert count(store, "raw_messages") == 1 and count(store, "interactions") == 1


def test_message_id_dedupes_only_when_asked(store: SQLStore, raw_of: RawOf) -> None:
    def commit(n: int, check: bool, mid: str = "<same@example.org>") -> Any:
        raw = raw_of(MAIL + f"variant {n}\r\n".encode())
        return store.commit_fetched(
            "mb", str(n), raw, [inbound(message_id=mid)], message_id_check=check
        )

    first = commit(1, check=True)
    assert len(first.new) == 1
    unchecked = commit(2, check=False)
    assert len(unchecked.new) == 1
    checked = commit(3, check=True)
    assert checked.new == [] and checked.duplicates[0].duplicate_of == first.new[0].id
    assert len(commit(4, check=True, mid="<other@example.org>").new) == 1
    # the key was never claimed by an unchecked commit, nor without a Message-ID
    assert len(commit(5, check=True, mid="").new) == 1


def test_a_huge_message_id_still_dedupes(store: SQLStore, raw_of: RawOf) -> None:
    # random, so that no compression brings it under an index entry's limit
    mid = "<" + random.Random(3).randbytes(6000).hex() + "@example.org>"
    first = store.commit_fetched(
        "mb", "1", raw_of(MAIL), [inbound(message_id=mid)], message_id_check=True
    )
    again = store.commit_fetched(
        "mb", "2", raw_of(BINARY), [inbound(message_id=mid)], message_id_check=True
    )
    assert again.new == [] and again.duplicates[0].duplicate_of == first.new[0].id
    assert [i.id for i in store.find_by_message_id(mid)] == [first.new[0].id]


def test_a_database_newer_than_the_code_is_refused(make_store: MakeStore) -> None:
    store = make_store()
    store._write(
        lambda tx: tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (9999, "later")
        )
    )
    store.close()
    with pytest.raises(StoreError, match="newer than this postroom knows"):
        make_store()


def test_first_matching_key_names_the_owner(store: SQLStore, raw_of: RawOf) -> None:
    by_source = store.commit_fetched("mb", "1", raw_of(MAIL), [inbound()])
    by_bytes = store.commit_fetched("mb", "2", raw_of(BINARY), [inbound()])
    # source key of the first, bytes of the second: the source key is checked first
    both = store.commit_fetched("mb", "1", raw_of(BINARY), [inbound()])
    assert both.duplicates[0].duplicate_of == by_source.new[0].id
    assert both.duplicates[0].duplicate_of != by_bytes.new[0].id


def test_fan_out_copies_are_deduplicated_per_copy(store: SQLStore, raw_of: RawOf) -> None:
    raw = raw_of(MAIL)

    def copies(*keys: str) -> list[Interaction]:
        return [inbound(copy_key=key, to=[key]) for key in keys]

    first = store.commit_fetched("mb", "1", raw, copies("a@x", "b@x"))
    assert [i.copy_key for i in first.new] == ["a@x", "b@x"] and first.duplicates == []
    again = store.commit_fetched("mb", "1", raw, copies("a@x"))
    assert again.new == [] and again.duplicates[0].duplicate_of == first.new[0].id
    # crash in the middle of a fan-out, then the whole message once more
    resumed = store.commit_fetched("mb", "1", raw, copies("a@x", "b@x", "c@x"))
    assert [i.copy_key for i in resumed.new] == ["c@x"]
    assert [d.duplicate_of for d in resumed.duplicates] == [i.id for i in first.new]
    # the same copy twice in one commit is stored once
    twice = store.commit_fetched("mb", "2", raw_of(BINARY), copies("d@x", "d@x"))
    assert len(twice.new) == 1 and twice.duplicates[0].duplicate_of == twice.new[0].id
    assert count(store, "interactions") == 4


def test_cursor_moves_even_when_everything_is_a_duplicate(
    store: SQLStore, raw_of: RawOf
) -> None:
    store.commit_fetched("mb", "1", raw_of(MAIL), [inbound()], cursor=Cursor("mb", "1"))
    again = store.commit_fetched("mb", "1", raw_of(MAIL), [inbound()], cursor=Cursor("mb", "2"))
    assert again.new == []
    assert store.get_cursor("mb") == Cursor("mb", "2")


def test_a_failing_commit_leaves_nothing(store: SQLStore, raw_of: RawOf) -> None:
    store.commit_fetched("mb", "0", raw_of(BINARY), [inbound()], cursor=Cursor("mb", "0"))
    before = counts(store)
    good = inbound(copy_key="a")
    bad = inbound(copy_key="b", attached_data={"x": object()})  # not JSON: fails mid-commit
    with pytest.raises(TypeError):
        store.commit_fetched("mb", "1", raw_of(MAIL), [good, bad], cursor=Cursor("mb", "1"))
    assert counts(store) == before
    assert store.get_interaction(good.id) is None
    assert store.get_cursor("mb") == Cursor("mb", "0")
    # none of the failed commit's keys was kept: the good copy is still new
    retry = store.commit_fetched("mb", "1", raw_of(MAIL), [good], cursor=Cursor("mb", "1"))
    assert [i.id for i in retry.new] == [good.id]


def test_concurrent_commits_of_one_message_store_it_once(
    make_store: MakeStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes (two connections) commit the same message at the same moment."""
    stores = [make_store(), make_store()]
    raw = raw_of(MAIL)
    lookups: list[str] = []
    race = threading.Barrier(2, timeout=30)
    local = threading.local()

    for store in stores:
        real = store._owner_of

        def owner_of(tx: Any, keys: Any, claimed: Any, real: Any = real) -> Any:
            owner = real(tx, keys, claimed)
            lookups.append(threading.current_thread().name)
            if not getattr(local, "raced", False):
                local.raced = True
                race.wait()  # both have looked and found nothing: now both insert
            return owner

        if store.concurrent_writers:
            monkeypatch.setattr(store, "_owner_of", owner_of)

    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            results[n] = stores[n].commit_fetched(
                "mb", "1", raw, [inbound()], cursor=Cursor("mb", f"c{n}")
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,), name=f"p{n}") for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    winners = [r for r in results.values() if r.new]
    losers = [r for r in results.values() if not r.new]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].duplicates[0].duplicate_of == winners[0].new[0].id
    assert count(stores[0], "interactions") == 1 and count(stores[0], "raw_messages") == 1
    if stores[0].concurrent_writers:
        assert len(lookups) == 3  # the loser really collided and ran its transaction again


def test_fence_is_checked_in_the_commit(store: SQLStore, raw_of: RawOf) -> None:
    with pytest.raises(FencingError, match="no lease"):
        store.commit_fetched("mb", "1", raw_of(MAIL), [inbound()], fence=1)
    store._write(
        lambda tx: tx.execute(
            "INSERT INTO leases (mailbox, owner, fence, expires_at) VALUES (?, ?, ?, ?)",
            ("mb", "host-a", 5, store._dt_param(datetime.now(UTC) + timedelta(minutes=1))),
        )
    )
    with pytest.raises(FencingError, match="commit with fence 4, store has lease fence 5"):
        store.commit_fetched(
            "mb", "1", raw_of(MAIL), [inbound()], cursor=Cursor("mb", "1"), fence=4
        )
    assert count(store, "interactions") == 0 and store.get_cursor("mb") is None
    ok = store.commit_fetched(
        "mb", "1", raw_of(MAIL), [inbound()], cursor=Cursor("mb", "1"), fence=5
    )
    assert len(ok.new) == 1 and store.get_cursor("mb") == Cursor("mb", "1")
    assert store._read(lambda tx: tx.scalar("SELECT fence FROM cursors WHERE mailbox = 'mb'")) == 5


# ----------------------------------------------------------------- look-ups


def test_list_interactions_newest_first(store: SQLStore, raw_of: RawOf) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    ids = []
    for n, mailbox in enumerate(["a", "b", "a"]):
        item = Interaction(created_at=base + timedelta(minutes=n), mailbox=mailbox)
        store.commit_fetched(mailbox, str(n), raw_of(MAIL + bytes([n])), [item])
        ids.append(item.id)
    assert [i.id for i in store.list_interactions()] == ids[::-1]
    assert [i.id for i in store.list_interactions(mailbox="a")] == [ids[2], ids[0]]
    assert [i.id for i in store.list_interactions(limit=1, offset=1)] == [ids[1]]


def test_find_by_message_id(store: SQLStore, raw_of: RawOf) -> None:
    mid = "<abc@example.org>"
    base = datetime(2024, 1, 1, tzinfo=UTC)
    sent = Interaction(message_id=mid, created_at=base)
    store.queue_outbound(sent, OutboundRequest(to=["x@example.org"]))
    reply = inbound(message_id=mid, created_at=base + timedelta(seconds=1))
    store.commit_fetched("mb", "1", raw_of(MAIL), [reply])
    assert [i.id for i in store.find_by_message_id(mid)] == [sent.id, reply.id]
    assert [i.id for i in store.find_by_message_id(mid, type="Outbound")] == [sent.id]
    assert [i.id for i in store.find_by_message_id(mid, type="Inbound")] == [reply.id]
    assert store.find_by_message_id("<nope@example.org>") == []


# ----------------------------------------------------------------- hand-off


def test_handoff_lifecycle(store: SQLStore, raw_of: RawOf) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    older, newer = (Interaction(created_at=base + timedelta(seconds=n)) for n in range(2))
    store.commit_fetched("mb", "2", raw_of(BINARY), [newer])
    store.commit_fetched("mb", "1", raw_of(MAIL), [older])
    assert [i.id for i in store.pending_handoffs()] == [older.id, newer.id]
    assert [i.id for i in store.pending_handoffs(limit=1)] == [older.id]
    assert [i.id for i in store.pending_handoffs(limit=1, after=older.id)] == [newer.id]
    assert store.pending_handoffs(after=newer.id) == []

    store.mark_handoff(older.id, "failed", "routing down")
    assert store.handoff_status(older.id) == ("failed", 1, "routing down")
    assert [i.handoff_state for i in store.pending_handoffs()] == ["failed", "pending"]

    store.mark_handoff(older.id, "done")
    assert store.handoff_status(older.id) == ("done", 2, None)
    assert [i.id for i in store.pending_handoffs()] == [newer.id]
    got = store.get_interaction(older.id)
    assert got is not None and got.handoff_state == "done"

    with pytest.raises(KeyError):
        store.mark_handoff("unknown", "done")
    with pytest.raises(ValueError):
        store.mark_handoff(newer.id, "lost")
    assert store.handoff_status(newer.id) == ("pending", 0, None)
    assert store.handoff_status("unknown") is None


def test_side_effects_have_their_own_state_beside_the_handoff(
    store: SQLStore, raw_of: RawOf
) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    older, newer = (Interaction(created_at=base + timedelta(seconds=n)) for n in range(2))
    store.commit_fetched("mb", "1", raw_of(MAIL), [older])
    store.commit_fetched("mb", "2", raw_of(BINARY), [newer])
    assert store.after_commit_status(older.id) == ("pending", 0, None)
    assert [i.id for i in store.pending_after_commit()] == [older.id, newer.id]
    assert [i.id for i in store.pending_after_commit(limit=1, after=older.id)] == [newer.id]

    store.mark_after_commit(older.id, "failed", "dsn: the database is down")
    assert store.after_commit_status(older.id) == ("failed", 1, "dsn: the database is down")
    assert store.handoff_status(older.id) == ("pending", 0, None)  # the hand-off is apart
    store.mark_handoffs_done([newer.id], after_commit=[older.id])
    assert store.after_commit_status(older.id) == ("done", 2, None)
    assert store.handoff_status(newer.id)[:2] == ("done", 1)
    assert store.after_commit_status(newer.id) == ("pending", 0, None)
    assert [i.id for i in store.pending_after_commit()] == [newer.id]
    assert [i.id for i in store.pending_handoffs()] == [older.id]

    with pytest.raises(KeyError):
        store.mark_after_commit("unknown", "done")
    with pytest.raises(ValueError):
        store.mark_after_commit(newer.id, "lost")
    assert store.after_commit_status("unknown") is None


def test_migration_5_leaves_the_side_effects_of_handed_off_interactions_done(
    make_store: MakeStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before it, side effects ran in postroom_submit: those handed off had theirs."""
    old = make_store(open=False)
    monkeypatch.setattr(old, "migrations", lambda real=old.migrations: real()[:3])
    write_as_before_0008(old, monkeypatch)
    old.open()
    assert old.schema_version() == 3
    handed, waiting = Interaction(), Interaction()
    old.commit_fetched("mb", "1", raw_of(MAIL), [handed])
    old.commit_fetched("mb", "2", raw_of(BINARY), [waiting])
    old.mark_handoff(handed.id, "done")
    old.close()
    upgraded = make_store()
    assert upgraded.schema_version() == upgraded.migrations()[-1].version  # 0004, 0005, ...
    assert upgraded.after_commit_status(handed.id) == ("done", 0, None)
    assert upgraded.after_commit_status(waiting.id) == ("pending", 0, None)
    assert [i.id for i in upgraded.pending_after_commit()] == [waiting.id]


def test_migration_8_gives_older_rows_no_reply_to_references_nor_date(
    make_store: MakeStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_store(open=False)
    monkeypatch.setattr(old, "migrations", lambda real=old.migrations: real()[:7])
    write_as_before_0008(old, monkeypatch)
    old.open()
    assert old.schema_version() == 7
    before = inbound(message_id="<old@example.org>", from_addr="a@example.org")
    old.commit_fetched("mb", "1", raw_of(MAIL), [before])
    old.close()
    upgraded = make_store()
    assert upgraded.schema_version() == upgraded.migrations()[-1].version >= 8
    got = upgraded.get_interaction(before.id)
    assert got is not None and got.message_id == "<old@example.org>"
    assert (got.reply_to, got.references, got.date) == ([], [], None)
    # and a new row on the upgraded store keeps them
    after = inbound(reply_to=["r@example.org"], references=["<old@example.org>"],
                    date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))  # fmt: skip
    upgraded.commit_fetched("mb", "2", raw_of(BINARY), [after])
    again = upgraded.get_interaction(after.id)
    assert again is not None
    assert (again.reply_to, again.references, again.date) == (
        ["r@example.org"], ["<old@example.org>"], datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )


# ------------------------------------------------------------------- outbox


def test_an_entry_requeued_without_counting_keeps_its_attempts(store: SQLStore) -> None:
    """The sender's login was refused: the entry was never tried."""
    now = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    entry = store.queue_outbound(Interaction(message_id="<a@x>"), OutboundRequest(to=["c@x"]))
    assert [e.id for e in store.claim_outbound(now)] == [entry.id]
    retry_at = now + timedelta(minutes=1)
    store.mark_outbound(entry.id, "queued", "535 refused", retry_at, count_attempt=False)
    queued = store.get_outbox(entry.id)
    assert queued is not None
    assert (queued.state, queued.attempts, queued.last_error) == ("queued", 0, "535 refused")
    assert queued.next_attempt_at == retry_at
    assert store.claim_outbound(now) == []


def test_an_outbound_interaction_keeps_its_mailbox(store: SQLStore) -> None:
    """The mailbox it goes out from (docs/outbound.md, "Mailbox identity"), in its row
    and in the queued request."""
    request = OutboundRequest(to=["c@x"], from_addr="Care <care@c.example>", mailbox="support")
    entry = store.queue_outbound(Interaction(message_id="<m@x>", mailbox="support"), request)
    other = store.queue_outbound(Interaction(message_id="<n@x>"), OutboundRequest(to=["c@x"]))
    assert entry.request.mailbox == "support"
    stored = store.get_interaction(entry.id)
    assert stored is not None and stored.mailbox == "support"
    assert [i.id for i in store.list_interactions(mailbox="support")] == [entry.id]
    assert store.get_interaction(other.id).mailbox is None  # type: ignore[union-attr]
    [claimed, _] = store.claim_outbound(datetime(2024, 5, 1, 9, 0, tzinfo=UTC))
    assert claimed.request.mailbox == "support"


def test_outbox_lifecycle(store: SQLStore) -> None:
    now = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    request = OutboundRequest(
        to=["c@example.org"],
        subject="Re: hi",
        text="thanks",
        cc=["d@example.org"],
        headers={"X-Tag": "1"},
        in_reply_to="inbound-1",
        attached_data={"k": "v", "n": 2},
        automatic=True,
        options={"dsn": {"notify": ["FAILURE"]}},
    )
    with pytest.raises(ValueError, match="Message-ID"):
        store.queue_outbound(Interaction(), request)
    assert count(store, "interactions") == 0

    first = store.queue_outbound(Interaction(message_id="<o1@x>", subject="Re: hi"), request)
    second = store.queue_outbound(Interaction(message_id="<o2@x>"), OutboundRequest(to=["e@x"]))
    assert (first.state, first.attempts, first.message_id) == ("queued", 0, "<o1@x>")
    assert first.request == request
    assert store.get_outbox(first.id) == first
    out = store.get_interaction(first.id)
    assert out is not None and (out.type, out.status, out.subject) == (
        "Outbound",
        "Queued",
        "Re: hi",
    )

    claimed = store.claim_outbound(now)
    assert [e.id for e in claimed] == [first.id, second.id]
    assert {e.state for e in claimed} == {"sending"}
    assert store.get_interaction(first.id).status == "Sending"  # type: ignore[union-attr]
    assert store.claim_outbound(now) == []

    # first: temporary failure, retried a minute later
    retry_at = now + timedelta(minutes=1)
    store.mark_outbound(first.id, "queued", error="451 try later", next_attempt_at=retry_at)
    entry = store.get_outbox(first.id)
    assert entry is not None
    assert (entry.state, entry.attempts, entry.last_error) == ("queued", 1, "451 try later")
    assert entry.next_attempt_at == retry_at
    assert store.get_interaction(first.id).status == "Queued"  # type: ignore[union-attr]
    assert store.claim_outbound(now + timedelta(seconds=59)) == []
    assert [e.id for e in store.claim_outbound((retry_at).timestamp())] == [first.id]
    store.mark_outbound(first.id, "sent")
    entry = store.get_outbox(first.id)
    # every attempt counts, the one that succeeded too
    assert entry is not None and (entry.state, entry.attempts) == ("sent", 2)
    sent = store.get_interaction(first.id)
    assert sent is not None and sent.status == "Sent" and "_SendError" not in sent.attached_data

    # second: final failure, visible on the interaction
    store.mark_outbound(second.id, "failed", error="550 no such user")
    failed = store.get_interaction(second.id)
    assert failed is not None and failed.status == "Failed"
    assert failed.attached_data["_SendError"] == "550 no such user"
    assert store.get_outbox(second.id).attempts == 1  # type: ignore[union-attr]

    assert [e.id for e in store.list_outbox()] == [first.id, second.id]
    assert [e.id for e in store.list_outbox(state="failed")] == [second.id]
    assert store.list_outbox(state="queued") == []
    assert store.get_outbox("unknown") is None
    with pytest.raises(KeyError):
        store.mark_outbound("unknown", "sent")
    with pytest.raises(ValueError):
        store.mark_outbound(first.id, "lost")
    with pytest.raises(ValueError, match="naive"):
        store.claim_outbound(datetime(2024, 1, 1))
    with pytest.raises(KeyError):  # an outbound interaction has no raw message
        store.read_raw(first.id, io.BytesIO())


def test_two_workers_never_claim_the_same_entry(make_store: MakeStore) -> None:
    stores = [make_store(), make_store()]
    queued = {
        stores[0].queue_outbound(Interaction(message_id=f"<{n}@x>"), OutboundRequest(to=["a@x"])).id
        for n in range(6)
    }
    got: dict[int, list[str]] = {}
    start = threading.Barrier(2, timeout=30)

    def run(n: int) -> None:
        start.wait()
        got[n] = [e.id for e in stores[n].claim_outbound(datetime.now(UTC), limit=4)]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(got[0]) & set(got[1])
    assert set(got[0]) | set(got[1]) <= queued
    assert len(got[0]) + len(got[1]) == 6
    assert stores[0].list_outbox(state="queued") == []


# --------------------------------------------------- failures and quarantine


def test_quarantine_lifecycle(store: SQLStore, raw_of: RawOf) -> None:
    raw = raw_of(BINARY)
    assert [store.record_failure("mb", "7", f"parse error {n}", raw) for n in range(3)] == [1, 2, 3]
    assert store.record_failure("mb", "8", "other message") == 1
    assert not store.is_quarantined("mb", "7")

    entry = store.quarantine("mb", "7", "line too long", raw)
    assert (entry.mailbox, entry.source_key, entry.reason) == ("mb", "7", "line too long")
    assert (entry.attempts, entry.raw_sha256, entry.released) == (3, raw.sha256, False)
    assert entry.created_at.tzinfo is not None
    assert store.is_quarantined("mb", "7") and not store.is_quarantined("mb", "8")
    assert store.list_quarantine() == [entry]
    out = io.BytesIO()
    assert store.read_quarantined_raw(entry.id, out) == len(BINARY)
    assert out.getvalue() == BINARY

    again = store.quarantine("mb", "7", "still too long")
    assert again.id == entry.id and again.reason == "still too long"
    assert again.raw_sha256 == raw.sha256 and len(store.list_quarantine()) == 1

    store.release_quarantine(entry.id)
    assert not store.is_quarantined("mb", "7")
    assert store.list_quarantine() == []
    [released] = store.list_quarantine(include_released=True)
    assert released.id == entry.id and released.released
    assert store.record_failure("mb", "7", "once more") == 1  # the count starts again
    assert store.record_failure("mb", "8", "other message") == 2  # others keep theirs

    bare = store.quarantine("mb", "9", "no bytes")
    assert bare.raw_sha256 is None and bare.attempts == 0
    with pytest.raises(KeyError):
        store.read_quarantined_raw(bare.id, io.BytesIO())
    with pytest.raises(KeyError):
        store.read_quarantined_raw("unknown", io.BytesIO())
    with pytest.raises(KeyError):
        store.release_quarantine("unknown")


def test_clear_failures(store: SQLStore) -> None:
    store.record_failure("mb", "1", "x")
    assert store.record_failure("mb", "1", "x") == 2
    store.clear_failures("mb", "1")
    assert store.record_failure("mb", "1", "x") == 1


def test_requeue_interrupted_sends_again_what_a_dead_process_left_sending(store) -> None:
    from datetime import UTC, datetime, timedelta

    from postroom.model import Interaction, InteractionType, OutboundRequest

    outbound = Interaction(
        type=InteractionType.OUTBOUND.value, message_id="<o1@example.com>", to=["a@example.com"]
    )
    store.queue_outbound(outbound, OutboundRequest(to=["a@example.com"], text="hi"))
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert [e.id for e in store.claim_outbound(later)] == [outbound.id]
    assert store.requeue_interrupted(datetime.now(UTC) - timedelta(hours=1)) == []
    assert store.requeue_interrupted(later) == [outbound.id]
    entry = store.get_outbox(outbound.id)
    assert entry.state == "queued" and "interrupted" in entry.last_error
    assert store.get_interaction(outbound.id).status == "Queued"
    assert store.requeue_interrupted(later) == []  # nothing left sending
    assert [e.id for e in store.claim_outbound(later)] == [outbound.id]


def test_a_message_id_the_server_replaced_is_recorded_on_the_interaction(
    store: SQLStore,
) -> None:
    entry = store.queue_outbound(Interaction(message_id="<assigned@x>"),
                                 OutboundRequest(to=["c@example.org"]))
    store.claim_outbound(datetime(2024, 5, 1, tzinfo=UTC))
    # a retry is not sent: the Message-ID given with it is ignored
    store.mark_outbound(entry.id, "queued", "451 later", message_id="<other@x>")
    assert store.get_interaction(entry.id).message_id == "<assigned@x>"  # type: ignore[union-attr]
    store.mark_outbound(entry.id, "sent", message_id="<exchange@x>")
    sent = store.get_interaction(entry.id)
    assert sent is not None and (sent.status, sent.message_id) == ("Sent", "<exchange@x>")
    assert [i.id for i in store.find_by_message_id("<exchange@x>")] == [entry.id]
    assert store.find_by_message_id("<assigned@x>") == []
    # the outbox keeps the one assigned (a retry would send the same message)
    assert store.get_outbox(entry.id).message_id == "<assigned@x>"  # type: ignore[union-attr]


def test_outbox_counts_by_state(store) -> None:
    from postroom.model import Interaction, InteractionType, OutboundRequest

    assert store.outbox_counts() == {
        "queued": 0, "sending": 0, "sent": 0, "failed": 0, "cancelled": 0
    }  # fmt: skip
    for n in range(3):
        outbound = Interaction(
            type=InteractionType.OUTBOUND.value,
            message_id=f"<c{n}@example.com>",
            to=["a@example.com"],
        )
        store.queue_outbound(outbound, OutboundRequest(to=["a@example.com"]))
    store.mark_outbound(outbound.id, "failed", "no")
    assert store.outbox_counts() == {
        "queued": 2, "sending": 0, "sent": 0, "failed": 1, "cancelled": 0
    }  # fmt: skip


def test_known_source_keys_answers_which_were_committed(store, tmp_path) -> None:
    from postroom.model import Interaction, RawRef

    raw = tmp_path / "m.eml"
    raw.write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    store.commit_fetched("box", "uidl-1", RawRef.from_path(raw), [Interaction()])
    long_key = "k" * 2000  # stored bounded (hashed): still found
    raw.write_bytes(b"Subject: y\r\n\r\nbody\r\n")
    store.commit_fetched("box", long_key, RawRef.from_path(raw), [Interaction()])
    keys = ["uidl-1", "uidl-2", long_key, *(f"other-{n}" for n in range(1200))]
    assert store.known_source_keys("box", keys) == {"uidl-1", long_key}
    assert store.known_source_keys("other-box", keys) == set()


def test_batched_handoffs_quarantined_keys_and_commit_forgets_failures(store, tmp_path) -> None:
    from postroom.model import Interaction, RawRef

    raw = tmp_path / "m.eml"
    raw.write_bytes(b"Subject: z\r\n\r\nbody\r\n")
    assert store.record_failure("box", "k1", "boom") == 1
    result = store.commit_fetched("box", "k1", RawRef.from_path(raw), [Interaction()])
    assert store.record_failure("box", "k1", "again") == 1  # the commit forgot the first
    new_id = result.new[0].id
    assert store.handoff_status(new_id)[0] == "pending"
    store.mark_handoffs_done([new_id])
    assert store.handoff_status(new_id)[:2] == ("done", 1)
    assert store.pending_handoffs() == []
    store.quarantine("box", "k9", "poison")
    store.quarantine("other", "k8", "poison")
    assert store.quarantined_source_keys("box") == {"k9"}


# ------------------------------------------------------- suppression list


def test_suppression_list(store: SQLStore) -> None:
    assert store.is_suppressed("gone@example.com") is None
    store.suppress("Gone@Example.COM", "5.1.1 user unknown", "ndr-1")
    entry = store.is_suppressed("<gone@example.com>")
    assert entry is not None
    assert (entry.address, entry.reason, entry.interaction_id, entry.hits) == (
        "gone@example.com",
        "5.1.1 user unknown",
        "ndr-1",
        1,
    )
    assert entry.created_at.tzinfo is not None

    # a second hard bounce updates the reason and counts, keeps the first NDR when none is given
    store.suppress("gone@example.com", "5.2.1 mailbox disabled")
    again = store.is_suppressed("GONE@example.com")
    assert again is not None
    assert (again.reason, again.interaction_id, again.hits) == (
        "5.2.1 mailbox disabled",
        "ndr-1",
        2,
    )
    assert again.created_at == entry.created_at

    store.suppress("other@example.com", "by hand")
    assert [e.address for e in store.list_suppressions()] == [
        "gone@example.com",
        "other@example.com",
    ]
    assert store.unsuppress("GONE@EXAMPLE.COM") is True
    assert store.unsuppress("gone@example.com") is False
    assert store.is_suppressed("gone@example.com") is None
    assert [e.address for e in store.list_suppressions()] == ["other@example.com"]


def test_the_same_bounce_suppressed_again_counts_once(store: SQLStore) -> None:
    """Side effects run at least once: the same report's suppression is one hit."""
    store.suppress("gone@example.com", "5.1.1 user unknown", "ndr-1")
    store.suppress("Gone@example.com", "5.1.1 user unknown", "ndr-1")
    entry = store.is_suppressed("gone@example.com")
    assert entry is not None and (entry.interaction_id, entry.hits) == ("ndr-1", 1)
    store.suppress("gone@example.com", "5.1.1 still unknown", "ndr-2")
    again = store.is_suppressed("gone@example.com")
    assert again is not None and (again.interaction_id, again.hits) == ("ndr-2", 2)


def test_a_fan_out_marks_its_message_known(store: SQLStore, raw_of: RawOf) -> None:
    """Copies carry their own keys; the message's plain source key is recorded too,
    so leave-on-server sources and interrupted deletes see it as committed."""
    raw = raw_of(MAIL)
    first = store.commit_fetched("mb", "7", raw, [inbound(copy_key="a@x"), inbound(copy_key="b@x")])
    assert store.known_source_keys("mb", ["7", "8"]) == {"7"}
    # re-fetched after the split was turned off: a duplicate of the first copy
    unsplit = store.commit_fetched("mb", "7", raw, [inbound()])
    assert unsplit.new == [] and unsplit.duplicates[0].duplicate_of == first.new[0].id
    # and again with the split on: every copy a duplicate of its own
    again = store.commit_fetched("mb", "7", raw, [inbound(copy_key="a@x"), inbound(copy_key="b@x")])
    assert [d.duplicate_of for d in again.duplicates] == [i.id for i in first.new]


# ------------------------------------------------------- a failing database


def test_a_file_that_is_not_a_database_is_a_database_error(tmp_path: Any) -> None:
    import sqlite3

    path = tmp_path / "garbage.db"
    path.write_bytes(random.Random(10).randbytes(100_000))
    store = SQLiteStore({"path": str(path)})
    with pytest.raises(DatabaseError) as info:
        store.open()
    assert str(info.value) == f"SQLite database {path}: file is not a database"
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_a_database_whose_folder_cannot_be_made_is_a_database_error(tmp_path: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = SQLiteStore({"path": str(blocker / "sub" / "postroom.db")})
    with pytest.raises(DatabaseError) as info:
        store.open()
    assert str(info.value) == (
        f"SQLite database {blocker / 'sub' / 'postroom.db'}: cannot make its folder "
        f"{blocker / 'sub'}: Not a directory"
    )


def test_a_full_disk_is_a_database_error(tmp_path: Any, raw_of: RawOf) -> None:
    """SQLite's own limit on the file's pages stands in for a full disk (SQLITE_FULL)."""
    store = SQLiteStore({"path": str(tmp_path / "full.db")})
    store.open()
    store.commit_fetched("mb", "1", raw_of(MAIL), [inbound()])
    assert store.dialect.conn is not None
    pages = store.dialect.conn.execute("PRAGMA page_count").fetchone()[0]
    store.dialect.conn.execute(f"PRAGMA max_page_count = {pages}")
    big = random.Random(11).randbytes(CHUNK_SIZE)
    with pytest.raises(DatabaseError, match=r"^SQLite database .*: database or disk is full$"):
        store.commit_fetched("mb", "2", raw_of(big), [inbound()])
    assert store.list_interactions()  # what was stored before is still readable
    store.close()


def test_an_unreachable_postgresql_server_is_a_database_error_without_the_password() -> None:
    from postroom_postgresql.store import PostgreSQLStore

    dsn = "host=127.0.0.1 port=9 dbname=site user=postroom password=hunter2 connect_timeout=3"
    store = PostgreSQLStore({"dsn": dsn})
    with pytest.raises(DatabaseError) as info:
        store.open()
    message = str(info.value)
    assert message.startswith("PostgreSQL database site on 127.0.0.1:9: ")
    assert "hunter2" not in message and "\n" not in message


# ------------------------------------------------------------ long texts

LONG = "aé€😀\r\nz"  # every width of character, and a CRLF across a piece's end


@pytest.mark.parametrize("length", [0, 6, 7, 8, 14, 15, 50])
def test_long_texts_are_stored_in_pieces_and_read_back_whole(
    store: SQLStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    monkeypatch.setattr(interactions_module, "TEXT_PIECE", 7)
    text = (LONG * 10)[:length]
    html = f"<p>{text}</p>"
    item = inbound(message_id="<long@x>", text=text, html=html)
    [stored] = store.commit_fetched("support", "1", raw_of(MAIL), [item]).new
    readers = [
        lambda: [store.get_interaction(stored.id)],
        lambda: store.list_interactions(),
        lambda: store.find_by_message_id("<long@x>"),
        lambda: store.pending_handoffs(),
    ]
    for read in readers:
        [got] = read()
        assert got is not None and (got.text, got.html) == (text, html)
    pieces = max(0, (len(text) - 1) // 7) + max(0, (len(html) - 1) // 7)
    assert count(store, "interaction_bodies") == pieces
    outbound = Interaction(message_id="<out@x>", text=html, html=text)
    store.queue_outbound(outbound, OutboundRequest(to=["a@example.com"], text=html))
    got = store.get_interaction(outbound.id)
    assert got is not None and (got.text, got.html) == (html, text)


def test_a_missing_piece_of_a_text_is_an_error(
    store: SQLStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interactions_module, "TEXT_PIECE", 4)
    [stored] = store.commit_fetched("support", "1", raw_of(MAIL), [inbound(text="x" * 20)]).new
    store._write(lambda tx: tx.execute("DELETE FROM interaction_bodies WHERE seq = 2"))
    with pytest.raises(StoreError, match="piece 2 of its text is missing"):
        store.get_interaction(stored.id)


_STORE_MEMORY = """
import sys
from postroom.model import Interaction, RawRef
from postroom.store.sqlite import SQLiteStore

def peak():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM"))

folder, size = sys.argv[1], int(sys.argv[2])
store = SQLiteStore({"path": folder + "/store.sqlite"})
store.open()
open(folder + "/raw.eml", "wb").write(b"Subject: s\\r\\n\\r\\nbody\\r\\n")
raw = RawRef.from_path(folder + "/raw.eml")
text = "x" * size
before = peak()
store.commit_fetched("mb", "1", raw, [Interaction(mailbox="mb", text=text)])
print(peak() - before)
"""


def test_a_long_text_is_stored_without_more_copies(tmp_path: Path) -> None:
    """In a process of its own (peak RSS counts SQLite's memory too): storing
    a 20 MB text grows the peak by a few MB of buffers (0.27 times its size
    here); bound whole, it cost SQLite two more copies (2.0 times)."""
    size = 20 << 20
    done = subprocess.run(
        [sys.executable, "-c", _STORE_MEMORY, str(tmp_path), str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    growth = int(done.stdout.strip())
    assert growth < 0.5 * size, f"peak grew {growth / size:.2f} times the text's size"

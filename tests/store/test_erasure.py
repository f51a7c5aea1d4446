"""Erasure and retention in the store, against SQLite and PostgreSQL alike.

The erasure tests look for the address by reading every row of every table of
the database (plugins' too) and every raw chunk's bytes, with their own scan,
not the store's verification."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postroom.model import (
    DeliveryReport,
    HandoffOutcome,
    Interaction,
    OutboundAttachment,
    OutboundRequest,
    RawRef,
)
from postroom.store.errors import RawPurgedError
from postroom.store.sql import interactions as interactions_module
from postroom.store.sql.erasure import PLACEHOLDER
from postroom.store.sql.store import SQLStore
from postroom.store.sql.tombstones import ERASED
from postroom_autoreply import exchanges

MakeStore = Callable[..., SQLStore]
RawOf = Callable[[bytes], RawRef]

ADDRESS = "bob@example.org"
#: the address in lower-cased bytes, not as the end of another ("jimbob@...")
NEEDLE = re.compile(rb"(?<![a-z0-9._%+-])bob@example\.org(?![a-z0-9-])")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def every_value(store: SQLStore) -> list[tuple[str, str, Any]]:
    """(table, column, value) of every row of every table: an independent scan."""

    def work(tx: Any) -> list[tuple[str, str, Any]]:
        if store.dialect.name == "sqlite":
            tables = [r[0] for r in tx.all("SELECT name FROM sqlite_master WHERE type = 'table'")]
        else:
            tables = [
                r[0]
                for r in tx.all(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                )
            ]
        found = []
        for table in tables:
            tx._cursor.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in tx._cursor.description]
            for row in tx._cursor.fetchall():
                found.extend((table, name, value) for name, value in zip(names, row, strict=True))
        return found

    return store.run_in_transaction(work, write=False)


def traces(store: SQLStore, needle: re.Pattern[bytes] = NEEDLE) -> list[str]:
    """Where the address is, in any case, in any column (raw chunks' bytes too)."""
    hits = []
    for table, column, value in every_value(store):
        if isinstance(value, memoryview | bytes | bytearray):
            data = bytes(value).lower()
        elif value is None:
            continue
        else:
            data = str(value).lower().encode("utf-8", "surrogatepass")
        if needle.search(data):
            hits.append(f"{table}.{column}")
    return sorted(set(hits))


def snapshot(store: SQLStore) -> list[str]:
    return sorted(f"{t}.{c}={v!r}" for t, c, v in every_value(store))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def estore(make_store: MakeStore, clock: Clock) -> SQLStore:
    """A store with the autoreply plugin's tables and an injected clock."""
    store = make_store(open=False)
    store._now = clock
    found = exchanges.postroom_store_migrations(store.dialect_name)
    assert found is not None
    store.add_plugin_migrations(found)
    store.open()
    return store


def mail(sender: str, to: str, cc: str = "", body: str = "hello", mid: str = "<m@x>") -> bytes:
    lines = [f"From: {sender}", f"To: {to}", f"Message-ID: {mid}", "Subject: hi"]
    if cc:
        lines.append(f"Cc: {cc}")
    return ("\r\n".join(lines) + f"\r\n\r\n{body}\r\n").encode()


def commit(store: SQLStore, raw_of: RawOf, key: str, data: bytes, **fields: Any) -> Interaction:
    fields.setdefault("message_id", f"<{key}@x>")
    result = store.commit_fetched(
        "support", key, raw_of(data), [Interaction(mailbox="support", **fields)],
        message_id_check=True,
    )  # fmt: skip
    assert result.new, result
    return result.new[0]


def populate(store: SQLStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Bob's mail, mail naming Bob, and mail that does not; ids by name."""
    monkeypatch.setattr(interactions_module, "TEXT_PIECE", 64)
    ids = {}
    ids["from_bob"] = commit(
        store, raw_of, "1", mail("Bob <BOB@Example.ORG>", "support@c.example", mid="<1@x>"),
        from_addr="BOB@Example.ORG", to=["support@c.example"], subject="my order",
        text="please call me, Bob",
    ).id  # fmt: skip
    ids["cc_bob"] = commit(
        store, raw_of, "2",
        mail("alice@example.org", "support@c.example", cc="Bob@example.org", mid="<2@x>"),
        from_addr="alice@example.org", to=["support@c.example"], cc=["Bob@example.org"],
        subject="about bob@example.org", text="x" * 70 + " write to Bob@Example.org please",
        html="<p>" + "y" * 55 + " Bob@example.org</p>",  # across two pieces
        attached_data={"_DSNRawInfo.1.Final-Recipient": "rfc822; BOB@example.org"},
        names={"alice@example.org": "Alice Smith", "Bob@example.org": "Bob Builder"},
    ).id  # fmt: skip
    ids["other"] = commit(
        store,
        raw_of,
        "3",
        mail("carol@example.org", "support@c.example", mid="<3@x>"),
        from_addr="carol@example.org",
        to=["support@c.example"],
        text="unrelated; jimbob@example.org",
    ).id
    reply = store.queue_outbound(
        Interaction(
            message_id="<out@c.example>",
            to=[ADDRESS],
            subject="Re: my order",
            parent_id=ids["from_bob"],
        ),
        OutboundRequest(
            to=[ADDRESS],
            subject="Re: my order",
            text="hi Bob",
            attachments=[
                OutboundAttachment(
                    filename="a.txt",
                    data=b"for bob@example.org",
                    sha256=hashlib.sha256(b"for bob@example.org").hexdigest(),
                    size=19,
                )
            ],
        ),
    )
    ids["to_bob"] = reply.id
    shared = store.queue_outbound(
        Interaction(message_id="<out2@c.example>", to=["dan@example.org", ADDRESS]),
        OutboundRequest(to=["dan@example.org", ADDRESS], subject="both", text="hi"),
    )
    ids["to_both"] = shared.id
    store.mark_handoffs_done([ids["from_bob"], ids["cc_bob"], ids["other"]])
    # what hand-off targets, the event stream and delivery reports recorded of Bob
    refusal = "HTTP 410: no customer BOB@example.org"
    store.record_handoffs([
        HandoffOutcome(ids["from_bob"], "refused", {"webhook": ("refused", refusal)}),
        HandoffOutcome(ids["cc_bob"], "refused", {"webhook": ("refused", refusal)}),
    ])  # fmt: skip
    store.add_events([("interaction.sent", ids["to_both"], None, f"sent to {ADDRESS}")])
    store.record_delivery(ids["to_both"], ids["cc_bob"], [
        DeliveryReport(ADDRESS, "failed", "failed", f"5.1.1 <{ADDRESS}>: unknown user"),
        DeliveryReport("dan@example.org", "delivered", "relayed", f"2.0.0 not {ADDRESS}"),
    ])  # fmt: skip
    store.suppress("Bob@Example.org", "hard bounce", ids["cc_bob"])
    store.suppress("dan@example.org", "hard bounce", ids["from_bob"])

    def exchange(tx: Any) -> None:
        for address in (ADDRESS, "carol@example.org"):
            tx.execute(
                "INSERT INTO autoreply_exchanges (address, direction, at, interaction_id) "
                "VALUES (?, 'in', ?, ?)",
                (address, store.now(), ids["from_bob"] if address == ADDRESS else ids["other"]),
            )

    store.run_in_transaction(exchange)
    return ids


def erase_with_plugin(store: SQLStore, dry_run: bool = False) -> dict[str, int]:
    """The kernel's part and the autoreply plugin's, as ``postroom erase`` runs them."""
    plan = store.plan_erasure(ADDRESS)
    counts = store.plan_counts(plan) if dry_run else store.erase_address(ADDRESS, plan)

    def plugin(tx: Any) -> int:
        if dry_run:
            return int(tx.scalar("SELECT COUNT(*) FROM autoreply_exchanges WHERE address = ?",
                                 (ADDRESS,)))  # fmt: skip
        return tx.execute("DELETE FROM autoreply_exchanges WHERE address = ?", (ADDRESS,))

    counts["autoreply_exchanges"] = store.run_in_transaction(plugin, write=not dry_run)
    return counts


def test_erasure_leaves_no_trace_of_the_address_in_any_table_or_raw_message(
    estore: SQLStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = populate(estore, raw_of, monkeypatch)
    before = traces(estore)
    assert {"raw_chunks.data", "interactions.from_addr", "interaction_bodies.data",
            "suppressions.address", "autoreply_exchanges.address", "outbox.request",
            "handoff_targets.last_error", "events.reason", "outbound_delivery.recipient",
            "outbound_delivery.diagnostic", "dedupe_keys.key"} - set(before) == {
            "dedupe_keys.key"}  # fmt: skip
    counts = erase_with_plugin(estore)

    assert traces(estore) == []
    assert not [t for t, c, v in every_value(estore) if "Bob Builder" in str(v)]
    assert estore.find_address(ADDRESS) == {}
    assert counts["interactions"] == 2  # from Bob, and the reply only to Bob
    assert counts["suppressions"] == 1
    assert counts["autoreply_exchanges"] == 1
    # Bob's interactions are gone whole
    assert estore.get_interaction(ids["from_bob"]) is None
    assert estore.get_interaction(ids["to_bob"]) is None
    assert estore.get_outbox(ids["to_bob"]) is None
    # others' interactions stay, with a placeholder where Bob was
    kept = estore.get_interaction(ids["cc_bob"])
    assert kept is not None
    assert kept.cc == [PLACEHOLDER]
    assert kept.subject == f"about {PLACEHOLDER}"
    assert kept.text == "x" * 70 + f" write to {PLACEHOLDER} please"
    assert kept.html == "<p>" + "y" * 55 + f" {PLACEHOLDER}</p>"
    assert kept.attached_data["_DSNRawInfo.1.Final-Recipient"] == f"rfc822; {PLACEHOLDER}"
    assert kept.names == {"alice@example.org": "Alice Smith"}  # Bob's name went with him
    with pytest.raises(RawPurgedError, match="purged by an erasure"):
        estore.read_raw(ids["cc_bob"], io.BytesIO())
    both = estore.get_interaction(ids["to_both"])
    assert both is not None and both.to == ["dan@example.org", PLACEHOLDER]
    entry = estore.get_outbox(ids["to_both"])  # still queued: goes to Dan only
    assert entry is not None and entry.request.to == ["dan@example.org"]
    # what did not name Bob is untouched, raw bytes included ("jimbob" is someone else)
    other = estore.get_interaction(ids["other"])
    assert other is not None and other.text == "unrelated; jimbob@example.org"
    out = io.BytesIO()
    estore.read_raw(ids["other"], out)
    assert b"carol@example.org" in out.getvalue()
    assert estore.is_suppressed("dan@example.org") is not None
    assert estore.is_suppressed(ADDRESS) is None
    # the refusal recorded for a kept interaction names the placeholder
    (target,) = estore.handoff_targets(ids["cc_bob"])
    assert target.last_error == f"HTTP 410: no customer {PLACEHOLDER}"
    # a second run finds nothing more
    assert estore.erase_address(ADDRESS) == {}


def test_erased_mail_fetched_again_is_a_duplicate_and_nothing_is_stored(
    estore: SQLStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(estore, raw_of, monkeypatch)
    erase_with_plugin(estore)
    data = mail("Bob <BOB@Example.ORG>", "support@c.example", mid="<1@x>")

    assert estore.known_source_keys("support", ["1", "2", "3", "9"]) == {"1", "2", "3"}
    again = estore.commit_fetched(
        "support", "1", raw_of(data), [Interaction(message_id="<1@x>")], message_id_check=True
    )
    assert again.new == [] and [d.duplicate_of for d in again.duplicates] == [ERASED]
    # the same bytes under another source key (a cursor reset, another folder): still
    other_key = estore.commit_fetched("support", "77", raw_of(data), [Interaction()])
    assert other_key.new == [] and other_key.duplicates[0].duplicate_of == ERASED
    assert traces(estore) == []
    # new mail is still taken
    fresh = estore.commit_fetched(
        "support", "4", raw_of(b"Subject: new\r\n\r\nx\r\n"), [Interaction()]
    )
    assert len(fresh.new) == 1


def test_a_dry_run_changes_nothing_and_counts_what_would_go(
    estore: SQLStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(estore, raw_of, monkeypatch)
    before = snapshot(estore)
    counts = erase_with_plugin(estore, dry_run=True)
    assert snapshot(estore) == before
    assert counts["interactions"] == 2
    assert counts["interactions.rewritten"] == 2
    assert counts["raw_messages"] >= 2
    assert counts["suppressions"] == 1
    assert counts["autoreply_exchanges"] == 1
    assert estore.find_address(ADDRESS)  # still there
    real = erase_with_plugin(estore)
    assert real["interactions"] == counts["interactions"]


def test_the_audit_row_holds_a_keyed_hash_that_finds_it_again(
    estore: SQLStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(estore, raw_of, monkeypatch)
    assert estore.erasure_audits(ADDRESS) == []
    counts = erase_with_plugin(estore)
    digest = estore.record_erasure(ADDRESS, counts, {"autoreply": {"autoreply_exchanges": 1}}, True)
    assert digest != hashlib.sha256(ADDRESS.encode()).hexdigest()  # keyed, not a bare hash
    rows = estore.erasure_audits(ADDRESS)
    assert [(r["address_hash"], r["complete"], r["counts"]["interactions"]) for r in rows] == [
        (digest, True, 2)
    ]
    assert estore.erasure_audits("someone@example.org") == []
    assert traces(estore) == []


def test_retention_purges_old_raw_messages_and_keeps_young_and_needed_ones(
    estore: SQLStore, raw_of: RawOf, clock: Clock
) -> None:
    old_done = commit(estore, raw_of, "1", b"Subject: a\r\n\r\nold done\r\n").id
    old_pending = commit(estore, raw_of, "2", b"Subject: b\r\n\r\nold pending\r\n").id
    estore.mark_handoffs_done([old_done], [old_done])
    queued = estore.queue_outbound(
        Interaction(message_id="<q@c.example>", to=["x@example.org"]),
        OutboundRequest(to=["x@example.org"], attachments=[OutboundAttachment(
            filename="f.txt", data=b"file", sha256=hashlib.sha256(b"file").hexdigest(), size=4)]),
    )  # fmt: skip
    clock.now += timedelta(days=40)
    young = commit(estore, raw_of, "3", b"Subject: c\r\n\r\nyoung\r\n").id
    estore.mark_handoffs_done([young], [young])
    cutoff = clock.now - timedelta(days=30)

    assert estore.purge_raw(cutoff, dry_run=True) == {"raw_messages": 1}
    counts = estore.purge_raw(cutoff, limit=1)
    assert counts["raw_messages"] == 1 and counts["interactions.raw_purged"] == 1

    with pytest.raises(RawPurgedError, match="purged by the retention job on 2026-02-10"):
        estore.read_raw(old_done, io.BytesIO())
    assert estore.get_interaction(old_done) is not None  # the row stays
    for kept in (old_pending, young):
        estore.read_raw(kept, io.BytesIO())
    assert [f.filename for f in estore.read_outbound_files(queued.id)] == ["f.txt"]
    assert estore.purge_raw(cutoff) == {}


def test_retention_purges_whole_old_interactions_in_batches_and_keeps_tombstones(
    estore: SQLStore, raw_of: RawOf, clock: Clock
) -> None:
    old = [
        commit(estore, raw_of, str(n), f"Subject: {n}\r\n\r\nx\r\n".encode()).id for n in range(5)
    ]
    estore.mark_handoffs_done(old[:4], old[:4])
    sent = estore.queue_outbound(
        Interaction(message_id="<s@c.example>"), OutboundRequest(to=["x@y.example"])
    )
    estore.mark_outbound(sent.id, "sent")
    queued = estore.queue_outbound(
        Interaction(message_id="<q@c.example>"), OutboundRequest(to=["x@y.example"])
    )
    clock.now += timedelta(days=400)
    young = commit(estore, raw_of, "9", b"Subject: y\r\n\r\nx\r\n").id
    estore.mark_handoffs_done([young], [young])

    counts = estore.purge_interactions(clock.now - timedelta(days=365), limit=2)
    assert counts["interactions"] == 5  # four handed off, one sent
    assert counts["raw_messages"] == 4
    assert [estore.get_interaction(i) is None for i in old] == [True] * 4 + [False]
    assert estore.get_interaction(sent.id) is None
    assert estore.get_interaction(queued.id) is not None
    assert estore.get_interaction(young) is not None
    # the purged mail, still on the server, is not imported again
    assert estore.known_source_keys("support", ["0", "3", "4", "9", "10"]) == {"0", "3", "4", "9"}
    again = estore.commit_fetched(
        "support", "0", raw_of(b"Subject: 0\r\n\r\nx\r\n"), [Interaction()]
    )
    assert again.new == []
    rows = json.dumps(every_value(estore), default=str)
    assert "Subject: 0" not in rows


def test_rows_of_newer_tables_pointing_at_removed_interactions_go_with_them(
    estore: SQLStore, raw_of: RawOf, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """A table this code does not know (a later migration's, a plugin's) with a
    foreign key to interactions or the outbox: its rows do not block the removal."""

    def make(tx: Any) -> None:
        tx.execute(
            "CREATE TABLE later_targets (interaction_id TEXT NOT NULL "
            "REFERENCES interactions (id), target TEXT NOT NULL)"
        )
        tx.execute(
            "CREATE TABLE later_history (outbox_id TEXT NOT NULL REFERENCES outbox (id), "
            "note TEXT NOT NULL)"
        )

    estore.run_in_transaction(make)
    ids = populate(estore, raw_of, monkeypatch)

    def fill(tx: Any) -> None:
        for name in ("from_bob", "other"):
            tx.execute("INSERT INTO later_targets VALUES (?, 'amqp')", (ids[name],))
        for name in ("to_bob", "to_both"):
            tx.execute("INSERT INTO later_history VALUES (?, 'queued')", (ids[name],))

    estore.run_in_transaction(fill)
    counts = estore.erase_address(ADDRESS)
    assert counts["later_targets"] == 1 and counts["later_history"] == 1

    def left(tx: Any) -> list[Any]:
        return [
            *tx.all("SELECT interaction_id FROM later_targets"),
            *tx.all("SELECT outbox_id FROM later_history"),
        ]

    assert estore.run_in_transaction(left, write=False) == [(ids["other"],), (ids["to_both"],)]
    # retention takes them along too
    estore.mark_handoffs_done([ids["other"]], [ids["other"]])
    clock.now += timedelta(days=2)
    purged = estore.purge_interactions(clock.now - timedelta(days=1))
    assert purged["later_targets"] == 1

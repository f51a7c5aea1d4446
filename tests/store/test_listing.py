"""Listing interactions over 10,000 rows, on SQLite and PostgreSQL: every filter
and every page answers what a plain Python filter of the same rows says, and
id prefixes resolve by an index range."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from postroom.model import Interaction
from postroom.store.sql.listing import MAX_PAGE, ListFilter
from postroom.store.sql.store import SQLStore
from postroom.store.sqlite import SQLiteStore
from tests.store.conftest import MakeStore

COUNT = 10_000
START = datetime(2026, 11, 1, tzinfo=UTC)
STATUSES = ("New", "Sent", "Queued", "Failed")
SUBTYPES = (("Inbound", "InboundNew"), ("Inbound", "InboundNDR"), ("Outbound", "OutboundReply"))
SENDERS = ("anna@example.com", "Bob@Example.org", "c_d%e@example.net", None)


def made(n: int) -> Interaction:
    itype, subtype = SUBTYPES[n % 3]
    needle = " 50% off_sale" if n % 97 == 0 else ""
    return Interaction(
        type=itype,
        subtype=subtype,
        status=STATUSES[n % 4],
        mailbox=("support", "sales")[n % 2],
        subject=f"subject {n}{needle}",
        from_addr=SENDERS[n % 4],
        text=f"body of {n}" + (" Kündigung" if n % 101 == 0 else ""),
        html="<p>needle-in-html</p>" if n % 211 == 0 else None,
        # groups of 3 share a timestamp: pages must break ties by insertion order
        created_at=START + timedelta(seconds=(n // 3) * 60),
    )


@pytest.fixture
def filled(make_store: MakeStore) -> tuple[SQLStore, list[Interaction]]:
    store = make_store()
    items = [made(n) for n in range(COUNT)]
    random.Random(13).shuffle(items)  # inserted out of time order
    now = START

    def work(tx: Any) -> None:
        for item in items:
            store._insert_interaction(tx, item, None, now)

    store._write(work)
    return store, items


def expected(items: list[Interaction], keep: Any) -> list[str]:
    """Newest first; equal times: the later inserted first."""
    order = sorted(enumerate(items), key=lambda p: (p[1].created_at, p[0]), reverse=True)
    return [item.id for _, item in order if keep(item)]


def every_page(store: SQLStore, filters: ListFilter, limit: int) -> list[str]:
    ids: list[str] = []
    after = None
    pages = 0
    while True:
        page = store.find_interactions(filters, limit, after)
        assert len(page.interactions) <= limit
        ids.extend(i.id for i in page.interactions)
        pages += 1
        if page.next is None:
            return ids
        assert len(page.interactions) == limit  # a page is short only at the end
        after = page.next
        assert pages <= COUNT


CASES: list[tuple[str, ListFilter, Any]] = [
    ("all", ListFilter(), lambda i: True),
    ("status", ListFilter(status="Sent"), lambda i: i.status == "Sent"),
    ("type", ListFilter(type="Outbound"), lambda i: i.type == "Outbound"),
    ("subtype", ListFilter(subtype="InboundNDR"), lambda i: i.subtype == "InboundNDR"),
    ("mailbox", ListFilter(mailbox="sales"), lambda i: i.mailbox == "sales"),
    (
        "sender, any case",
        ListFilter(sender="bob@example.ORG"),
        lambda i: i.from_addr == "Bob@Example.org",
    ),
    (
        "dates",
        ListFilter(since=START + timedelta(hours=10), until=START + timedelta(hours=20)),
        lambda i: START + timedelta(hours=10) <= i.created_at < START + timedelta(hours=20),
    ),
    # % and _ are literal characters, not LIKE wildcards
    ("text in subject", ListFilter(text="50% OFF_sale"), lambda i: "50% off_sale" in i.subject),
    ("text in body", ListFilter(text="kündigung"), lambda i: "Kündigung" in (i.text or "")),
    ("text in html", ListFilter(text="NEEDLE-in"), lambda i: "needle-in" in (i.html or "")),
    ("no wildcard match", ListFilter(text="%"), lambda i: "%" in i.subject),
    (
        "combined",
        ListFilter(status="New", mailbox="support", text="subject 1"),
        lambda i: i.status == "New" and i.mailbox == "support" and "subject 1" in i.subject,
    ),
]


@pytest.mark.parametrize(("name", "filters", "keep"), CASES, ids=[c[0] for c in CASES])
def test_filters_and_pages_over_10000_interactions_answer_as_python_does(
    filled: tuple[SQLStore, list[Interaction]], name: str, filters: ListFilter, keep: Any
) -> None:
    store, items = filled
    want = expected(items, keep)
    assert want, "the case must select something"
    assert every_page(store, filters, 997) == want
    first = store.find_interactions(filters, 25)
    assert [i.id for i in first.interactions] == want[:25]
    assert (first.next is None) == (len(want) <= 25)
    # a listing leaves the bodies out
    assert all(i.text is None and i.html is None for i in first.interactions)


def test_a_page_is_capped(filled: tuple[SQLStore, list[Interaction]]) -> None:
    store, _ = filled
    page = store.find_interactions(None, MAX_PAGE + 5000)
    assert len(page.interactions) == MAX_PAGE and page.next is not None


def test_id_prefixes_resolve_by_range(filled: tuple[SQLStore, list[Interaction]]) -> None:
    store, items = filled
    target = items[4321].id
    assert store.match_ids(target) == [target]
    assert store.match_ids(target[:12].upper()) == [target]
    # a short prefix matches many: all of them start with it, in id order
    short = target[:2]
    found = store.match_ids(short, 10)
    assert target[:2] == short and len(found) == 10
    assert found == sorted(i.id for i in items if i.id.startswith(short))[:10]
    assert store.match_ids("zzzzzz") == [] and store.match_ids("'; drop") == []
    assert store.match_ids(target[:8] + "-") == ([target] if target[8] == "-" else [])


def test_the_sqlite_listing_walks_an_index(tmp_path: Path) -> None:
    """SQLite's plan (PostgreSQL plans by its statistics): each listing reads an
    index in order, no sort of the whole table."""
    store = SQLiteStore({"path": str(tmp_path / "plan.sqlite")})
    store.open()
    for sql, index in [
        ("WHERE i.status = 'New' ORDER BY i.created_at DESC, i.seq DESC", "interactions_status"),
        ("ORDER BY i.created_at DESC, i.seq DESC", "interactions_listing"),
        (
            "WHERE lower(i.from_addr) = 'a@b' ORDER BY i.created_at DESC, i.seq DESC",
            "interactions_sender",
        ),
    ]:
        plan = store._read(
            lambda tx, sql=sql: tx.all(f"EXPLAIN QUERY PLAN SELECT i.id FROM interactions i {sql}")
        )
        text = " ".join(str(row[-1]) for row in plan)
        assert index in text and "TEMP B-TREE" not in text, text
    store.close()

"""Listing interactions: postroom's filtered, cursor-paged listing against raw SQL.

    .venv/bin/python bench/listing.py [--count 10000] [--repeat 20] [--dsn DSN]

A store (SQLite in a temporary folder; PostgreSQL with ``--dsn``, in a schema
of its own, dropped after) is filled with *count* interactions (realistic
subjects and 1-4 KB text bodies, 4 statuses, 3 subtypes, 2 mailboxes, 50
senders). Each case then reads one page of 100, newest first:

* through postroom: ``store.find_interactions(filters, 100, after)`` (what
  ``GET /interactions`` and ``postroom interactions list`` run: the query,
  one more row to know whether a page follows, Interaction objects made);
* **baseline**: the same SELECT, WHERE and ORDER BY as raw SQL on the same
  database through the same connection, the rows left as tuples (what the
  database costs; the difference is postroom making Interaction objects).

Each case is timed first at the newest page and then *deep* (the page after
90 % of the matching rows, by cursor): keyset paging costs the same at any
depth. ``prefix`` is an 8-character id prefix resolved (``match_ids``). The text
filter reads rows (an escaped LIKE): its cost grows with the rows it scans.
Printed: median milliseconds per page of each and their ratio.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postroom.model import Interaction  # noqa: E402
from postroom.store.sql.listing import LIST_SELECT, ListFilter, like_pattern  # noqa: E402
from postroom.store.sql.store import SQLStore  # noqa: E402
from postroom.store.sqlite import SQLiteStore  # noqa: E402

WORDS = (
    "order", "invoice", "delivery", "refund", "account", "password", "contract", "meeting",
    "schedule", "payment", "address", "update", "question", "urgent", "thanks", "please",
    "customer", "support", "parcel", "missing",
)  # fmt: skip
START = datetime(2026, 1, 1, tzinfo=UTC)


def interactions(count: int, seed: int = 4711) -> list[Interaction]:
    rng = random.Random(seed)
    senders = [f"customer{n}@example{n % 7}.com" for n in range(50)]
    out = []
    for n in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 600)))
        itype, subtype = rng.choice(
            [("Inbound", "InboundNew")] * 6
            + [("Inbound", "InboundNDR"), ("Outbound", "OutboundReply")]
        )
        out.append(
            Interaction(
                type=itype,
                subtype=subtype,
                status=rng.choice(["New", "New", "Sent", "Failed"]),
                mailbox=rng.choice(["support", "sales"]),
                subject=" ".join(rng.choice(WORDS) for _ in range(6)) + f" #{n}",
                from_addr=rng.choice(senders),
                text=words + (" kündigung" if n % 500 == 0 else ""),
                created_at=START + timedelta(seconds=n * 37),
            )
        )
    return out


def fill(store: SQLStore, items: list[Interaction]) -> None:
    """Store *items* in transactions of 2,000 (no raw messages: the listing never reads them)."""
    for at in range(0, len(items), 2000):
        batch = items[at : at + 2000]

        def work(tx: Any, batch: list[Interaction] = batch) -> None:
            for item in batch:
                store._insert_interaction(tx, item, None, item.created_at)

        store._write(work)


CASES: list[tuple[str, ListFilter, str, list[Any]]] = [
    ("all", ListFilter(), "", []),
    ("status", ListFilter(status="Failed"), "i.status = ?", ["Failed"]),
    ("subtype", ListFilter(subtype="InboundNDR"), "i.subtype = ?", ["InboundNDR"]),
    ("mailbox", ListFilter(mailbox="sales"), "i.mailbox = ?", ["sales"]),
    (
        "sender",
        ListFilter(sender="customer7@example0.com"),
        "lower(i.from_addr) = ?",
        ["customer7@example0.com"],
    ),
    (
        "dates",
        ListFilter(since=START + timedelta(days=1), until=START + timedelta(days=2)),
        "i.created_at >= ? AND i.created_at < ?",
        [START + timedelta(days=1), START + timedelta(days=2)],
    ),
    (
        "text",
        ListFilter(text="kündigung"),
        "(lower(i.subject) LIKE ? ESCAPE '\\' OR lower(i.body_text) LIKE ? ESCAPE '\\' "
        "OR lower(i.body_html) LIKE ? ESCAPE '\\')",
        [like_pattern("kündigung")] * 3,
    ),
]


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm the cache
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def raw_page(store: SQLStore, where: str, params: list[Any], after: Any) -> Callable[[], Any]:
    clauses = [where] if where else []
    values = list(params)
    if after is not None:
        clauses.append("(i.created_at, i.seq) < (?, ?)")
        values += [after[0], after[1]]
    sql = LIST_SELECT
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY i.created_at DESC, i.seq DESC LIMIT 101"
    return lambda: store._read(lambda tx: tx.all(sql, values))


def deep_cursor(store: SQLStore, filters: ListFilter) -> Any:
    """The cursor of the page after 90 % of the matching rows."""
    after = None
    pages = []
    while True:
        page = store.find_interactions(filters, 1000, after)
        pages.append(page)
        if page.next is None:
            break
        after = page.next
    rows = [i for p in pages for i in p.interactions]
    if len(rows) < 20:
        return None
    mark = rows[int(len(rows) * 0.9) - 1]
    seq = store._read(lambda tx: tx.scalar("SELECT seq FROM interactions WHERE id = ?", (mark.id,)))
    return (mark.created_at, int(seq))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--dsn", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as folder:
        if args.dsn:
            from postroom_postgresql.store import PostgreSQLStore

            schema = f"bench_{uuid.uuid4().hex[:12]}"
            store: SQLStore = PostgreSQLStore({"dsn": args.dsn, "schema": schema})
        else:
            store = SQLiteStore({"path": str(Path(folder) / "bench.sqlite")})
        store.open()
        try:
            items = interactions(args.count)
            t0 = time.perf_counter()
            fill(store, items)
            if args.dsn:  # what autovacuum does soon after a bulk load: the planner's statistics
                store._write(lambda tx: tx.execute("ANALYZE interactions"))
            print(
                f"{store.dialect_name}: {args.count} interactions stored in "
                f"{time.perf_counter() - t0:.1f} s; pages of 100, median of {args.repeat}"
            )
            print(f"{'case':<10} {'depth':<6} {'postroom ms':>11} {'raw SQL ms':>10} {'ratio':>6}")
            for name, filters, where, params in CASES:
                for depth, after in (("newest", None), ("deep", deep_cursor(store, filters))):
                    if depth == "deep" and after is None:
                        continue
                    ours = median_ms(
                        lambda f=filters, a=after: store.find_interactions(f, 100, a), args.repeat
                    )
                    raw = median_ms(raw_page(store, where, params, after), args.repeat)
                    print(f"{name:<10} {depth:<6} {ours:>11.2f} {raw:>10.2f} {ours / raw:>6.2f}")
            prefix = items[len(items) // 2].id[:8]
            ours = median_ms(lambda: store.match_ids(prefix), args.repeat)
            raw = median_ms(
                lambda: store._read(
                    lambda tx: tx.all("SELECT id FROM interactions WHERE id = ?", (items[0].id,))
                ),
                args.repeat,
            )
            print(f"{'prefix':<10} {'-':<6} {ours:>11.2f} {raw:>10.2f} {ours / raw:>6.2f}")
        finally:
            if args.dsn:
                store._write(lambda tx: tx.execute(f"DROP SCHEMA {schema} CASCADE"))
            store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

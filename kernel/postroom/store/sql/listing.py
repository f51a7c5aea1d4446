"""Finding interactions: id prefixes, and filtered listings paged by cursor.

- :meth:`InteractionListing.match_ids`: the ids starting with a prefix, by a
  range on the unique index of ``id`` (``id >= p AND id < p_next``), so a
  look-up costs one index probe on SQLite and PostgreSQL alike;
- :meth:`InteractionListing.find_interactions`: newest first by
  ``(created_at, seq)``, filtered, at most one page; the next page starts
  after the last row's ``(created_at, seq)`` (keyset paging: every page costs
  the same however deep it is). Migration 0011 gives each equality filter an
  index ending in ``(created_at, seq)``; the text filter is an escaped,
  case-insensitive ``LIKE`` over the subject and the first piece of the
  bodies (:data:`~postroom.store.sql.interactions.TEXT_PIECE` characters),
  which reads the rows the other filters leave: linear in those.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from postroom.model import Interaction
from postroom.store.sql.interactions import INTERACTION_SELECT, InteractionRecords
from postroom.store.sql.tx import Tx

#: the most interactions one page holds
MAX_PAGE = 1000

#: the characters of an interaction id (a UUID as text)
ID_CHARS = frozenset("0123456789abcdef-")

#: a listing's rows without their bodies (``text``/``html`` are None): a page of
#: large mails must not read every body
LIST_SELECT = (
    "SELECT i.seq, i.id, i.tenant_id, i.type, i.subtype, i.status, i.parent_id, i.mailbox, "
    "i.message_id, i.subject, i.from_addr, i.to_addrs, i.cc_addrs, NULL, NULL, "
    "i.attachments, i.attached_data, i.copy_key, i.raw_sha256, i.created_at, "
    "i.reply_to_addrs, i.refs, i.sent_date, h.state, 0, 0, i.display_names "
    "FROM interactions i LEFT JOIN handoffs h ON h.interaction_id = i.id"
)
assert INTERACTION_SELECT.startswith("SELECT i.id, i.tenant_id")  # the same columns in order


@attrs.frozen
class ListFilter:
    """What a listing keeps (every given filter must hold). Strings are compared
    exactly, except *sender* (case-insensitively) and *text* (a case-insensitive
    substring of the subject or the bodies; SQLite folds ASCII letters only)."""

    status: str | None = None
    type: str | None = None
    subtype: str | None = None
    mailbox: str | None = None
    #: stored at or after / before (``created_at``)
    since: datetime | None = None
    until: datetime | None = None
    sender: str | None = None
    text: str | None = None


@attrs.frozen
class Page:
    """One page of a listing, newest first; *next* is ``(created_at, seq)`` of
    its last row when more may follow, else None."""

    interactions: list[Interaction]
    next: tuple[datetime, int] | None


def like_pattern(text: str) -> str:
    """*text* as a ``LIKE ... ESCAPE '\\'`` substring pattern, lower case."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """``(low, high)`` with every id starting with *prefix* in ``low <= id < high``
    (*prefix* of :data:`ID_CHARS`, so its last character has a successor)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


class InteractionListing(InteractionRecords):
    """Id prefixes and listings over ``interactions``."""

    def match_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Up to *limit* ids starting with *prefix* (lower-cased), in id order;
        [] for a prefix that holds other characters than an id's."""
        prefix = prefix.lower()
        if not prefix or not set(prefix) <= ID_CHARS:
            return []
        low, high = prefix_bounds(prefix)
        rows = self._read(
            lambda tx: tx.all(
                "SELECT id FROM interactions WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                (low, high, limit),
            )
        )
        # the range is exact for ids of one shape; the check keeps it so under any collation
        return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]

    def find_interactions(
        self,
        filters: ListFilter | None = None,
        limit: int = 100,
        after: tuple[datetime, int] | None = None,
    ) -> Page:
        """At most *limit* (capped at :data:`MAX_PAGE`) interactions matching
        *filters*, newest first, older than *after* (a page's ``next``) when given.
        Their ``text`` and ``html`` are not read (None)."""
        f = filters or ListFilter()
        limit = max(1, min(int(limit), MAX_PAGE))
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("i.status", f.status),
            ("i.type", f.type),
            ("i.subtype", f.subtype),
            ("i.mailbox", f.mailbox),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if f.sender is not None:
            where.append("lower(i.from_addr) = ?")
            params.append(f.sender.lower())
        if f.since is not None:
            where.append("i.created_at >= ?")
            params.append(f.since)
        if f.until is not None:
            where.append("i.created_at < ?")
            params.append(f.until)
        if f.text:
            pattern = like_pattern(f.text)
            where.append(
                "(lower(i.subject) LIKE ? ESCAPE '\\' OR lower(i.body_text) LIKE ? ESCAPE '\\' "
                "OR lower(i.body_html) LIKE ? ESCAPE '\\')"
            )
            params.extend([pattern] * 3)
        if after is not None:
            # a row value: both databases read it as one range of the index
            where.append("(i.created_at, i.seq) < (?, ?)")
            params.extend([after[0], int(after[1])])
        sql = LIST_SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY i.created_at DESC, i.seq DESC LIMIT ?"
        params.append(limit + 1)  # one more: is there a next page?

        def work(tx: Tx) -> Page:
            rows = tx.all(sql, params)
            more = len(rows) > limit
            rows = rows[:limit]
            found = [self._interaction(tx, row[1:]) for row in rows]
            last = (self._dt_value(rows[-1][19]), int(rows[-1][0])) if more else None
            return Page(found, last)

        return self._read(work)

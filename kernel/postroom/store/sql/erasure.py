"""Erasing a person: every row that names an address, and the raw bytes that do.

:meth:`ErasureRecords.erase_address` takes a normalised address (lower case,
ASCII domain: :func:`postroom.erasure.normalize`) and

- removes *their* interactions whole (:meth:`PurgeRecords._remove_interactions`:
  body pieces, hand-off row, outbox entry and files, raw message, dedupe keys
  kept only as tombstones): those sent by the address, and those whose every
  recipient (To, Cc, and an outbox entry's Bcc) is the address;
- in every other row that names it (other interactions' recipients, Reply-To,
  subject, texts and their pieces, attachment names, attached data such as a
  report's ``Final-Recipient``, Message-IDs; hand-off and outbox errors, outbox
  requests, failures, quarantine reasons, suppression reasons, mailbox states)
  replaces it with :data:`PLACEHOLDER`;
- deletes every raw message whose bytes still name it (the interaction stays,
  marked ``raw_purged_reason = 'erasure'``) and its suppression-list entry.

Each step is its own short transaction and each is idempotent: an erasure that
stopped half-way is completed by running it again. :meth:`find_address` looks
for the address in every text column of every table (plugins' too) and in every
raw message, to verify it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import attrs

from postroom.store.sql import interactions
from postroom.store.sql.interactions import INTERACTION_SELECT, more_pieces
from postroom.store.sql.purge import UNSENT, PurgeRecords, _add, marks
from postroom.store.sql.tx import Tx
from postroom.store.sql.values import to_json

#: what the address becomes where a row is kept (``.invalid`` never delivers: RFC 2606)
PLACEHOLDER = "erased@erased.invalid"

#: characters that may stand right before or after an address and be part of another
_LOCAL = r"\w.!#$%&'*+/=?^`{|}~-"

#: interaction columns that may name a person (scrubbed in kept interactions)
_INTERACTION_TEXT = (
    "subject", "from_addr", "to_addrs", "cc_addrs", "reply_to_addrs", "body_text",
    "body_html", "attachments", "attached_data", "message_id", "refs", "display_names",
)  # fmt: skip

#: other kernel tables' columns that may name a person: (table, key columns, text columns)
_OTHER_TEXT: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("handoffs", ("interaction_id",), ("last_error", "after_commit_error")),
    ("handoff_targets", ("interaction_id", "target"), ("last_error",)),
    ("events", ("seq",), ("reason",)),
    ("outbox_attempts", ("outbox_id", "seq"), ("error", "reply", "refused")),
    ("outbound_delivery", ("outbound_id", "recipient"), ("diagnostic",)),
    ("outbox", ("id",), ("last_error", "request", "message_id")),
    ("failures", ("mailbox", "source_key"), ("last_reason",)),
    ("quarantine", ("id",), ("reason",)),
    ("suppressions", ("address",), ("reason",)),
    ("mailbox_states", ("mailbox",), ("reason",)),
)

#: tables in _OTHER_TEXT whose rows go with an erased interaction (key's first column)
_GOES_WITH_INTERACTION = frozenset(
    {"handoffs", "handoff_targets", "outbox", "outbox_attempts", "outbound_delivery"}
)


def text_pattern(address: str) -> re.Pattern[str]:
    """*address* anywhere in a text, any case, not as part of a longer address."""
    return re.compile(rf"(?<![{_LOCAL}]){re.escape(address)}(?![\w-]|\.[\w-])", re.IGNORECASE)


def bytes_pattern(address: str) -> re.Pattern[bytes]:
    """The same for raw bytes (any case for ASCII letters)."""
    local = _LOCAL.encode("ascii").replace(b"\\w", b"A-Za-z0-9_")
    return re.compile(
        b"(?<!["
        + local
        + b"])"
        + re.escape(address.encode("utf-8"))
        + rb"(?![A-Za-z0-9_-]|\.[A-Za-z0-9_-])",
        re.IGNORECASE,
    )


def like_pattern(address: str) -> str:
    """A LIKE pattern (escape ``\\``) finding rows whose lower-cased text contains *address*."""
    escaped = address.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@attrs.define
class ErasurePlan:
    """What an erasure of one address finds: the rows it deletes and those it rewrites."""

    #: interactions removed whole
    interactions: list[str] = attrs.field(factory=list)
    #: kept interactions that name the address
    scrub_interactions: list[str] = attrs.field(factory=list)
    #: table -> keys of rows of other tables that name it
    scrub_rows: dict[str, list[tuple[Any, ...]]] = attrs.field(factory=dict)
    #: raw messages whose bytes name it
    raws: list[str] = attrs.field(factory=list)
    #: the address is on the suppression list
    suppressed: bool = False


class ErasureRecords(PurgeRecords):
    """Erasure, its verification, and its audit rows."""

    # ------------------------------------------------------------- planning

    def plan_erasure(self, address: str) -> ErasurePlan:
        """Find everything naming *address* (normalised), changing nothing."""
        words = text_pattern(address)
        like = like_pattern(address)
        plan = ErasurePlan()
        where = " OR ".join(f"lower(i.{c}) LIKE ? ESCAPE '\\'" for c in _INTERACTION_TEXT)
        rows = self._read(
            lambda tx: tx.all(
                "SELECT i.id, i.from_addr, i.to_addrs, i.cc_addrs, o.request, "
                + ", ".join(f"i.{c}" for c in _INTERACTION_TEXT)
                + f" FROM interactions i LEFT JOIN outbox o ON o.id = i.id WHERE {where} "
                "ORDER BY i.seq",
                [like] * len(_INTERACTION_TEXT),
            )
        )
        for iid, from_addr, to, cc, request, *texts in rows:
            recipients = [*json.loads(to), *json.loads(cc)]
            if request is not None:
                recipients += json.loads(request).get("bcc") or []
            theirs = _is(words, from_addr) or (
                bool(recipients) and all(_is(words, r) for r in recipients)
            )
            if theirs:
                plan.interactions.append(str(iid))
            elif any(t is not None and words.search(str(t)) for t in texts):
                plan.scrub_interactions.append(str(iid))
        gone = set(plan.interactions)
        # texts in pieces: the address may straddle two pieces, so read them whole
        pieced = self._read(
            lambda tx: tx.all(
                "SELECT id FROM interactions WHERE text_more > 0 OR html_more > 0 ORDER BY seq"
            )
        )
        known = gone | set(plan.scrub_interactions)
        for (iid,) in pieced:
            if iid in known:
                continue
            whole = self.get_interaction(str(iid))
            if whole is not None and any(words.search(t or "") for t in (whole.text, whole.html)):
                plan.scrub_interactions.append(str(iid))
        for table, key, columns in _OTHER_TEXT:
            found = self._read(
                partial(
                    self._rows_naming, table=table, key=key, columns=columns, like=like, words=words
                )
            )
            if table in _GOES_WITH_INTERACTION:
                found = [k for k in found if k[0] not in gone]
            if found:
                plan.scrub_rows[table] = found
        plan.raws = self._raws_naming(address)
        plan.suppressed = bool(
            self._read(
                lambda tx: tx.scalar("SELECT 1 FROM suppressions WHERE address = ?", (address,))
            )
        )
        return plan

    def _rows_naming(
        self,
        tx: Tx,
        table: str,
        key: tuple[str, ...],
        columns: tuple[str, ...],
        like: str,
        words: re.Pattern[str],
    ) -> list[tuple[Any, ...]]:
        where = " OR ".join(f"lower({c}) LIKE ? ESCAPE '\\'" for c in columns)
        rows = tx.all(
            f"SELECT {', '.join(key)}, {', '.join(columns)} FROM {table} WHERE {where}",
            [like] * len(columns),
        )
        return [
            tuple(row[: len(key)]) for row in rows
            if any(v is not None and words.search(str(v)) for v in row[len(key):])
        ]  # fmt: skip

    def _raws_naming(self, address: str) -> list[str]:
        """Every raw message whose bytes name *address*: each read a chunk at a time."""
        needle = bytes_pattern(address)
        keep = len(address.encode("utf-8")) + 2  # an address split between two chunks
        found = []
        for raw_id in self._all_raw_ids():
            tail = b""
            seq = 0
            while (data := self._chunk(raw_id, seq)) is not None:
                if needle.search(tail + data):
                    found.append(raw_id)
                    break
                tail = (tail + data)[-keep:]
                seq += 1
        return found

    def _all_raw_ids(self) -> Iterator[str]:
        after = ""
        while True:
            batch = self._read(
                partial(
                    Tx.all,
                    sql="SELECT id FROM raw_messages WHERE id > ? ORDER BY id LIMIT 500",
                    params=(after,),
                )
            )
            for (raw_id,) in batch:
                yield str(raw_id)
            if len(batch) < 500:
                return
            after = str(batch[-1][0])

    # -------------------------------------------------------------- erasing

    def plan_counts(self, plan: ErasurePlan) -> dict[str, int]:
        """Rows per table an erasure following *plan* deletes or rewrites."""

        def work(tx: Tx) -> dict[str, int]:
            counts: dict[str, int] = {}
            for start in range(0, len(plan.interactions), 500):
                ids = plan.interactions[start : start + 500]
                m = marks(ids)
                part = {
                    "interactions": len(ids),
                    "interaction_bodies": tx.scalar(
                        f"SELECT COUNT(*) FROM interaction_bodies WHERE interaction_id IN ({m})",
                        ids,
                    ),
                    "handoffs": tx.scalar(
                        f"SELECT COUNT(*) FROM handoffs WHERE interaction_id IN ({m})", ids
                    ),
                    "outbox": tx.scalar(f"SELECT COUNT(*) FROM outbox WHERE id IN ({m})", ids),
                    "outbox_files": tx.scalar(
                        f"SELECT COUNT(*) FROM outbox_files WHERE outbox_id IN ({m})", ids
                    ),
                    "dedupe_keys": tx.scalar(
                        f"SELECT COUNT(*) FROM dedupe_keys WHERE interaction_id IN ({m})", ids
                    ),
                }
                _add(counts, {k: int(v) for k, v in part.items() if v})
            return counts

        counts = self._read(work)
        extra = {
            "interactions.rewritten": len(plan.scrub_interactions),
            "raw_messages": len(plan.raws),
            "suppressions": int(plan.suppressed),
        }
        extra.update({f"{t}.rewritten": len(keys) for t, keys in plan.scrub_rows.items()})
        _add(counts, {k: v for k, v in extra.items() if v})
        return counts

    def erase_address(
        self,
        address: str,
        plan: ErasurePlan | None = None,
        dry_run: bool = False,
        limit: int = 100,
    ) -> dict[str, int]:
        """Erase *address* (normalised) from the kernel's tables, following *plan*
        (:meth:`plan_erasure`, made now when not given); counts per table.

        With *dry_run*, counts what would be deleted or rewritten and changes nothing.
        """
        if plan is None:
            plan = self.plan_erasure(address)
        if dry_run:
            return self.plan_counts(plan)
        words = text_pattern(address)
        counts: dict[str, int] = {}
        for start in range(0, len(plan.interactions), limit):
            ids = plan.interactions[start : start + limit]
            _add(counts, self._write(partial(self._remove_erased, ids=ids)))
        for iid in plan.scrub_interactions:
            _add(counts, self._write(partial(self._scrub_interaction, iid=iid, words=words)))
        for table, keys in plan.scrub_rows.items():
            spec = next(s for s in _OTHER_TEXT if s[0] == table)
            for key in keys:
                _add(counts, self._write(partial(self._scrub_row, spec=spec, key=key, words=words)))
        # the raws of removed interactions went with them (a second delete finds nothing)
        for start in range(0, len(plan.raws), limit):
            batch = plan.raws[start : start + limit]
            _add(counts, self._write(partial(self._drop_raws, raw_ids=batch, reason="erasure")))
        _add(
            counts,
            {
                "suppressions": self._write(
                    lambda tx: tx.execute("DELETE FROM suppressions WHERE address = ?", (address,))
                ),
                # an erased recipient of a kept outbound interaction: its delivery row
                "outbound_delivery": self._write(
                    lambda tx: tx.execute(
                        "DELETE FROM outbound_delivery WHERE recipient = ?", (address,)
                    )
                ),
                # events of the removed interactions (no foreign key: they outlive rows)
                "events": self._write(partial(self._drop_events, ids=plan.interactions)),
            },
        )
        return {key: value for key, value in counts.items() if value}

    def _drop_events(self, tx: Tx, ids: Sequence[str]) -> int:
        dropped = 0
        for start in range(0, len(ids), 500):
            batch = list(ids[start : start + 500])
            dropped += tx.execute(
                f"DELETE FROM events WHERE interaction_id IN ({marks(batch)})", batch
            )
        return dropped

    def _remove_erased(self, tx: Tx, ids: Sequence[str]) -> dict[str, int]:
        m = marks(ids)
        # a suppression put there by an erased report keeps its address, not the link
        tx.execute(
            f"UPDATE suppressions SET interaction_id = NULL WHERE interaction_id IN ({m})", ids
        )
        return self._remove_interactions(tx, ids)

    def _scrub_interaction(self, tx: Tx, iid: str, words: re.Pattern[str]) -> dict[str, int]:
        """Replace the address in a kept interaction's columns and whole texts."""
        columns = ", ".join(_INTERACTION_TEXT)
        row = tx.one(f"SELECT {columns} FROM interactions WHERE id = ?", (iid,))
        if row is None:
            return {}
        values = [None if v is None else words.sub(PLACEHOLDER, str(v)) for v in row]
        # the erased person's display name goes with their address
        names_at = _INTERACTION_TEXT.index("display_names")
        names = json.loads(values[names_at] or "{}")
        values[names_at] = json.dumps({a: n for a, n in names.items() if a != PLACEHOLDER})
        sets = ", ".join(f"{c} = ?" for c in _INTERACTION_TEXT)
        changed = tx.execute(f"UPDATE interactions SET {sets} WHERE id = ?", (*values, iid))
        found = tx.all(f"{INTERACTION_SELECT} WHERE i.id = ?", (iid,))
        whole = self._interactions(tx, found)[0]
        if whole.text is None and whole.html is None:
            return {"interactions.rewritten": changed}
        pieces = tx.execute("DELETE FROM interaction_bodies WHERE interaction_id = ?", (iid,))
        text = None if whole.text is None else words.sub(PLACEHOLDER, whole.text)
        html = None if whole.html is None else words.sub(PLACEHOLDER, whole.html)
        tx.execute(
            "UPDATE interactions SET body_text = ?, body_html = ?, text_more = ?, "
            "html_more = ? WHERE id = ?",
            (
                None if text is None else text[: interactions.TEXT_PIECE],
                None if html is None else html[: interactions.TEXT_PIECE],
                more_pieces(text),
                more_pieces(html),
                iid,
            ),
        )
        self._insert_pieces(tx, iid, text, html)
        return {"interactions.rewritten": changed, "interaction_bodies.rewritten": pieces}

    def _scrub_row(
        self,
        tx: Tx,
        spec: tuple[str, tuple[str, ...], tuple[str, ...]],
        key: tuple[Any, ...],
        words: re.Pattern[str],
    ) -> dict[str, int]:
        table, key_columns, columns = spec
        where = " AND ".join(f"{c} = ?" for c in key_columns)
        row = tx.one(f"SELECT {', '.join(columns)} FROM {table} WHERE {where}", key)
        if row is None:
            return {}
        if table == "outbox":
            row = (*row[:1], _unaddressed(tx, key[0], row[1], words), *row[2:])
        values = [None if v is None else words.sub(PLACEHOLDER, str(v)) for v in row]
        sets = ", ".join(f"{c} = ?" for c in columns)
        changed = tx.execute(f"UPDATE {table} SET {sets} WHERE {where}", (*values, *key))
        return {f"{table}.rewritten": changed}

    # ---------------------------------------------------------- verifying

    def find_address(self, address: str) -> dict[str, int]:
        """Where *address* (normalised) is still found: ``table.column`` -> rows,
        over every text column of every table of the store's database (plugins'
        tables too), and ``raw_messages`` -> raw messages whose bytes name it.
        Empty after a complete erasure."""
        words = text_pattern(address)
        like = like_pattern(address)
        found: dict[str, int] = {}
        for table, column in self._read(self.dialect.text_columns):
            sql = (
                f'SELECT CAST("{column}" AS TEXT) FROM "{table}" '
                f"WHERE lower(CAST(\"{column}\" AS TEXT)) LIKE ? ESCAPE '\\'"
            )
            values = self._read(lambda tx: tx.all(sql, (like,)))  # noqa: B023
            hits = sum(1 for (value,) in values if value is not None and words.search(value))
            if hits:
                found[f"{table}.{column}"] = hits
        raws = self._raws_naming(address)
        if raws:
            found["raw_messages"] = len(raws)
        return found

    # -------------------------------------------------------------- audit

    def address_hash(self, address: str, create: bool = False) -> str | None:
        """The keyed hash an audit row records for *address* (normalised); None
        before the store's first erasure (no key yet) unless *create*."""
        secret = (
            self._write(lambda tx: self._secret(tx, create))
            if create
            else self._read(lambda tx: self._secret(tx))
        )
        return None if secret is None else self._keyed_hash(secret, "address", address)

    def record_erasure(
        self, address: str, counts: dict[str, int], plugins: dict[str, Any], complete: bool
    ) -> str:
        """Write the audit row of an erasure of *address*; its address hash."""
        digest = self.address_hash(address, create=True)
        assert digest is not None

        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO erasure_audit (at, address_hash, complete, counts, plugins) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    self._dt_param(self.now()),
                    digest,
                    bool(complete),
                    json.dumps(counts, sort_keys=True),
                    json.dumps(plugins, sort_keys=True),
                ),
            )

        self._write(work)
        return digest

    def erasure_audits(self, address: str) -> list[dict[str, Any]]:
        """The audit rows of erasures of *address* (normalised), oldest first."""
        digest = self.address_hash(address)
        if digest is None:
            return []
        rows = self._read(
            lambda tx: tx.all(
                "SELECT at, complete, counts, plugins FROM erasure_audit "
                "WHERE address_hash = ? ORDER BY at, id",
                (digest,),
            )
        )
        return [
            {
                "at": self._dt_value(at).isoformat(),
                "address_hash": digest,
                "complete": bool(complete),
                "counts": json.loads(counts),
                "plugins": json.loads(plugins),
            }
            for at, complete, counts, plugins in rows
        ]


def _unaddressed(tx: Tx, entry_id: str, request: str, words: re.Pattern[str]) -> str:
    """A queued (or sending) entry's request without the erased recipient: its
    mail goes to the others only, never to the placeholder."""
    state = tx.scalar("SELECT state FROM outbox WHERE id = ?", (entry_id,))
    if state not in UNSENT:
        return request
    data = json.loads(request)
    for field in ("to", "cc", "bcc"):
        if isinstance(data.get(field), list):
            data[field] = [a for a in data[field] if not _is(words, a)]
    return to_json(data)


def _is(words: re.Pattern[str], value: Any) -> bool:
    """Whether a one-address field is the address (``Name <addr>`` too)."""
    return value is not None and words.search(str(value)) is not None

"""Interactions: the unit of work that stores a fetched message, and the look-ups.

- one transaction per fetched message (:meth:`InteractionRecords.commit_fetched`),
  so a crash anywhere leaves either everything or nothing, and the source
  acknowledges a message only after that;
- dedupe keys are rows of ``dedupe_keys`` whose primary key is the key: two
  processes racing on the same message cannot both insert it, the loser's
  transaction fails and is run again, and then sees the winner's key;
- an interaction's text or HTML longer than :data:`TEXT_PIECE` characters is
  stored as pieces (the row keeps the first, ``interaction_bodies`` the rest)
  and read back by growing the text in place: a database driver binding or
  fetching one 50 MB value holds two or three more copies of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from postroom.model import (
    Attachment,
    CommitResult,
    Cursor,
    EventType,
    HandoffState,
    Interaction,
    RawRef,
)
from postroom.safe_names import unique_safe_names
from postroom.store.errors import FencingError, RawPurgedError, StoreError
from postroom.store.sql.core import Writable
from postroom.store.sql.events import insert_events
from postroom.store.sql.raw import RawRecords
from postroom.store.sql.tombstones import ERASED, TombstoneRecords
from postroom.store.sql.tx import Row, Tx
from postroom.store.sql.values import known_fields, to_json

#: Interaction texts longer than this many characters are stored in pieces this long.
TEXT_PIECE = 1 << 20

#: Longer dedupe keys are stored as a digest (see :func:`dedupe_keys`).
MAX_KEY_BYTES = 1000


def dedupe_keys(
    mailbox: str,
    source_key: str,
    sha256: str,
    interaction: Interaction,
    message_id_check: bool,
) -> list[str]:
    """The keys that make *interaction* a duplicate, in the order they are checked.

    A key longer than :data:`MAX_KEY_BYTES` (a hostile Message-ID, say) is
    stored as ``<kind>~<sha256 of the key>``, since index entries are bounded
    (PostgreSQL's btree: about 2.7 kB); ``~`` keeps it apart from plain keys.
    """
    keys = [f"src:{mailbox}:{source_key}", f"sha:{sha256}"]
    if message_id_check and interaction.message_id:
        keys.append(f"mid:{interaction.message_id}")
    if interaction.copy_key is not None:
        keys = [f"{key}#{interaction.copy_key}" for key in keys]
    return [bounded_key(key) for key in keys]


def bounded_key(key: str) -> str:
    data = key.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_KEY_BYTES:
        return key
    return f"{key[:3]}~{hashlib.sha256(data).hexdigest()}"


def more_pieces(text: str | None) -> int:
    """How many pieces after the first a text is stored in (0: all in its row)."""
    return 0 if text is None else max(0, (len(text) - 1) // TEXT_PIECE)


INTERACTION_COLUMNS = (
    "id, tenant_id, type, subtype, status, parent_id, mailbox, message_id, subject, "
    "from_addr, to_addrs, cc_addrs, body_text, body_html, attachments, attached_data, "
    "copy_key, raw_sha256, created_at, reply_to_addrs, refs, sent_date, display_names"
)
INTERACTION_SELECT = (
    "SELECT i.id, i.tenant_id, i.type, i.subtype, i.status, i.parent_id, i.mailbox, "
    "i.message_id, i.subject, i.from_addr, i.to_addrs, i.cc_addrs, i.body_text, "
    "i.body_html, i.attachments, i.attached_data, i.copy_key, i.raw_sha256, "
    "i.created_at, i.reply_to_addrs, i.refs, i.sent_date, h.state, i.text_more, "
    "i.html_more, i.display_names "
    "FROM interactions i LEFT JOIN handoffs h ON h.interaction_id = i.id"
)


class InteractionRecords(RawRecords, TombstoneRecords):
    """``interactions``, their dedupe keys, body pieces and cursors."""

    def _interaction_params(self, item: Interaction, raw_id: str | None, now: datetime) -> tuple:
        return (
            item.id,
            item.tenant_id,
            item.type,
            item.subtype,
            item.status,
            item.parent_id,
            item.mailbox,
            item.message_id,
            item.subject,
            item.from_addr,
            to_json(list(item.to)),
            to_json(list(item.cc)),
            item.text[:TEXT_PIECE] if item.text is not None else None,
            item.html[:TEXT_PIECE] if item.html is not None else None,
            to_json([attrs.asdict(attachment) for attachment in item.attachments]),
            to_json(dict(item.attached_data)),
            item.copy_key,
            item.raw_sha256,
            self._dt_param(item.created_at),
            to_json(list(item.reply_to)),
            to_json(list(item.references)),
            # text with the sender's offset: a timestamp column would keep UTC only
            item.date.isoformat() if item.date is not None else None,
            to_json(dict(item.names)),
            raw_id,
            self._dt_param(now),
            more_pieces(item.text),
            more_pieces(item.html),
        )

    def _insert_interaction(
        self, tx: Tx, item: Interaction, raw_id: str | None, now: datetime
    ) -> None:
        tx.execute(
            f"INSERT INTO interactions ({INTERACTION_COLUMNS}, raw_id, stored_at, text_more, "
            f"html_more) VALUES ({', '.join(['?'] * 27)})",
            self._interaction_params(item, raw_id, now),
        )
        self._insert_pieces(tx, item.id, item.text, item.html)

    def _insert_pieces(
        self, tx: Tx, interaction_id: str, text: str | None, html: str | None
    ) -> None:
        """The pieces after the first of the texts (the row keeps the first)."""
        for field, value in (("text", text), ("html", html)):
            for seq in range(1, more_pieces(value) + 1):
                assert value is not None
                tx.execute(
                    "INSERT INTO interaction_bodies (interaction_id, field, seq, data) "
                    "VALUES (?, ?, ?, ?)",
                    (interaction_id, field, seq, value[seq * TEXT_PIECE : (seq + 1) * TEXT_PIECE]),
                )

    def _rest(self, tx: Tx, interaction_id: str, field: str, first: str, more: int) -> str:
        """A text stored in pieces: *first* and its *more* pieces. After the first
        append the text is referenced only here, so CPython grows it in place."""
        text = first
        for seq in range(1, more + 1):
            piece = tx.scalar(
                "SELECT data FROM interaction_bodies "
                "WHERE interaction_id = ? AND field = ? AND seq = ?",
                (interaction_id, field, seq),
            )
            if piece is None:
                raise StoreError(
                    f"interaction {interaction_id}: piece {seq} of its {field} is missing"
                )
            text += piece
        return text

    def _interactions(self, tx: Tx, rows: list[Row]) -> list[Interaction]:
        return [self._interaction(tx, row) for row in rows]

    def _interaction(self, tx: Tx, row: Row) -> Interaction:
        (iid, tenant, itype, subtype, status, parent, mailbox, message_id, subject,
         from_addr, to, cc, text, html, attachments, attached, copy_key, sha, created,
         reply_to, refs, sent_date, hstate, text_more, html_more, names) = row  # fmt: skip
        if text_more:
            text = self._rest(tx, iid, "text", text, int(text_more))
        if html_more:
            html = self._rest(tx, iid, "html", html, int(html_more))
        return Interaction(
            id=iid,
            tenant_id=int(tenant),
            type=itype,
            subtype=subtype,
            status=status,
            parent_id=parent,
            mailbox=mailbox,
            message_id=message_id,
            subject=subject,
            from_addr=from_addr,
            to=json.loads(to),
            cc=json.loads(cc),
            reply_to=json.loads(reply_to),
            references=json.loads(refs),
            date=datetime.fromisoformat(sent_date) if sent_date is not None else None,
            names=json.loads(names),
            text=text,
            html=html,
            # rows stored before safe names existed get them made now
            attachments=unique_safe_names(
                [Attachment(**known_fields(Attachment, a)) for a in json.loads(attachments)]
            ),
            attached_data=json.loads(attached),
            copy_key=copy_key,
            raw_sha256=sha,
            created_at=self._dt_value(created),
            handoff_state=hstate if hstate is not None else HandoffState.PENDING.value,
        )

    # ---------------------------------------------------------- unit of work

    def commit_fetched(
        self,
        mailbox: str,
        source_key: str,
        raw: RawRef,
        interactions: Sequence[Interaction],
        cursor: Cursor | None = None,
        message_id_check: bool = False,
        fence: int | None = None,
    ) -> CommitResult:
        items = list(interactions)
        if not items:
            # Acknowledging a message that produced nothing would lose it.
            raise ValueError("commit_fetched needs at least one interaction")

        #: "this message was committed": a fan-out's copies all carry their own
        #: keys, so the plain source key is recorded beside them (owned by the
        #: first copy), for known_source_keys and for a re-fetch with the split
        #: turned off since (a duplicate, not a new unsplit interaction)
        source_marker = bounded_key(f"src:{mailbox}:{source_key}")

        def work(tx: Tx) -> CommitResult:
            now = self.now()
            if fence is not None:
                self._check_fence(tx, mailbox, fence)
            claimed: dict[str, str] = {}  # keys taken by this commit -> interaction id
            new: list[tuple[Interaction, list[str]]] = []
            duplicates: list[Interaction] = []
            for item in items:
                keys = dedupe_keys(mailbox, source_key, raw.sha256, item, message_id_check)
                owner = self._owner_of(tx, keys, claimed)
                if owner is None and self._tombstoned(tx, keys):
                    owner = ERASED  # erased or purged: the same mail is not imported again
                if owner is not None:
                    duplicates.append(attrs.evolve(item, duplicate_of=owner))
                    continue
                stored = attrs.evolve(
                    item,
                    mailbox=item.mailbox if item.mailbox is not None else mailbox,
                    raw_sha256=item.raw_sha256 or raw.sha256,
                    duplicate_of=None,
                    handoff_state=HandoffState.PENDING.value,
                )
                claimed.update(dict.fromkeys(keys, stored.id))
                new.append((stored, keys))

            owners = [d.duplicate_of for d in duplicates if d.duplicate_of != ERASED]
            if new:
                raw_id = self._store_raw(tx, raw, now)
            elif owners:
                raw_id = self._existing_raw(tx, raw, owners[0], now)
            else:
                raw_id = ""  # only tombstones: the bytes of erased mail are not kept again
            for stored, keys in new:
                self._insert_interaction(tx, stored, raw_id, now)
                tx.execute(
                    "INSERT INTO handoffs (interaction_id, state, attempts, updated_at) "
                    "VALUES (?, ?, 0, ?)",
                    (stored.id, HandoffState.PENDING.value, self._dt_param(now)),
                )
                for key in keys:
                    tx.execute(
                        "INSERT INTO dedupe_keys (key, interaction_id, created_at) "
                        "VALUES (?, ?, ?)",
                        (key, stored.id, self._dt_param(now)),
                    )
            insert_events(tx, now, [(EventType.CREATED.value, s.id, None, None) for s, _k in new])
            copies = [stored for stored, _keys in new if stored.copy_key is not None]
            if copies:
                tx.execute(
                    "INSERT INTO dedupe_keys (key, interaction_id, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (source_marker, copies[0].id, self._dt_param(now)),
                )
            # Committed: earlier failed attempts of this message no longer count.
            tx.execute(
                "DELETE FROM failures WHERE mailbox = ? AND source_key = ?", (mailbox, source_key)
            )
            if cursor is not None:
                tx.execute(
                    "INSERT INTO cursors (mailbox, value, updated_at, fence) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (mailbox) DO UPDATE SET value = excluded.value, "
                    "updated_at = excluded.updated_at, fence = excluded.fence",
                    (cursor.mailbox, cursor.value, self._dt_param(now), fence),
                )
            return CommitResult(
                new=[stored for stored, _keys in new], duplicates=duplicates, raw_id=raw_id
            )

        return self._write(work)

    def _owner_of(self, tx: Tx, keys: list[str], claimed: Mapping[str, str]) -> str | None:
        """The interaction owning the first of *keys* that is taken, or None."""
        marks = ", ".join(["?"] * len(keys))
        rows = tx.all(f"SELECT key, interaction_id FROM dedupe_keys WHERE key IN ({marks})", keys)
        owners: dict[str, str] = {key: owner for key, owner in rows}
        for key in keys:
            owner = claimed.get(key) or owners.get(key)
            if owner is not None:
                return str(owner)
        return None

    def _existing_raw(self, tx: Tx, raw: RawRef, owner: str | None, now: datetime) -> str:
        """The raw_id of an all-duplicate commit: the bytes already stored."""
        found = tx.scalar(
            "SELECT id FROM raw_messages WHERE sha256 = ? ORDER BY created_at, id LIMIT 1",
            (raw.sha256,),
        )
        if found is None and owner is not None:
            # Same place on the server, different bytes: point at the original's.
            row = tx.one("SELECT raw_id, raw_purged_at FROM interactions WHERE id = ?", (owner,))
            if row is not None and row[0] is None and row[1] is not None:
                return ""  # purged on purpose (retention, erasure): not kept again
            found = None if row is None else row[0]
        if found is None:
            # Never answer without the bytes being somewhere.
            found = self._store_raw(tx, raw, now)
        return str(found)

    def _check_fence(self, tx: Tx, mailbox: str, fence: int) -> None:
        current = tx.scalar(
            "SELECT fence FROM leases WHERE mailbox = ?" + self.dialect.share_rows, (mailbox,)
        )
        if current is None or int(current) != fence:
            held = "no lease" if current is None else f"lease fence {current}"
            raise FencingError(f"mailbox {mailbox!r}: commit with fence {fence}, store has {held}")

    # ------------------------------------------------------------- look-ups

    def get_interaction(self, interaction_id: str) -> Interaction | None:
        found = self._read(
            lambda tx: self._interactions(
                tx, tx.all(f"{INTERACTION_SELECT} WHERE i.id = ?", (interaction_id,))
            )
        )
        return found[0] if found else None

    def list_interactions(
        self, limit: int = 100, offset: int = 0, mailbox: str | None = None
    ) -> list[Interaction]:
        where, params = ("", ()) if mailbox is None else (" WHERE i.mailbox = ?", (mailbox,))
        return self._read(
            lambda tx: self._interactions(
                tx,
                tx.all(
                    f"{INTERACTION_SELECT}{where} ORDER BY i.created_at DESC, i.seq DESC "
                    "LIMIT ? OFFSET ?",
                    (*params, limit, offset),
                ),
            )
        )

    def find_by_message_id(self, message_id: str, type: str | None = None) -> list[Interaction]:
        where, params = " WHERE i.message_id = ?", [message_id]
        if type is not None:
            where += " AND i.type = ?"
            params.append(str(type))
        return self._read(
            lambda tx: self._interactions(
                tx, tx.all(f"{INTERACTION_SELECT}{where} ORDER BY i.created_at, i.seq", params)
            )
        )

    def update_attached_data(
        self,
        interaction_id: str,
        values: Mapping[str, Any],
        remove: Iterable[str] = (),
    ) -> None:
        """Merge *values* into a stored interaction's attached data and drop the
        keys in *remove*, in one transaction (an enrichment that finished after
        the commit: a directory that was down). KeyError when unknown."""
        dropped = list(remove)
        # SQLite serialises writers up front; others lock the row until the commit
        lock = " FOR UPDATE" if self.dialect.concurrent_writers else ""

        def work(tx: Tx) -> None:
            text = tx.scalar(
                f"SELECT attached_data FROM interactions WHERE id = ?{lock}", (interaction_id,)
            )
            if text is None:
                raise KeyError(interaction_id)
            data = json.loads(text)
            for key in dropped:
                data.pop(key, None)
            data.update(values)
            tx.execute(
                "UPDATE interactions SET attached_data = ? WHERE id = ?",
                (to_json(data), interaction_id),
            )

        self._write(work)

    def read_raw(self, interaction_id: str, fileobj: Writable) -> int:
        row = self._read(
            lambda tx: tx.one(
                "SELECT raw_id, raw_purged_at, raw_purged_reason FROM interactions WHERE id = ?",
                (interaction_id,),
            )
        )
        if row is not None and row[0] is None and row[1] is not None:
            raise RawPurgedError(interaction_id, self._dt_value(row[1]), str(row[2]))
        if row is None or row[0] is None:
            raise KeyError(interaction_id)
        return self._copy_raw(row[0], fileobj, f"interaction {interaction_id}")

    def known_source_keys(self, mailbox: str, keys: Iterable[str]) -> set[str]:
        """Which of *keys* were committed from *mailbox* (a fan-out's copies
        commit together, with the plain source key beside theirs)."""
        wanted = {bounded_key(f"src:{mailbox}:{key}"): key for key in keys}
        found: set[str] = set()
        names = list(wanted)

        def lookup(batch: list[str]) -> Callable[[Tx], list[Any]]:
            marks = ", ".join("?" for _ in batch)
            sql = f"SELECT key FROM dedupe_keys WHERE key IN ({marks})"
            return lambda tx: list(tx.all(sql, tuple(batch)))

        def buried(batch: list[str]) -> Callable[[Tx], set[str]]:
            return lambda tx: self._tombstoned(tx, batch)

        for start in range(0, len(names), 500):
            batch = names[start : start + 500]
            rows = self._read(lookup(batch))
            found.update(wanted[row[0]] for row in rows)
            # erased or purged interactions' source keys: still on the server, not new
            found.update(wanted[key] for key in self._read(buried(batch)))
        return found

    def get_cursor(self, mailbox: str) -> Cursor | None:
        value = self._read(
            lambda tx: tx.one("SELECT value FROM cursors WHERE mailbox = ?", (mailbox,))
        )
        return None if value is None else Cursor(mailbox=mailbox, value=value[0])

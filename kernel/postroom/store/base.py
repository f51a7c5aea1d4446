"""What every SQL interaction store shares: the schema's use, in one place.

The backends (:mod:`postroom.store.sqlite`, the ``postroom-postgresql``
distribution) speak nearly the same SQL, so all queries live here, written
with ``?`` placeholders; a backend supplies only what differs: how it
connects and opens a transaction, how it spells placeholders, row locks and
datetimes, which errors mean "another transaction won, run again", and its
migration scripts (``sql/<backend>/NNNN_name.sql`` beside this module).

Why the shapes below:

- one transaction per unit of work (:meth:`SQLStoreBase.commit_fetched`), so a
  crash anywhere leaves either everything or nothing, and the source
  acknowledges a message only after that;
- dedupe keys are rows of ``dedupe_keys`` whose primary key is the key: two
  processes racing on the same message cannot both insert it, the loser's
  transaction fails and is run again, and then sees the winner's key;
- raw bytes are copied as 1 MiB chunks (``raw_chunks``), never whole, both in
  and out, and checked against the size and SHA-256 recorded beside them
  (``raw_messages``) both ways: a corrupt store gives
  :class:`~postroom.store.errors.RawIntegrityError`, never wrong bytes taken
  for the message;
- the database driver's own exceptions leave the store as
  :class:`~postroom.store.errors.DatabaseError` naming the database, so
  callers need not know the backend;
- an interaction's text or HTML longer than :data:`TEXT_PIECE` characters is
  stored as pieces (the row keeps the first, ``interaction_bodies`` the rest)
  and read back by growing the text in place: a database driver binding or
  fetching one 50 MB value holds two or three more copies of it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from importlib import resources
from typing import Any, ClassVar, Protocol, TypeVar

import attrs
from zope.interface import implementer

from postroom import keys
from postroom.interfaces import IStore
from postroom.model import (
    Attachment,
    CommitResult,
    Cursor,
    HandoffState,
    Interaction,
    InteractionType,
    OutboundRequest,
    OutboxEntry,
    OutboxState,
    QuarantineEntry,
    RawRef,
    SuppressionEntry,
    new_id,
    utcnow,
)
from postroom.parsing.safe_names import unique_safe_names
from postroom.store.errors import DatabaseError, FencingError, RawIntegrityError, StoreError

T = TypeVar("T")

#: Raw messages are stored and read back in pieces of this size.
CHUNK_SIZE = 1 << 20

#: Interaction texts longer than this many characters are stored in pieces this long.
TEXT_PIECE = 1 << 20

#: Longer dedupe keys are stored as a digest (see :func:`dedupe_keys`).
MAX_KEY_BYTES = 1000

#: How often a transaction that lost a race (unique key, serialisation) is run again.
MAX_ATTEMPTS = 10

#: The interaction status that follows each outbox state.
OUTBOX_STATUS = {
    OutboxState.QUEUED: "Queued",
    OutboxState.SENDING: "Sending",
    OutboxState.SENT: "Sent",
    OutboxState.FAILED: "Failed",
}

#: attached-data key that shows an outbound interaction's final send error.
SEND_ERROR_KEY = keys.SEND_ERROR

_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")


class Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


Row = tuple[Any, ...]


class Tx:
    """A transaction's cursor, spoken to with ``?`` placeholders by every backend."""

    __slots__ = ("_cursor", "_translate")

    def __init__(self, cursor: Any, translate: Callable[[str], str]) -> None:
        self._cursor = cursor
        self._translate = translate

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        self._cursor.execute(self._translate(sql), tuple(params))
        return int(self._cursor.rowcount)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self._cursor.execute(self._translate(sql), tuple(params))
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cursor.execute(self._translate(sql), tuple(params))
        return [tuple(row) for row in self._cursor.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def script(self, sql: str) -> None:
        """Several statements in one go, without parameters, where the driver allows it."""
        self._cursor.execute(sql)


# ------------------------------------------------------------------ helpers


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
    return [_bounded(key) for key in keys]


def _bounded(key: str) -> str:
    data = key.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_KEY_BYTES:
        return key
    return f"{key[:3]}~{hashlib.sha256(data).hexdigest()}"


def _more(text: str | None) -> int:
    """How many pieces after the first a text is stored in (0: all in its row)."""
    return 0 if text is None else max(0, (len(text) - 1) // TEXT_PIECE)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the keys *cls* knows: rows written by a newer version still load."""
    names = {field.name for field in attrs.fields(cls)}
    return {key: value for key, value in data.items() if key in names}


def request_to_json(request: OutboundRequest) -> str:
    return _json(attrs.asdict(request))


def request_from_json(text: str) -> OutboundRequest:
    return OutboundRequest(**_known(OutboundRequest, json.loads(text)))


def to_utc(value: datetime | float | int) -> datetime:
    """An aware UTC datetime from a datetime or epoch seconds (a Twisted clock's ``seconds()``)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store needs aware datetimes")
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


# ---------------------------------------------------------------- columns

_INTERACTION_COLUMNS = (
    "id, tenant_id, type, subtype, status, parent_id, mailbox, message_id, subject, "
    "from_addr, to_addrs, cc_addrs, body_text, body_html, attachments, attached_data, "
    "copy_key, raw_sha256, created_at"
)
_INTERACTION_SELECT = (
    "SELECT i.id, i.tenant_id, i.type, i.subtype, i.status, i.parent_id, i.mailbox, "
    "i.message_id, i.subject, i.from_addr, i.to_addrs, i.cc_addrs, i.body_text, "
    "i.body_html, i.attachments, i.attached_data, i.copy_key, i.raw_sha256, "
    "i.created_at, h.state, i.text_more, i.html_more "
    "FROM interactions i LEFT JOIN handoffs h ON h.interaction_id = i.id"
)
_OUTBOX_SELECT = (
    "SELECT id, message_id, state, attempts, next_attempt_at, last_error, request, "
    "created_at FROM outbox"
)
_QUARANTINE_SELECT = (
    "SELECT q.id, q.mailbox, q.source_key, q.reason, q.attempts, r.sha256, "
    "q.created_at, q.updated_at, q.released "
    "FROM quarantine q LEFT JOIN raw_messages r ON r.id = q.raw_id"
)


_SUPPRESSION_SELECT = (
    "SELECT address, reason, interaction_id, created_at, updated_at, hits FROM suppressions"
)


def normalize_address(address: str) -> str:
    """Addresses are compared case-insensitively (the local part too: what
    real mailbox servers do, and what a site clearing a list expects)."""
    return address.strip().strip("<>").strip().lower()


#: last_error of an outbox entry whose sender process stopped mid-send
INTERRUPTED = (
    "interrupted: the process stopped while sending; queued again (the server may have "
    "accepted it already: the same Message-ID lets the recipient side deduplicate)"
)


@implementer(IStore)
class SQLStoreBase:
    """:class:`~postroom.interfaces.IStore` on a SQL database; subclasses add the dialect.

    Blocking: the kernel calls it from its thread pool only, and each backend
    makes that safe (SQLite: one connection behind a lock; PostgreSQL: one
    connection per thread).
    """

    #: names the migration directory ``sql/<backend>/``
    backend: ClassVar[str] = ""
    #: package holding ``sql/<backend>/``; the kernel's by default
    migrations_package: ClassVar[str] = "postroom.store"
    #: appended to a SELECT that claims rows other workers must skip
    claim_rows: ClassVar[str] = ""
    #: appended to a SELECT whose rows must not change until the commit
    share_rows: ClassVar[str] = ""
    #: True when two writing transactions can run at once, so races are found
    #: at insert time (unique keys) and the loser is run again; False when the
    #: backend serialises writers up front (SQLite's ``BEGIN IMMEDIATE``).
    concurrent_writers: ClassVar[bool] = False
    #: the driver's exceptions, raised again as :class:`DatabaseError`
    database_errors: ClassVar[tuple[type[Exception], ...]] = ()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        """Built as ``cls(options)``: the site's ``store:`` mapping, without ``driver``."""
        self.options: dict[str, Any] = dict(options or {})

    # ------------------------------------------------------ dialect hooks

    def _connect(self) -> None:
        """Open the connection(s); called by :meth:`open`."""
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    def _transaction(self, write: bool) -> AbstractContextManager[Tx]:
        """A context manager: a :class:`Tx` inside one transaction, committed
        on a normal exit, rolled back on an exception. *write* transactions
        must be able to write without a later upgrade failing."""
        raise NotImplementedError

    def _is_conflict(self, exc: BaseException) -> bool:
        """True when *exc* means a concurrent transaction won and running again may succeed."""
        return False

    def describe(self) -> str:
        """The database, for messages: ``SQLite database /var/lib/postroom.db``
        (never a password)."""
        return f"{self.backend} database"

    def _database_error(self, exc: Exception) -> DatabaseError | None:
        """*exc* as a :class:`DatabaseError` when it is the driver's, else None."""
        if not isinstance(exc, self.database_errors):
            return None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DatabaseError(f"{self.describe()}: {detail}")

    def _lock_migrations(self, tx: Tx) -> None:
        """Keep other processes out of the migrations until *tx* ends."""

    def _prepare_migrations(self, tx: Tx) -> None:
        """Whatever must exist before ``schema_migrations`` (e.g. a schema)."""

    def _run_script(self, tx: Tx, sql: str) -> None:
        """Execute a migration script (several statements) inside *tx*."""
        raise NotImplementedError

    def _dt_param(self, value: datetime) -> Any:
        """A datetime as a query parameter: fixed-width ISO-8601 UTC text, so
        text comparison is time order. Backends with a timestamp type override."""
        return to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")

    def _dt_value(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            return to_utc(value)
        return datetime.fromisoformat(value).astimezone(UTC)

    # --------------------------------------------------------- transactions

    _opened: bool = False

    def _write(self, work: Callable[[Tx], T]) -> T:
        """Run *work* in a write transaction, again when it lost a race."""
        self._require_open()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self._transaction(write=True) as tx:
                    return work(tx)
            except Exception as exc:
                if attempt < MAX_ATTEMPTS and self._is_conflict(exc):
                    continue
                failure = self._database_error(exc)
                if failure is None:
                    raise
                raise failure from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, work: Callable[[Tx], T]) -> T:
        self._require_open()
        try:
            with self._transaction(write=False) as tx:
                return work(tx)
        except Exception as exc:
            failure = self._database_error(exc)
            if failure is None:
                raise
            raise failure from exc

    def _require_open(self) -> None:
        if not self._opened:
            raise StoreError(f"{type(self).__name__} is not open: call open() first")

    # ----------------------------------------------------------- lifecycle

    def open(self) -> None:
        if self._opened:
            return
        try:
            self._connect()
        except Exception as exc:
            failure = self._database_error(exc)
            if failure is None:
                raise
            raise failure from exc
        self._opened = True
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self._disconnect()

    def migrations(self) -> list[tuple[int, str, str]]:
        """``(version, file name, SQL)`` of this backend's migrations, in order."""
        folder = resources.files(self.migrations_package).joinpath("sql", self.backend)
        found: dict[int, tuple[int, str, str]] = {}
        for entry in folder.iterdir():
            match = _MIGRATION_NAME.match(entry.name)
            if match is None:
                continue
            version = int(match.group(1))
            if version in found:
                raise StoreError(f"two migrations numbered {version}: {entry.name}")
            found[version] = (version, entry.name, entry.read_text(encoding="utf-8"))
        if not found:
            raise StoreError(f"no migrations for backend {self.backend!r} in {folder}")
        return [found[version] for version in sorted(found)]

    def _migrate(self) -> None:
        """Apply the pending migrations, each in its own transaction.

        Each transaction first takes the backend's migration lock and then
        checks again what is applied, so two processes opening the same
        database at once apply every migration exactly once.
        """

        def bootstrap(tx: Tx) -> None:
            self._lock_migrations(tx)
            self._prepare_migrations(tx)
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )

        self._write(bootstrap)
        migrations = self.migrations()
        applied = self.schema_version()
        if applied > migrations[-1][0]:
            # A newer postroom migrated this database: its data may not fit our queries.
            raise StoreError(
                f"the database schema is at version {applied}, newer than this postroom "
                f"knows ({migrations[-1][0]}): upgrade postroom"
            )
        for version, _name, sql in migrations:

            def apply(tx: Tx, version: int = version, sql: str = sql) -> None:
                self._lock_migrations(tx)
                done = tx.one("SELECT 1 FROM schema_migrations WHERE version = ?", (version,))
                if done is None:
                    self._run_script(tx, sql)
                    tx.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (version, utcnow().isoformat()),
                    )

            self._write(apply)

    def schema_version(self) -> int:
        return int(
            self._read(lambda tx: tx.scalar("SELECT MAX(version) FROM schema_migrations")) or 0
        )

    # ------------------------------------------------------------ raw bytes

    def _store_raw(self, tx: Tx, raw: RawRef, now: datetime) -> str:
        """Copy *raw* into ``raw_chunks`` piece by piece; check it is what the ref says."""
        raw_id = new_id()
        tx.execute(
            "INSERT INTO raw_messages (id, sha256, size, created_at) VALUES (?, ?, ?, ?)",
            (raw_id, raw.sha256, raw.size, self._dt_param(now)),
        )
        digest = hashlib.sha256()
        size = 0
        for seq, chunk in enumerate(raw.chunks(CHUNK_SIZE)):
            digest.update(chunk)
            size += len(chunk)
            tx.execute(
                "INSERT INTO raw_chunks (raw_id, seq, data) VALUES (?, ?, ?)",
                (raw_id, seq, chunk),
            )
        if size != raw.size or digest.hexdigest() != raw.sha256:
            # The spool file changed under us: storing it would break "byte-identical".
            raise StoreError(
                f"raw file {raw.path} changed: expected {raw.size} bytes sha256 {raw.sha256}, "
                f"read {size} bytes sha256 {digest.hexdigest()}"
            )
        return raw_id

    def _copy_raw(self, raw_id: str, fileobj: Writable, what: str) -> int:
        """Write a stored raw message to *fileobj*, one chunk per query, and check
        it against the size and SHA-256 recorded with it.

        Raises :class:`RawIntegrityError` at the end when they differ (a chunk
        changed, went missing or was added): the bytes written are then wrong.
        """
        row = self._read(
            lambda tx: tx.one("SELECT size, sha256 FROM raw_messages WHERE id = ?", (raw_id,))
        )
        expected_size, expected_sha256 = (-1, "(no record)") if row is None else row
        digest = hashlib.sha256()
        total = 0
        seq = 0
        while (data := self._chunk(raw_id, seq)) is not None:
            digest.update(data)
            fileobj.write(data)
            total += len(data)
            seq += 1
        if total != expected_size or digest.hexdigest() != expected_sha256:
            raise RawIntegrityError(
                what,
                expected_size=int(expected_size),
                expected_sha256=str(expected_sha256),
                size=total,
                sha256=digest.hexdigest(),
            )
        return total

    def _chunk(self, raw_id: str, seq: int) -> bytes | None:
        # A short transaction per chunk: a slow reader holds no lock for long.
        data = self._read(
            lambda tx: tx.scalar(
                "SELECT data FROM raw_chunks WHERE raw_id = ? AND seq = ?", (raw_id, seq)
            )
        )
        return None if data is None else bytes(data)

    # -------------------------------------------------------- conversions

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
            _json(list(item.to)),
            _json(list(item.cc)),
            item.text[:TEXT_PIECE] if item.text is not None else None,
            item.html[:TEXT_PIECE] if item.html is not None else None,
            _json([attrs.asdict(attachment) for attachment in item.attachments]),
            _json(dict(item.attached_data)),
            item.copy_key,
            item.raw_sha256,
            self._dt_param(item.created_at),
            raw_id,
            self._dt_param(now),
            _more(item.text),
            _more(item.html),
        )

    def _insert_interaction(
        self, tx: Tx, item: Interaction, raw_id: str | None, now: datetime
    ) -> None:
        tx.execute(
            f"INSERT INTO interactions ({_INTERACTION_COLUMNS}, raw_id, stored_at, text_more, "
            f"html_more) VALUES ({', '.join(['?'] * 23)})",
            self._interaction_params(item, raw_id, now),
        )
        for field, value in (("text", item.text), ("html", item.html)):
            for seq in range(1, _more(value) + 1):
                assert value is not None
                tx.execute(
                    "INSERT INTO interaction_bodies (interaction_id, field, seq, data) "
                    "VALUES (?, ?, ?, ?)",
                    (item.id, field, seq, value[seq * TEXT_PIECE : (seq + 1) * TEXT_PIECE]),
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
         hstate, text_more, html_more) = row  # fmt: skip
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
            text=text,
            html=html,
            # rows stored before safe names existed get them made now
            attachments=unique_safe_names(
                [Attachment(**_known(Attachment, a)) for a in json.loads(attachments)]
            ),
            attached_data=json.loads(attached),
            copy_key=copy_key,
            raw_sha256=sha,
            created_at=self._dt_value(created),
            handoff_state=hstate if hstate is not None else HandoffState.PENDING.value,
        )

    def _outbox_entry(self, row: Row) -> OutboxEntry:
        eid, message_id, state, attempts, next_at, last_error, request, created = row
        return OutboxEntry(
            id=eid,
            message_id=message_id,
            state=state,
            attempts=int(attempts),
            next_attempt_at=None if next_at is None else self._dt_value(next_at),
            last_error=last_error,
            request=request_from_json(request),
            created_at=self._dt_value(created),
        )

    def _quarantine_entry(self, row: Row) -> QuarantineEntry:
        qid, mailbox, source_key, reason, attempts, sha, created, updated, released = row
        return QuarantineEntry(
            id=qid,
            mailbox=mailbox,
            source_key=source_key,
            reason=reason,
            attempts=int(attempts),
            raw_sha256=sha,
            created_at=self._dt_value(created),
            updated_at=self._dt_value(updated),
            released=bool(released),
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
        source_marker = _bounded(f"src:{mailbox}:{source_key}")

        def work(tx: Tx) -> CommitResult:
            now = utcnow()
            if fence is not None:
                self._check_fence(tx, mailbox, fence)
            claimed: dict[str, str] = {}  # keys taken by this commit -> interaction id
            new: list[tuple[Interaction, list[str]]] = []
            duplicates: list[Interaction] = []
            for item in items:
                keys = dedupe_keys(mailbox, source_key, raw.sha256, item, message_id_check)
                owner = self._owner_of(tx, keys, claimed)
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

            if new:
                raw_id = self._store_raw(tx, raw, now)
            else:
                raw_id = self._existing_raw(tx, raw, duplicates[0].duplicate_of, now)
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
            found = tx.scalar("SELECT raw_id FROM interactions WHERE id = ?", (owner,))
        if found is None:
            # Never answer without the bytes being somewhere.
            found = self._store_raw(tx, raw, now)
        return str(found)

    def _check_fence(self, tx: Tx, mailbox: str, fence: int) -> None:
        current = tx.scalar(
            "SELECT fence FROM leases WHERE mailbox = ?" + self.share_rows, (mailbox,)
        )
        if current is None or int(current) != fence:
            held = "no lease" if current is None else f"lease fence {current}"
            raise FencingError(f"mailbox {mailbox!r}: commit with fence {fence}, store has {held}")

    # ------------------------------------------------------------- look-ups

    def get_interaction(self, interaction_id: str) -> Interaction | None:
        found = self._read(
            lambda tx: self._interactions(
                tx, tx.all(f"{_INTERACTION_SELECT} WHERE i.id = ?", (interaction_id,))
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
                    f"{_INTERACTION_SELECT}{where} ORDER BY i.created_at DESC, i.seq DESC "
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
                tx, tx.all(f"{_INTERACTION_SELECT}{where} ORDER BY i.created_at, i.seq", params)
            )
        )

    def read_raw(self, interaction_id: str, fileobj: Writable) -> int:
        row = self._read(
            lambda tx: tx.one("SELECT raw_id FROM interactions WHERE id = ?", (interaction_id,))
        )
        if row is None or row[0] is None:
            raise KeyError(interaction_id)
        return self._copy_raw(row[0], fileobj, f"interaction {interaction_id}")

    def known_source_keys(self, mailbox: str, keys: Iterable[str]) -> set[str]:
        """Which of *keys* were committed from *mailbox* (a fan-out's copies
        commit together, with the plain source key beside theirs)."""
        wanted = {_bounded(f"src:{mailbox}:{key}"): key for key in keys}
        found: set[str] = set()
        names = list(wanted)

        def lookup(batch: list[str]) -> Callable[[Tx], list[Any]]:
            marks = ", ".join("?" for _ in batch)
            sql = f"SELECT key FROM dedupe_keys WHERE key IN ({marks})"
            return lambda tx: list(tx.all(sql, tuple(batch)))

        for start in range(0, len(names), 500):
            rows = self._read(lookup(names[start : start + 500]))
            found.update(wanted[row[0]] for row in rows)
        return found

    def get_cursor(self, mailbox: str) -> Cursor | None:
        value = self._read(
            lambda tx: tx.one("SELECT value FROM cursors WHERE mailbox = ?", (mailbox,))
        )
        return None if value is None else Cursor(mailbox=mailbox, value=value[0])

    # ------------------------------------------------------------- hand-off

    def pending_handoffs(self, limit: int = 100, after: str | None = None) -> list[Interaction]:
        """Interactions not yet handed off, in commit order; *after*: those
        committed after that interaction (the next page)."""
        return self._unfinished("h.state", limit, after)

    def pending_after_commit(self, limit: int = 100, after: str | None = None) -> list[Interaction]:
        """Interactions whose side effects (``postroom_committed``) have not run
        to the end, in commit order; *after* as for :meth:`pending_handoffs`."""
        return self._unfinished("h.after_commit", limit, after)

    def _unfinished(self, column: str, limit: int, after: str | None) -> list[Interaction]:
        params: tuple[Any, ...] = (HandoffState.PENDING.value, HandoffState.FAILED.value)
        since = ""
        if after is not None:
            since = (
                " AND (i.created_at, i.seq) > "
                "(SELECT created_at, seq FROM interactions WHERE id = ?)"
            )
            params += (after,)
        return self._read(
            lambda tx: self._interactions(
                tx,
                tx.all(
                    f"{_INTERACTION_SELECT} WHERE {column} IN (?, ?){since} "
                    "ORDER BY i.created_at, i.seq LIMIT ?",
                    (*params, limit),
                ),
            )
        )

    def mark_handoff(self, interaction_id: str, state: str, error: str | None = None) -> None:
        state = HandoffState(state).value

        def work(tx: Tx) -> None:
            changed = tx.execute(
                "UPDATE handoffs SET state = ?, attempts = attempts + 1, last_error = ?, "
                "updated_at = ? WHERE interaction_id = ?",
                (state, error, self._dt_param(utcnow()), interaction_id),
            )
            if changed == 0:
                raise KeyError(interaction_id)

        self._write(work)

    def mark_handoffs_done(
        self, interaction_ids: Sequence[str], after_commit: Sequence[str] = ()
    ) -> None:
        """Mark many hand-offs done in one transaction, and the side effects of the
        *after_commit* interactions (the hand-off service batches its successes: a
        crash before this only means they run again, which both hooks tolerate by
        contract)."""
        stamp = self._dt_param(utcnow())

        def work(tx: Tx) -> None:
            for interaction_id in interaction_ids:
                tx.execute(
                    "UPDATE handoffs SET state = ?, attempts = attempts + 1, last_error = NULL, "
                    "updated_at = ? WHERE interaction_id = ?",
                    (HandoffState.DONE.value, stamp, interaction_id),
                )
            for interaction_id in after_commit:
                tx.execute(
                    "UPDATE handoffs SET after_commit = ?, "
                    "after_commit_attempts = after_commit_attempts + 1, after_commit_error = NULL, "
                    "updated_at = ? WHERE interaction_id = ?",
                    (HandoffState.DONE.value, stamp, interaction_id),
                )

        if interaction_ids or after_commit:
            self._write(work)

    def mark_after_commit(self, interaction_id: str, state: str, error: str | None = None) -> None:
        """Record an attempt at an interaction's side effects (counts attempts)."""
        state = HandoffState(state).value

        def work(tx: Tx) -> None:
            changed = tx.execute(
                "UPDATE handoffs SET after_commit = ?, "
                "after_commit_attempts = after_commit_attempts + 1, after_commit_error = ?, "
                "updated_at = ? WHERE interaction_id = ?",
                (state, error, self._dt_param(utcnow()), interaction_id),
            )
            if changed == 0:
                raise KeyError(interaction_id)

        self._write(work)

    def after_commit_status(self, interaction_id: str) -> tuple[str, int, str | None] | None:
        """``(state, attempts, last_error)`` of the interaction's side effects, or None."""
        row = self._read(
            lambda tx: tx.one(
                "SELECT after_commit, after_commit_attempts, after_commit_error FROM handoffs "
                "WHERE interaction_id = ?",
                (interaction_id,),
            )
        )
        return None if row is None else (row[0], int(row[1]), row[2])

    def handoff_status(self, interaction_id: str) -> tuple[str, int, str | None] | None:
        row = self._read(
            lambda tx: tx.one(
                "SELECT state, attempts, last_error FROM handoffs WHERE interaction_id = ?",
                (interaction_id,),
            )
        )
        return None if row is None else (row[0], int(row[1]), row[2])

    # --------------------------------------------------------------- outbox

    def queue_outbound(self, interaction: Interaction, request: OutboundRequest) -> OutboxEntry:
        if not interaction.message_id:
            raise ValueError("an outbound interaction needs its Message-ID before it is queued")
        item = attrs.evolve(
            interaction,
            type=InteractionType.OUTBOUND.value,
            status=OUTBOX_STATUS[OutboxState.QUEUED],
        )
        request_json = request_to_json(request)

        def work(tx: Tx) -> OutboxEntry:
            now = utcnow()
            self._insert_interaction(tx, item, None, now)
            tx.execute(
                "INSERT INTO outbox (id, message_id, state, attempts, next_attempt_at, "
                "last_error, request, created_at, updated_at) "
                "VALUES (?, ?, ?, 0, NULL, NULL, ?, ?, ?)",
                (item.id, item.message_id, OutboxState.QUEUED.value, request_json,
                 self._dt_param(now), self._dt_param(now)),
            )  # fmt: skip
            return OutboxEntry(
                id=item.id,
                message_id=str(item.message_id),
                state=OutboxState.QUEUED.value,
                attempts=0,
                next_attempt_at=None,
                last_error=None,
                request=request_from_json(request_json),
                created_at=now,
            )

        return self._write(work)

    def claim_outbound(self, now: datetime | float, limit: int = 10) -> list[OutboxEntry]:
        due = self._dt_param(to_utc(now))

        def work(tx: Tx) -> list[OutboxEntry]:
            ids = tx.all(
                "SELECT id FROM outbox WHERE state = ? "
                "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
                "ORDER BY created_at, id LIMIT ?" + self.claim_rows,
                (OutboxState.QUEUED.value, due, limit),
            )
            stamp = self._dt_param(utcnow())
            claimed = []
            for (eid,) in ids:
                # The state test keeps a row another worker claimed meanwhile out.
                if tx.execute(
                    "UPDATE outbox SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
                    (OutboxState.SENDING.value, stamp, eid, OutboxState.QUEUED.value),
                ):
                    tx.execute(
                        "UPDATE interactions SET status = ? WHERE id = ?",
                        (OUTBOX_STATUS[OutboxState.SENDING], eid),
                    )
                    row = tx.one(f"{_OUTBOX_SELECT} WHERE id = ?", (eid,))
                    assert row is not None
                    claimed.append(self._outbox_entry(row))
            return claimed

        return self._write(work)

    def outbox_counts(self) -> dict[str, int]:
        """Outbox entries by state (every state present, zero included)."""
        rows = self._read(lambda tx: tx.all("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
        counts = {state.value: 0 for state in OutboxState}
        counts.update({str(state): int(n) for state, n in rows})
        return counts

    def requeue_interrupted(self, claimed_before: datetime | float) -> list[str]:
        """Entries left ``sending`` by a process that stopped (claimed before
        *claimed_before*) go back to ``queued``: sent at least once, never
        lost. Returns their ids."""
        cutoff = self._dt_param(to_utc(claimed_before))

        def work(tx: Tx) -> list[str]:
            ids = [
                eid
                for (eid,) in tx.all(
                    "SELECT id FROM outbox WHERE state = ? AND updated_at <= ?",
                    (OutboxState.SENDING.value, cutoff),
                )
            ]
            stamp = self._dt_param(utcnow())
            for eid in ids:
                tx.execute(
                    "UPDATE outbox SET state = ?, updated_at = ?, next_attempt_at = NULL, "
                    "last_error = ? WHERE id = ? AND state = ?",
                    (OutboxState.QUEUED.value, stamp, INTERRUPTED, eid, OutboxState.SENDING.value),
                )
                tx.execute(
                    "UPDATE interactions SET status = ? WHERE id = ?",
                    (OUTBOX_STATUS[OutboxState.QUEUED], eid),
                )
            return ids

        return self._write(work)

    def mark_outbound(
        self,
        entry_id: str,
        state: str,
        error: str | None = None,
        next_attempt_at: datetime | float | None = None,
        attached: Mapping[str, Any] | None = None,
    ) -> None:
        """Move an outbox entry to *state*; its interaction's status follows,
        and *attached* is merged into the interaction's attached data."""
        new_state = OutboxState(state)
        retry_at = None if next_attempt_at is None else self._dt_param(to_utc(next_attempt_at))
        counts = new_state in (OutboxState.FAILED, OutboxState.QUEUED)

        def work(tx: Tx) -> None:
            changed = tx.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + ?, "
                "last_error = COALESCE(?, last_error), next_attempt_at = ?, updated_at = ? "
                "WHERE id = ?",
                (new_state.value, int(counts), error,
                 retry_at if new_state is OutboxState.QUEUED else None,
                 self._dt_param(utcnow()), entry_id),
            )  # fmt: skip
            if changed == 0:
                raise KeyError(entry_id)
            # The outbox row is locked by the UPDATE above: no one else is here.
            text = tx.scalar("SELECT attached_data FROM interactions WHERE id = ?", (entry_id,))
            data = json.loads(text) if text is not None else {}
            if new_state is OutboxState.FAILED:
                data[SEND_ERROR_KEY] = error or "sending failed"
            elif new_state is OutboxState.SENT:
                data.pop(SEND_ERROR_KEY, None)
            data.update(attached or {})
            tx.execute(
                "UPDATE interactions SET status = ?, attached_data = ? WHERE id = ?",
                (OUTBOX_STATUS[new_state], _json(data), entry_id),
            )

        self._write(work)

    def get_outbox(self, entry_id: str) -> OutboxEntry | None:
        row = self._read(lambda tx: tx.one(f"{_OUTBOX_SELECT} WHERE id = ?", (entry_id,)))
        return None if row is None else self._outbox_entry(row)

    def list_outbox(self, state: str | None = None) -> list[OutboxEntry]:
        where, params = ("", ()) if state is None else (" WHERE state = ?", (str(state),))
        rows = self._read(
            lambda tx: tx.all(f"{_OUTBOX_SELECT}{where} ORDER BY created_at, id", params)
        )
        return [self._outbox_entry(row) for row in rows]

    # ----------------------------------------------------- failures, quarantine

    def record_failure(
        self, mailbox: str, source_key: str, reason: str, raw: RawRef | None = None
    ) -> int:
        """Count a failed attempt; the raw's digest is kept to tell re-fetches apart."""

        def work(tx: Tx) -> int:
            stamp = self._dt_param(utcnow())
            return int(
                tx.scalar(
                    "INSERT INTO failures (mailbox, source_key, attempts, last_reason, raw_sha256, "
                    "created_at, updated_at) VALUES (?, ?, 1, ?, ?, ?, ?) "
                    "ON CONFLICT (mailbox, source_key) DO UPDATE SET "
                    "attempts = failures.attempts + 1, last_reason = excluded.last_reason, "
                    "raw_sha256 = COALESCE(excluded.raw_sha256, failures.raw_sha256), "
                    "updated_at = excluded.updated_at RETURNING attempts",
                    (mailbox, source_key, reason, raw.sha256 if raw else None, stamp, stamp),
                )
            )

        return self._write(work)

    def clear_failures(self, mailbox: str, source_key: str) -> None:
        """Forget the failed attempts of a message (it was committed, or released)."""
        self._write(
            lambda tx: tx.execute(
                "DELETE FROM failures WHERE mailbox = ? AND source_key = ?", (mailbox, source_key)
            )
        )

    def quarantine(
        self, mailbox: str, source_key: str, reason: str, raw: RawRef | None = None
    ) -> QuarantineEntry:
        """Quarantine a message; quarantining it again updates the open entry."""

        def work(tx: Tx) -> QuarantineEntry:
            now = utcnow()
            attempts = tx.scalar(
                "SELECT attempts FROM failures WHERE mailbox = ? AND source_key = ?",
                (mailbox, source_key),
            )
            existing = tx.one(
                "SELECT id, raw_id FROM quarantine "
                "WHERE mailbox = ? AND source_key = ? AND released = ?",
                (mailbox, source_key, False),
            )
            raw_id = existing[1] if existing is not None else None
            if raw_id is None and raw is not None:
                raw_id = self._store_raw(tx, raw, now)
            if existing is None:
                entry_id = new_id()
                tx.execute(
                    "INSERT INTO quarantine (id, mailbox, source_key, reason, attempts, raw_id, "
                    "released, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry_id, mailbox, source_key, reason, int(attempts or 0), raw_id, False,
                     self._dt_param(now), self._dt_param(now)),
                )  # fmt: skip
            else:
                entry_id = existing[0]
                tx.execute(
                    "UPDATE quarantine SET reason = ?, attempts = ?, raw_id = ?, updated_at = ? "
                    "WHERE id = ?",
                    (reason, int(attempts or 0), raw_id, self._dt_param(now), entry_id),
                )
            row = tx.one(f"{_QUARANTINE_SELECT} WHERE q.id = ?", (entry_id,))
            assert row is not None
            return self._quarantine_entry(row)

        return self._write(work)

    def quarantined_source_keys(self, mailbox: str) -> set[str]:
        """Source keys of *mailbox* held in quarantine: skipped by its passes."""
        rows = self._read(
            lambda tx: tx.all(
                "SELECT source_key FROM quarantine WHERE mailbox = ? AND released = ?",
                (mailbox, False),
            )
        )
        return {row[0] for row in rows}

    def is_quarantined(self, mailbox: str, source_key: str) -> bool:
        row = self._read(
            lambda tx: tx.one(
                "SELECT 1 FROM quarantine WHERE mailbox = ? AND source_key = ? AND released = ?",
                (mailbox, source_key, False),
            )
        )
        return row is not None

    def list_quarantine(self, include_released: bool = False) -> list[QuarantineEntry]:
        where, params = ("", ()) if include_released else (" WHERE q.released = ?", (False,))
        rows = self._read(
            lambda tx: tx.all(f"{_QUARANTINE_SELECT}{where} ORDER BY q.created_at, q.id", params)
        )
        return [self._quarantine_entry(row) for row in rows]

    def get_quarantine(self, entry_id: str) -> QuarantineEntry | None:
        row = self._read(lambda tx: tx.one(f"{_QUARANTINE_SELECT} WHERE q.id = ?", (entry_id,)))
        return None if row is None else self._quarantine_entry(row)

    def read_quarantined_raw(self, entry_id: str, fileobj: Writable) -> int:
        raw_id = self._read(
            lambda tx: tx.scalar("SELECT raw_id FROM quarantine WHERE id = ?", (entry_id,))
        )
        if raw_id is None:
            raise KeyError(entry_id)
        return self._copy_raw(raw_id, fileobj, f"quarantine entry {entry_id}")

    def release_quarantine(self, entry_id: str) -> None:
        """Release an entry and reset its failure count, so the next try starts afresh."""

        def work(tx: Tx) -> None:
            row = tx.one("SELECT mailbox, source_key FROM quarantine WHERE id = ?", (entry_id,))
            if row is None:
                raise KeyError(entry_id)
            tx.execute(
                "UPDATE quarantine SET released = ?, updated_at = ? WHERE id = ?",
                (True, self._dt_param(utcnow()), entry_id),
            )
            tx.execute(
                "DELETE FROM failures WHERE mailbox = ? AND source_key = ?", (row[0], row[1])
            )

        self._write(work)

    # ------------------------------------------- suppression list, exchanges

    def suppress(self, address: str, reason: str, interaction_id: str | None = None) -> None:
        """Suppress a hard-bounced address; a later bounce updates the reason and counts a
        hit. The same bounce again (the same *interaction_id* as the last) counts no hit:
        side effects run at least once."""
        key = normalize_address(address)

        def work(tx: Tx) -> None:
            stamp = self._dt_param(utcnow())
            tx.execute(
                "INSERT INTO suppressions (address, reason, interaction_id, created_at, "
                "updated_at, hits) VALUES (?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, "
                "interaction_id = COALESCE(excluded.interaction_id, suppressions.interaction_id), "
                "updated_at = excluded.updated_at, hits = suppressions.hits + CASE "
                "WHEN excluded.interaction_id = suppressions.interaction_id THEN 0 ELSE 1 END",
                (key, reason, interaction_id, stamp, stamp),
            )

        self._write(work)

    def is_suppressed(self, address: str) -> SuppressionEntry | None:
        row = self._read(
            lambda tx: tx.one(
                f"{_SUPPRESSION_SELECT} WHERE address = ?", (normalize_address(address),)
            )
        )
        return None if row is None else self._suppression_entry(row)

    def list_suppressions(self) -> list[SuppressionEntry]:
        rows = self._read(lambda tx: tx.all(f"{_SUPPRESSION_SELECT} ORDER BY created_at, address"))
        return [self._suppression_entry(row) for row in rows]

    def unsuppress(self, address: str) -> bool:
        key = normalize_address(address)
        return bool(
            self._write(lambda tx: tx.execute("DELETE FROM suppressions WHERE address = ?", (key,)))
        )

    def _suppression_entry(self, row: Row) -> SuppressionEntry:
        address, reason, interaction_id, created, updated, hits = row
        return SuppressionEntry(
            address=address,
            reason=reason,
            interaction_id=interaction_id,
            created_at=self._dt_value(created),
            updated_at=self._dt_value(updated),
            hits=int(hits),
        )

    def record_exchange(
        self,
        address: str,
        direction: str,
        at: datetime | float,
        interaction_id: str | None = None,
    ) -> None:
        """Record one automatic mail exchanged with *address* (auto-reply war detection)."""
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
        params = (normalize_address(address), direction, self._dt_param(to_utc(at)), interaction_id)
        self._write(
            lambda tx: tx.execute(
                "INSERT INTO exchanges (address, direction, at, interaction_id) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                params,
            )
        )

    def count_exchanges(self, address: str, since: datetime | float) -> int:
        params = (normalize_address(address), self._dt_param(to_utc(since)))
        return int(
            self._read(
                lambda tx: tx.scalar(
                    "SELECT COUNT(*) FROM exchanges WHERE address = ? AND at >= ?", params
                )
            )
        )

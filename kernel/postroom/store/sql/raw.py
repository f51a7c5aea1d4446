"""Raw messages: stored and read back as 1 MiB chunks, never whole, checked both ways.

The bytes go into ``raw_chunks`` piece by piece and are checked against the
size and SHA-256 recorded beside them (``raw_messages``) on the way in and on
the way out: a corrupt store gives
:class:`~postroom.store.errors.RawIntegrityError`, never wrong bytes taken for
the message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from postroom.model import RawRef, new_id
from postroom.store.errors import RawIntegrityError, StoreError
from postroom.store.sql.core import SQLCore, Writable
from postroom.store.sql.tx import Tx

#: Raw messages are stored and read back in pieces of this size.
CHUNK_SIZE = 1 << 20


class RawRecords(SQLCore):
    """Copying raw bytes in and out of ``raw_messages`` and ``raw_chunks``."""

    def _store_raw(self, tx: Tx, raw: RawRef, now: datetime) -> str:
        """Copy *raw* into ``raw_chunks`` piece by piece; check it is what the ref says."""
        return self._store_pieces(
            tx, raw.sha256, raw.size, raw.chunks(CHUNK_SIZE), now, f"raw file {raw.path}"
        )

    def _store_bytes(self, tx: Tx, data: bytes, sha256: str, now: datetime, what: str) -> str:
        """Keep bytes held in memory (a file sent with outbound mail) like a raw message."""
        view = memoryview(data)
        pieces = (bytes(view[at : at + CHUNK_SIZE]) for at in range(0, len(data), CHUNK_SIZE))
        return self._store_pieces(tx, sha256, len(data), pieces, now, what)

    def _store_pieces(
        self,
        tx: Tx,
        sha256: str,
        expected_size: int,
        pieces: Iterable[bytes],
        now: datetime,
        what: str,
    ) -> str:
        raw_id = new_id()
        tx.execute(
            "INSERT INTO raw_messages (id, sha256, size, created_at) VALUES (?, ?, ?, ?)",
            (raw_id, sha256, expected_size, self._dt_param(now)),
        )
        digest = hashlib.sha256()
        size = 0
        for seq, chunk in enumerate(pieces):
            digest.update(chunk)
            size += len(chunk)
            tx.execute(
                "INSERT INTO raw_chunks (raw_id, seq, data) VALUES (?, ?, ?)",
                (raw_id, seq, chunk),
            )
        if size != expected_size or digest.hexdigest() != sha256:
            # The bytes changed under us: storing them would break "byte-identical".
            raise StoreError(
                f"{what} changed: expected {expected_size} bytes sha256 {sha256}, "
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

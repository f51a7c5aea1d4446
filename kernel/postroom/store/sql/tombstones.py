"""Dedupe tombstones: the keyed hashes of the dedupe keys of interactions that are gone.

An erased interaction (``postroom erase``) or one purged whole by retention
loses its row and its ``dedupe_keys``; the same mail still on a server (left
there on purpose, or a cursor reset) must not come back as new. So each of its
keys is kept as ``HMAC-SHA256(secret, key)`` in ``dedupe_tombstones``, and the
intake's dedupe check (:meth:`~postroom.store.sql.interactions.InteractionRecords.commit_fetched`,
``known_source_keys``) consults them beside the live keys. The secret is random,
made by the store on first use and kept in ``store_secrets``: a hash says
nothing without the database, and nothing in a tombstone names a person.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence

from postroom.store.sql.core import SQLCore
from postroom.store.sql.tx import Tx

#: the interaction a tombstoned duplicate is a duplicate of (it has no row any more)
ERASED = "erased"

#: ``store_secrets`` row holding the key of tombstone and audit hashes
SECRET_NAME = "erasure"


class TombstoneRecords(SQLCore):
    """The store's hashing secret, and burying and finding tombstones."""

    _erasure_secret: bytes | None = None
    #: set by ``open()``: the schema has the tombstone tables (always, once migrated)
    _tombstones_ready: bool = False

    def _secret(self, tx: Tx, create: bool = False) -> bytes | None:
        """The site's hashing key; made (once, by whichever process is first) when *create*."""
        if self._erasure_secret is not None:
            return self._erasure_secret
        value = tx.scalar("SELECT value FROM store_secrets WHERE name = ?", (SECRET_NAME,))
        if value is None and create:
            tx.execute(
                "INSERT INTO store_secrets (name, value, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (SECRET_NAME, secrets.token_hex(32), self._dt_param(self.now())),
            )
            value = tx.scalar("SELECT value FROM store_secrets WHERE name = ?", (SECRET_NAME,))
        if value is None:
            return None  # never cached: another process may make it later
        self._erasure_secret = bytes.fromhex(str(value))
        return self._erasure_secret

    @staticmethod
    def _keyed_hash(secret: bytes, kind: str, value: str) -> str:
        message = f"{kind}\x00{value}".encode("utf-8", "surrogatepass")
        return hmac.new(secret, message, hashlib.sha256).hexdigest()

    def _bury(self, tx: Tx, keys: Iterable[str]) -> int:
        """Keep *keys* (dedupe keys) as tombstones; how many were new."""
        secret = self._secret(tx, create=True)
        assert secret is not None
        stamp = self._dt_param(self.now())
        added = 0
        for key in keys:
            added += tx.execute(
                "INSERT INTO dedupe_tombstones (key_hash, created_at) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                (self._keyed_hash(secret, "dedupe", key), stamp),
            )
        return added

    def _tombstoned(self, tx: Tx, keys: Sequence[str]) -> set[str]:
        """Which of *keys* are tombstones (none before the first erasure or purge)."""
        if not keys or not self._tombstones_ready:
            return set()
        secret = self._secret(tx)
        if secret is None:
            return set()
        hashed = {self._keyed_hash(secret, "dedupe", key): key for key in keys}
        marks = ", ".join(["?"] * len(hashed))
        rows = tx.all(
            f"SELECT key_hash FROM dedupe_tombstones WHERE key_hash IN ({marks})", list(hashed)
        )
        return {hashed[row[0]] for row in rows}

    def _bury_interactions(self, tx: Tx, ids: Sequence[str]) -> int:
        """Tombstone and delete the dedupe keys of the interactions *ids*; how many."""
        if not ids:
            return 0
        marks = ", ".join(["?"] * len(ids))
        keys = [
            str(row[0])
            for row in tx.all(f"SELECT key FROM dedupe_keys WHERE interaction_id IN ({marks})", ids)
        ]
        self._bury(tx, keys)
        tx.execute(f"DELETE FROM dedupe_keys WHERE interaction_id IN ({marks})", ids)
        return len(keys)

"""OAuth grants: the rotated refresh token and the grant's state, kept across restarts.

The store keeps only what it is given: the refresh token arrives encrypted
(:mod:`postroom.grants` holds the key), so the database never holds it in clear.
"""

from __future__ import annotations

from postroom.model import GrantRecord, GrantState
from postroom.store.sql.core import SQLCore
from postroom.store.sql.tx import Row, Tx

_GRANT_SELECT = (
    "SELECT grant_key, state, refresh_token, configured_sha256, reason, updated_at "
    "FROM oauth_grants"
)


class GrantRecords(SQLCore):
    """``oauth_grants``: one row per grant key (e.g. token endpoint, client, user)."""

    def get_grant(self, grant_key: str) -> GrantRecord | None:
        row = self._read(lambda tx: tx.one(f"{_GRANT_SELECT} WHERE grant_key = ?", (grant_key,)))
        return None if row is None else self._grant(row)

    def list_grants(self) -> list[GrantRecord]:
        """Every grant kept, by key (for the CLI and ``/health``)."""
        rows = self._read(lambda tx: tx.all(f"{_GRANT_SELECT} ORDER BY grant_key"))
        return [self._grant(row) for row in rows]

    def save_grant(
        self,
        grant_key: str,
        state: str,
        refresh_token: bytes | None = None,
        configured_sha256: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Replace what is kept of *grant_key* (one row, written in one transaction)."""
        state = GrantState(state).value

        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO oauth_grants (grant_key, state, refresh_token, configured_sha256, "
                "reason, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (grant_key) DO UPDATE SET state = excluded.state, "
                "refresh_token = excluded.refresh_token, "
                "configured_sha256 = excluded.configured_sha256, reason = excluded.reason, "
                "updated_at = excluded.updated_at",
                (
                    grant_key,
                    state,
                    refresh_token,
                    configured_sha256,
                    reason,
                    self._dt_param(self.now()),
                ),
            )

        self._write(work)

    def _grant(self, row: Row) -> GrantRecord:
        key, state, token, configured, reason, updated = row
        return GrantRecord(
            grant_key=key,
            state=state,
            refresh_token=None if token is None else bytes(token),
            configured_sha256=configured,
            reason=reason,
            updated_at=self._dt_value(updated),
        )

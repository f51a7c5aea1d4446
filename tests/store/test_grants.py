"""OAuth grants in the store and the vault above it: rotated refresh tokens survive a
restart encrypted, a new configured token wins, an unreadable one marks the grant."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from postroom.api import GrantState, GrantVault, InlineRunner, NeedsReauthorisation
from postroom.grants import configured_hash
from postroom.store.async_store import AsyncStore
from postroom.store.sql.store import SQLStore
from postroom.store.sqlite import SQLiteStore
from postroom.testing import result_of
from tests.store.conftest import MakeStore

SECRET = "a site secret of enough length"
KEY = "azure-ropc:contoso:client-1:agent@contoso.example"


def vault_of(store: SQLStore, secret: str = SECRET) -> GrantVault:
    return GrantVault(AsyncStore(store, InlineRunner()), secret)


def test_a_grant_row_round_trips(make_store: MakeStore) -> None:
    store = make_store()
    assert store.get_grant(KEY) is None
    store.save_grant(KEY, "ok", b"\x00sealed\xff", "abc", None)
    record = store.get_grant(KEY)
    assert record is not None
    assert (record.state, record.refresh_token, record.configured_sha256) == (
        "ok",
        b"\x00sealed\xff",
        "abc",
    )
    store.save_grant(KEY, "needs-reauthorisation", None, "abc", "AADSTS50076: MFA required")
    again = store.get_grant(KEY)
    assert again is not None and again.state == GrantState.NEEDS_REAUTHORISATION
    assert again.refresh_token is None and again.reason == "AADSTS50076: MFA required"
    assert [g.grant_key for g in store.list_grants()] == [KEY]
    with pytest.raises(ValueError):
        store.save_grant(KEY, "fine-ish")


def test_a_rotated_token_survives_a_restart_encrypted(make_store: MakeStore) -> None:
    store = make_store()
    vault = vault_of(store)
    assert result_of(vault.refresh_token(KEY, "configured-RT-1")) == "configured-RT-1"
    result_of(vault.rotated(KEY, "rotated-RT-2", "configured-RT-1"))
    store.close()
    reopened = make_store()
    record = reopened.get_grant(KEY)
    assert record is not None and record.refresh_token is not None
    assert b"rotated-RT-2" not in record.refresh_token  # never in clear
    assert record.configured_sha256 == configured_hash("configured-RT-1", record.grant_key)
    assert record.configured_sha256 != configured_hash("configured-RT-1", "another grant")
    assert result_of(vault_of(reopened).refresh_token(KEY, "configured-RT-1")) == "rotated-RT-2"


def test_a_new_configured_token_wins_and_clears_the_state(make_store: MakeStore) -> None:
    vault = vault_of(make_store())
    result_of(vault.refresh_token(KEY, "old-RT"))
    result_of(vault.rotated(KEY, "rotated-RT", "old-RT"))
    result_of(vault.needs_reauthorisation(KEY, "invalid_grant: AADSTS70008", "old-RT"))
    with pytest.raises(NeedsReauthorisation, match="AADSTS70008"):
        result_of(vault.refresh_token(KEY, "old-RT"))
    assert result_of(vault.refresh_token(KEY, "new-RT-from-the-admin")) == "new-RT-from-the-admin"
    state = result_of(vault.state(KEY))
    assert state.state == "ok" and state.reason is None


def test_a_changed_secret_marks_the_grant_never_crashes(make_store: MakeStore) -> None:
    store = make_store()
    result_of(vault_of(store).rotated(KEY, "rotated-RT", "configured-RT"))
    other = vault_of(store, "another secret of enough length")
    with pytest.raises(NeedsReauthorisation) as raised:
        result_of(other.refresh_token(KEY, "configured-RT"))
    assert "cannot be decrypted" in raised.value.reason
    assert "rotated-RT" not in str(raised.value)
    record = store.get_grant(KEY)
    assert record is not None and record.state == "needs-reauthorisation"


def test_the_database_file_holds_no_token_in_clear(tmp_path: Path) -> None:
    store = SQLiteStore({"path": str(tmp_path / "db.sqlite")})
    store.open()
    vault = vault_of(store)
    result_of(vault.refresh_token(KEY, "CONFIGURED-SECRET-TOKEN"))
    result_of(vault.rotated(KEY, "ROTATED-SECRET-TOKEN", "CONFIGURED-SECRET-TOKEN"))
    store.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"ROTATED-SECRET-TOKEN" not in written
    assert b"CONFIGURED-SECRET-TOKEN" not in written


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        GrantVault(None, "short")
    assert "short" not in repr(GrantVault(None, "x" * 16))

"""OAuth grants across restarts: rotated refresh tokens, encrypted, and the grant's state.

Identity providers may rotate refresh tokens: each refresh answers a new one and
the old one stops working. A gateway that forgot the new one at a restart
would be locked out, so the OAuth auth drivers keep it in the store through
:class:`GrantVault`, which

* encrypts it with a key derived from a secret the site supplies (Fernet:
  AES-128-CBC with HMAC-SHA256, from ``cryptography``), so the database never
  holds a refresh token in clear;
* lets an administrator's new token win: the vault remembers the SHA-256 of
  the refresh token the site file held, and when the file holds another one,
  that one is used (and any ``needs-reauthorisation`` is cleared);
* turns an unreadable stored token (the key changed, the row was tampered
  with) into :class:`NeedsReauthorisation` for that grant, never a crash;
* keeps a grant's ``needs-reauthorisation`` state (revoked consent, MFA
  required) until the configuration changes, so a restart does not hammer
  the identity provider with a grant it already refused.

The store is the kernel's asynchronous one (every method returns a Deferred).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from postroom.errors import PostroomError
from postroom.model import GrantRecord, GrantState

_KEY_INFO = b"postroom oauth refresh tokens v1"


class NoEncryptionKey(PostroomError):
    """A refresh token had to be stored, and the site gave no key to encrypt it."""


class NeedsReauthorisation(PostroomError):
    """The grant cannot be used until an administrator acts (new consent, a new
    refresh token in the site file, the right key); ``reason`` says why."""

    def __init__(self, grant_key: str, reason: str) -> None:
        self.grant_key = grant_key
        self.reason = reason
        super().__init__(f"grant {grant_key}: needs re-authorisation: {reason}")


def configured_hash(token: str) -> str:
    """What the store keeps of a configured refresh token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def _fernet(secret: str | bytes) -> Fernet:
    material = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(material) < 16:
        raise ValueError("the token encryption secret must be at least 16 bytes")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(material)
    return Fernet(base64.urlsafe_b64encode(key))


class GrantVault:
    """Refresh tokens and grant states of one site, kept in its store.

    Without a *secret* the vault keeps states only (every grant but a
    rotating refresh token needs no more); storing a refresh token then
    raises :class:`NoEncryptionKey`.
    """

    def __init__(self, store: Any, secret: str | bytes | None) -> None:
        self.store = store
        self._key = _fernet(secret) if secret is not None else None

    def __repr__(self) -> str:
        return "GrantVault(<key hidden>)" if self._key is not None else "GrantVault(no key)"

    @property
    def _fernet(self) -> Fernet:
        if self._key is None:
            raise NoEncryptionKey(
                "a refresh token must be stored, but gateway.token-encryption-secret is not set"
            )
        return self._key

    async def check(self, grant_key: str, configured: str) -> None:
        """Raise :class:`NeedsReauthorisation` when *grant_key* is marked so for
        this configuration; a changed configuration (*configured*: what the
        site file holds for this grant: a password, a client secret, a
        certificate's thumbprint) starts the grant afresh."""
        wanted = configured_hash(configured)
        record: GrantRecord | None = await self.store.get_grant(grant_key)
        if record is None or record.configured_sha256 != wanted:
            if record is not None:
                await self.store.save_grant(grant_key, GrantState.OK.value, None, wanted, None)
            return
        if record.state == GrantState.NEEDS_REAUTHORISATION.value:
            raise NeedsReauthorisation(grant_key, record.reason or "marked by an earlier failure")

    async def refresh_token(self, grant_key: str, configured: str) -> str:
        """The refresh token to use now for *grant_key*.

        The stored (rotated) one, unless the site file now holds another token
        than when it was stored: then the configured one, and the grant starts
        afresh. Raises :class:`NeedsReauthorisation` when the grant is marked so
        for this configuration, or the stored token cannot be read.
        """
        wanted = configured_hash(configured)
        record: GrantRecord | None = await self.store.get_grant(grant_key)
        if record is None or record.configured_sha256 != wanted:
            await self.store.save_grant(grant_key, GrantState.OK.value, None, wanted, None)
            return configured
        if record.state == GrantState.NEEDS_REAUTHORISATION.value:
            raise NeedsReauthorisation(grant_key, record.reason or "marked by an earlier failure")
        if record.refresh_token is None:
            return configured
        try:
            return self._fernet.decrypt(record.refresh_token).decode()
        except (InvalidToken, UnicodeDecodeError):
            reason = (
                "the stored refresh token cannot be decrypted (the encryption secret changed, "
                "or the row was altered): put a new refresh token in the site file"
            )
            await self.store.save_grant(
                grant_key, GrantState.NEEDS_REAUTHORISATION.value, None, wanted, reason
            )
            raise NeedsReauthorisation(grant_key, reason) from None

    async def rotated(self, grant_key: str, new_token: str, configured: str) -> None:
        """Keep the refresh token the identity provider just issued (encrypted)."""
        sealed = self._fernet.encrypt(new_token.encode())
        await self.store.save_grant(
            grant_key, GrantState.OK.value, sealed, configured_hash(configured), None
        )

    async def needs_reauthorisation(self, grant_key: str, reason: str, configured: str) -> None:
        """Mark the grant unusable until the configuration changes (the stored
        token is dropped: the provider refused it)."""
        await self.store.save_grant(
            grant_key,
            GrantState.NEEDS_REAUTHORISATION.value,
            None,
            configured_hash(configured),
            reason,
        )

    async def state(self, grant_key: str) -> GrantRecord | None:
        record: GrantRecord | None = await self.store.get_grant(grant_key)
        return record


__all__ = ["GrantVault", "NeedsReauthorisation", "NoEncryptionKey", "configured_hash"]

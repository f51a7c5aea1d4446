"""Standard Webhooks signatures (https://www.standardwebhooks.com/, spec 1.0.0).

Following a published scheme rather than a home-made one lets a receiver
verify with a maintained library in its own language (``standardwebhooks``
on PyPI and npm, and others) instead of reimplementing ours. The symmetric
scheme:

* the secret is ``whsec_`` followed by the base64 of 24 to 64 random bytes,
  the HMAC key;
* ``webhook-id`` is the interaction's id: the same on every retry, so it is
  the receiver's idempotency key (a UUID: it holds no ``.``);
* ``webhook-timestamp`` is the attempt's time, integer Unix seconds (from the
  injected clock): a receiver refuses one too far from its own clock, which
  stops replays;
* ``webhook-signature`` is ``v1,`` and the base64 HMAC-SHA256 of
  ``{id}.{timestamp}.{body}`` over the exact body bytes; during a change of
  secret, one such signature per secret, separated by a space.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

PREFIX = "whsec_"
#: the key's size in bytes, as the specification bounds it
MIN_KEY = 24
MAX_KEY = 64

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret. ValueError otherwise; the
    message never quotes the secret."""
    if not secret.startswith(PREFIX):
        raise ValueError(f"expected {PREFIX} followed by base64 (Standard Webhooks' form)")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {PREFIX} is not valid base64") from None
    if not MIN_KEY <= len(key) <= MAX_KEY:
        raise ValueError(
            f"the key is {len(key)} bytes; Standard Webhooks asks for {MIN_KEY} to {MAX_KEY} "
            "random bytes"
        )
    return key


def new_secret(size: int = 32) -> str:
    """A fresh secret of *size* random bytes, in the ``whsec_`` form."""
    import secrets

    return PREFIX + base64.b64encode(secrets.token_bytes(size)).decode("ascii")


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signed_headers(
    keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers of one attempt; one signature per key, space-separated."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(signature(key, msg_id, timestamp, body) for key in keys),
    }


__all__ = ["PREFIX", "new_secret", "secret_key", "signature", "signed_headers"]

"""SASL client responses that every line protocol sends the same way."""

from __future__ import annotations


def xoauth2_response(username: str, token: str) -> bytes:
    """The XOAUTH2 initial client response (Google, Microsoft), before base64:
    ``user=U^Aauth=Bearer T^A^A``."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()

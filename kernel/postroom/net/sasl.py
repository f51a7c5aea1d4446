"""SASL client messages that every line protocol (IMAP, POP3, SMTP) sends the same way.

Both OAuth mechanisms put the user and the bearer token in the client's first
message. When the server refuses the token it does not fail at once: it sends
a challenge holding base64 JSON (``{"status":"401",...}`` for XOAUTH2,
``{"status":"invalid_token"}`` for OAUTHBEARER) and waits for the client's
answer; only then does the failure (NO, -ERR, 535) arrive. A client that waits
for the failure without answering hangs until a timeout, so each protocol sends
:data:`ERROR_CHALLENGE_REPLY` and reads :func:`read_error_challenge` for the
reason it reports.
"""

from __future__ import annotations

import base64
import binascii
import json

import attrs

#: what a client answers to an error challenge (RFC 7628 section 3.2.3 says
#: ``%x01`` for OAUTHBEARER; Google, Microsoft and Dovecot accept it for XOAUTH2)
ERROR_CHALLENGE_REPLY = b"\x01"


def error_challenge_reply(mechanism: str) -> bytes:
    """The answer to *mechanism*'s error challenge, before base64: the empty
    response Google and Microsoft document for XOAUTH2, :data:`ERROR_CHALLENGE_REPLY`
    (``%x01``, RFC 7628) for OAUTHBEARER. Dovecot takes either; only then
    does the failure (NO, -ERR, 535) come."""
    return b"" if mechanism.upper() == "XOAUTH2" else ERROR_CHALLENGE_REPLY


#: the mechanisms that carry a bearer token
OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


def xoauth2_response(username: str, token: str) -> bytes:
    """The XOAUTH2 initial client response (Google, Microsoft), before base64:
    ``user=U^Aauth=Bearer T^A^A``."""
    _check(username, token)
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer_response(username: str, token: str, host: str, port: int) -> bytes:
    """The OAUTHBEARER initial client response (RFC 7628), before base64:
    ``n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A``. A ``,`` or ``=`` in the
    user name is escaped as the GS2 header requires."""
    _check(username, token)
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port!r} out of range")
    user = username.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={user},\x01host={host}\x01port={int(port)}\x01auth=Bearer {token}\x01\x01".encode()


def initial_response(mechanism: str, username: str, token: str, host: str, port: int) -> bytes:
    """The first client message of *mechanism* (``XOAUTH2`` or ``OAUTHBEARER``)."""
    name = mechanism.upper()
    if name == "XOAUTH2":
        return xoauth2_response(username, token)
    if name == "OAUTHBEARER":
        return oauthbearer_response(username, token, host, port)
    raise ValueError(f"not an OAuth SASL mechanism: {mechanism!r} (use one of {OAUTH_MECHANISMS})")


def choose_mechanism(offered: list[str] | tuple[str, ...], forced: str | None = None) -> str | None:
    """The OAuth mechanism to use: *forced* (``mail.<protocol>.auth.mechanisms``)
    when the server offers it, else OAUTHBEARER before XOAUTH2 (the standard
    one first); None when the server offers neither."""
    available = {m.upper() for m in offered}
    if forced is not None:
        wanted = [m.strip().upper() for m in forced.replace(",", " ").split() if m.strip()]
        for name in wanted:
            if name in OAUTH_MECHANISMS and name in available:
                return name
        return None
    for name in ("OAUTHBEARER", "XOAUTH2"):
        if name in available:
            return name
    return None


@attrs.frozen
class ErrorChallenge:
    """What the server said when it refused a token: ``status`` (``401``,
    ``invalid_token``), and ``scope`` / ``schemes`` when given."""

    status: str
    scope: str | None = None
    schemes: str | None = None

    def describe(self) -> str:
        parts = [f"status {self.status}"]
        if self.scope:
            parts.append(f"scope {self.scope}")
        return "token refused by the server (" + ", ".join(parts) + ")"


def read_error_challenge(challenge: bytes | str) -> ErrorChallenge | None:
    """The server's error challenge (base64 JSON, as sent after ``+ `` or ``334``),
    or None when it is not one. Never raises on hostile input."""
    if isinstance(challenge, str):
        challenge = challenge.encode("ascii", "replace")
    data = challenge.strip()
    if not data or len(data) > 4096:
        return None
    try:
        decoded = json.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(decoded, dict) or "status" not in decoded:
        return None

    def text(key: str) -> str | None:
        value = decoded.get(key)
        return None if value is None else str(value)[:200]

    return ErrorChallenge(str(decoded["status"])[:200], text("scope"), text("schemes"))


def _check(username: str, token: str) -> None:
    """A control character would end the SASL field early: refuse it (never print the token)."""
    if not username or any(c in username for c in "\x00\x01\r\n"):
        raise ValueError("the user name is empty or holds a control character")
    if not token or any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
        raise ValueError("the access token is empty or holds characters a bearer token cannot")

"""SASL mechanisms for SMTP AUTH: which one to use, and what the client says.

A mechanism is a *responder*: called with ``None`` for the initial response
(RFC 4954: sent on the AUTH line; ``None`` back means "no initial response"),
then with each decoded ``334`` challenge; it returns the text to send
(base64-encoded by the caller, as UTF-8, so non-ASCII passwords work; smtplib's
own ``auth`` encodes as ASCII and fails on them).

The auth driver names the mechanism in :class:`postroom.drivers.Credentials`:
``PLAIN`` or ``LOGIN`` for a password (whichever of the two the server offers,
the named one first), ``XOAUTH2`` for an OAuth 2.0 access token (Microsoft 365,
Google), ``OAUTHBEARER`` (alias ``BEARER``, RFC 7628) for servers that
implement the standard form. A new mechanism is one more entry in
:data:`TOKEN_MECHANISMS`.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from postroom.api import Credentials

PASSWORD_MECHANISMS = ("PLAIN", "LOGIN")


class NoUsableMechanism(Exception):
    """The server offers no mechanism that fits the credentials."""


@attrs.define
class Responder:
    """Base of the responders: remembers the last challenge (servers explain a
    refused token in it, e.g. XOAUTH2's JSON error)."""

    last_challenge: bytes | None = attrs.field(default=None, init=False)

    def __call__(self, challenge: bytes | None) -> str | None:
        if challenge is not None:
            self.last_challenge = challenge
        return self.respond(challenge)

    def respond(self, challenge: bytes | None) -> str | None:
        raise NotImplementedError


@attrs.define
class Plain(Responder):
    """RFC 4616: ``\\0user\\0password`` as the initial response."""

    user: str = ""
    password: str = attrs.field(default="", repr=False)

    def respond(self, challenge: bytes | None) -> str | None:
        return f"\0{self.user}\0{self.password}"


@attrs.define
class Login(Responder):
    """The LOGIN mechanism: user name to the first challenge, password to the second.

    No initial response: some servers (older Exchange) refuse ``AUTH LOGIN <user>``.
    """

    user: str = ""
    password: str = attrs.field(default="", repr=False)
    _round: int = attrs.field(default=0, init=False)

    def respond(self, challenge: bytes | None) -> str | None:
        if challenge is None:
            return None
        self._round += 1
        return self.user if self._round == 1 else self.password


@attrs.define
class XOAuth2(Responder):
    """Google's and Microsoft's XOAUTH2: ``user=U^Aauth=Bearer T^A^A``.

    A refused token gets a ``334`` challenge holding a JSON error; the client
    answers it with an empty line and the server then sends the final ``535``.
    """

    user: str = ""
    token: str = attrs.field(default="", repr=False)

    def respond(self, challenge: bytes | None) -> str | None:
        if challenge is None:
            return f"user={self.user}\x01auth=Bearer {self.token}\x01\x01"
        return ""


@attrs.define
class OAuthBearer(Responder):
    """RFC 7628 OAUTHBEARER: ``n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A``."""

    user: str = ""
    token: str = attrs.field(default="", repr=False)
    host: str = ""
    port: int = 0

    def respond(self, challenge: bytes | None) -> str | None:
        if challenge is None:
            return (
                f"n,a={self.user},\x01host={self.host}\x01port={self.port}"
                f"\x01auth=Bearer {self.token}\x01\x01"
            )
        return "\x01"  # RFC 7628 section 3.2.3: a dummy response after an error


TOKEN_MECHANISMS: dict[str, tuple[str, Callable[[Credentials, str, int], Responder]]] = {
    "XOAUTH2": ("XOAUTH2", lambda c, h, p: XOAuth2(user=c.username, token=c.secret)),
    "OAUTHBEARER": (
        "OAUTHBEARER",
        lambda c, h, p: OAuthBearer(user=c.username, token=c.secret, host=h, port=p),
    ),
    "BEARER": (
        "OAUTHBEARER",
        lambda c, h, p: OAuthBearer(user=c.username, token=c.secret, host=h, port=p),
    ),
}


def choose(
    credentials: Credentials, advertised: list[str], host: str, port: int
) -> tuple[str, Responder]:
    """The mechanism name to put on the AUTH line and its responder.

    *advertised* is the server's ``AUTH`` EHLO line, split. Raises
    :class:`NoUsableMechanism` naming what the server offers.
    """
    offered = [m.upper() for m in advertised]
    wanted = credentials.mechanism.upper()
    if wanted in PASSWORD_MECHANISMS:
        order = [wanted, *(m for m in PASSWORD_MECHANISMS if m != wanted)]
        for name in order:
            if name in offered:
                if name == "PLAIN":
                    return name, Plain(user=credentials.username, password=credentials.secret)
                return name, Login(user=credentials.username, password=credentials.secret)
        raise NoUsableMechanism(
            f"the server offers AUTH {' '.join(offered) or '(nothing)'}; a password needs "
            "PLAIN or LOGIN"
        )
    if wanted in TOKEN_MECHANISMS:
        name, make = TOKEN_MECHANISMS[wanted]
        if name not in offered:
            raise NoUsableMechanism(
                f"the server offers AUTH {' '.join(offered) or '(nothing)'}, not {name}"
            )
        return name, make(credentials, host, port)
    raise NoUsableMechanism(f"the SMTP sender does not implement the mechanism {wanted}")

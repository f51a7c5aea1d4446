"""SASL mechanisms for SMTP AUTH: which one to use, and what the client says.

A mechanism is a *responder*: called with ``None`` for the initial response
(RFC 4954: sent on the AUTH line; ``None`` back means "no initial response"),
then with each decoded ``334`` challenge; it returns the text to send
(base64-encoded by the caller, as UTF-8, so non-ASCII passwords work; smtplib's
own ``auth`` encodes as ASCII and fails on them).

The auth driver names the mechanism in :class:`postroom.drivers.Credentials`:
``PLAIN`` or ``LOGIN`` for a password (whichever of the two the server offers,
the named one first). For an OAuth 2.0 access token (``Credentials.bearer``)
the server's offer decides, as in IMAP and POP3
(:func:`postroom.api.choose_mechanism`): OAUTHBEARER (RFC 7628) before
XOAUTH2 (Microsoft 365, Google), unless ``mail.smtp.auth.mechanisms`` forces one.
"""

from __future__ import annotations

import attrs

from postroom.api import Credentials, choose_mechanism, error_challenge_reply, initial_response

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
class Bearer(Responder):
    """XOAUTH2 (Google, Microsoft) or OAUTHBEARER (RFC 7628) with an access token.

    The initial response is the kernel's (:func:`postroom.api.initial_response`).
    A refused token gets a ``334`` error challenge holding base64 JSON; it is
    answered (:func:`postroom.api.error_challenge_reply`: empty for XOAUTH2,
    ``%x01`` for OAUTHBEARER) and the server then sends the final ``535``.
    """

    mechanism: str = "XOAUTH2"
    user: str = ""
    token: str = attrs.field(default="", repr=False)
    host: str = ""
    port: int = 0

    def respond(self, challenge: bytes | None) -> str | None:
        if challenge is None:
            return initial_response(
                self.mechanism, self.user, self.token, self.host, self.port
            ).decode("utf-8")
        return error_challenge_reply(self.mechanism).decode("ascii")


def choose(
    credentials: Credentials,
    advertised: list[str],
    host: str,
    port: int,
    forced: str | None = None,
) -> tuple[str, Responder]:
    """The mechanism name to put on the AUTH line and its responder.

    *advertised* is the server's ``AUTH`` EHLO line, split; *forced* is
    ``mail.smtp.auth.mechanisms`` (for a token: the OAuth mechanism to use).
    Raises :class:`NoUsableMechanism` naming what the server offers.
    """
    offered = [m.upper() for m in advertised]
    said = " ".join(offered) or "(nothing)"
    if credentials.bearer:
        name = choose_mechanism(offered, forced)
        if name is None:
            wanted = f"{forced} (mail.smtp.auth.mechanisms)" if forced else "XOAUTH2 or OAUTHBEARER"
            raise NoUsableMechanism(f"the server offers AUTH {said}, not {wanted}")
        return name, Bearer(
            mechanism=name,
            user=credentials.username,
            token=credentials.secret,
            host=host,
            port=port,
        )
    wanted = credentials.mechanism.upper()
    if wanted in PASSWORD_MECHANISMS:
        order = [wanted, *(m for m in PASSWORD_MECHANISMS if m != wanted)]
        for name in order:
            if name in offered:
                if name == "PLAIN":
                    return name, Plain(user=credentials.username, password=credentials.secret)
                return name, Login(user=credentials.username, password=credentials.secret)
        raise NoUsableMechanism(f"the server offers AUTH {said}; a password needs PLAIN or LOGIN")
    raise NoUsableMechanism(f"the SMTP sender does not implement the mechanism {wanted}")

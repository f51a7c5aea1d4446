"""Access tokens shared by every connection that uses the same grant.

OAuth auth drivers (Azure, Google) ask this cache instead of the identity
provider on each login: one mailbox polled every few seconds, or twenty
mailboxes of one tenant, must not cost a token request each time. The cache
keeps three promises:

* a token is reused until ``margin`` seconds before it expires (measured on
  the injected clock), so a login never starts with a token about to lapse;
* concurrent requests for the same key wait for **one** refresh (single
  flight) and all get its result, success or failure; a failure is not cached;
* :meth:`TokenCache.invalidate` after a server refused a token (revoked, or
  the password changed) forces a refresh, but only when the refused token is
  still the cached one, so a connection that was slow to fail does not throw
  away the token another connection just fetched.

Token values never appear in ``repr`` or logs.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.python.failure import Failure

#: seconds before expiry at which a cached token counts as expired (the
#: commercial product's ``token-expiry-margin-time`` default)
DEFAULT_MARGIN = 300.0


@attrs.frozen
class Token:
    """An access token and when it expires (clock seconds; None: never)."""

    value: str = attrs.field(repr=False)
    expires_at: float | None = None
    token_type: str = "Bearer"
    #: seconds the token was issued for (None: unknown)
    lifetime: float | None = None

    @classmethod
    def expiring(
        cls, value: str, expires_in: float | None, now: float, token_type: str = "Bearer"
    ) -> Token:
        """A token answered with ``expires_in`` seconds, as most token endpoints do."""
        if expires_in is None:
            return cls(value, None, token_type)
        return cls(value, now + float(expires_in), token_type, float(expires_in))

    def fresh(self, now: float, margin: float) -> bool:
        """Whether the token may still be used: not within *margin* of its expiry.
        A margin longer than half the token's lifetime counts as half of it, or
        a short-lived token would never be reused."""
        if self.expires_at is None:
            return True
        if self.lifetime is not None:
            margin = min(margin, self.lifetime / 2)
        return now < self.expires_at - margin


class TokenCache:
    """Tokens by grant key (e.g. ``(token endpoint, client id, scope, user)``)."""

    def __init__(self, clock: Any, margin: float = DEFAULT_MARGIN) -> None:
        if margin < 0:
            raise ValueError("margin must not be negative")
        self.clock = clock
        self.margin = margin
        self._tokens: dict[Hashable, Token] = {}
        self._waiting: dict[Hashable, list[Deferred[Token]]] = {}
        #: token requests made (for metrics and tests)
        self.fetches = 0

    def get(
        self,
        key: Hashable,
        fetch: Callable[[], Awaitable[Token] | Token],
        margin: float | None = None,
    ) -> Deferred[Token]:
        """The cached token for *key*, or the result of one ``fetch()`` shared
        by every caller that asks while it runs. *fetch* may return a Token, a
        Deferred or a coroutine; *margin* replaces the cache's for this key."""
        cached = self._tokens.get(key)
        margin = self.margin if margin is None else margin
        if cached is not None and cached.fresh(self.clock.seconds(), margin):
            return succeed(cached)
        waiter: Deferred[Token] = Deferred()
        if key in self._waiting:
            self._waiting[key].append(waiter)
            return waiter
        self._waiting[key] = [waiter]
        self.fetches += 1
        fetching: Deferred[Any] = maybeDeferred(fetch)
        fetching.addCallback(_awaited)
        fetching.addBoth(self._fetched, key)
        return waiter

    def peek(self, key: Hashable) -> Token | None:
        """The cached token, fresh or not (diagnostics)."""
        return self._tokens.get(key)

    def invalidate(self, key: Hashable, refused: str | None = None) -> bool:
        """Forget *key*'s token; with *refused*, only if that is still the one
        cached. True when something was forgotten."""
        cached = self._tokens.get(key)
        if cached is None or (refused is not None and cached.value != refused):
            return False
        del self._tokens[key]
        return True

    def clear(self) -> None:
        self._tokens.clear()

    def _fetched(self, result: Token | Failure, key: Hashable) -> None:
        waiters = self._waiting.pop(key)
        if isinstance(result, Failure):
            for waiter in waiters:
                waiter.errback(result)
            return None
        if not isinstance(result, Token):
            wrong = type(result).__name__
            failure = Failure(TypeError(f"a token fetch returned {wrong}, not Token"))
            for waiter in waiters:
                waiter.errback(failure)
            return None
        self._tokens[key] = result
        for waiter in waiters:
            waiter.callback(result)
        return None


def _awaited(result: Any) -> Any:
    """Let *fetch* be a coroutine function as well as a plain or Deferred one."""
    if hasattr(result, "__await__") and not isinstance(result, Deferred):
        return ensureDeferred(result)
    return result


# --------------------------------------------------------- token endpoint errors


class TokenFailure(enum.StrEnum):
    """What a failed token request means for the mailboxes that use the grant."""

    #: this grant (one mailbox's user, or one service account subject) needs an
    #: administrator: revoked or expired consent, MFA required, consent missing
    GRANT = "grant"
    #: the app registration itself is refused (bad or expired client secret or
    #: certificate): every mailbox using it needs an administrator
    CLIENT = "client"
    #: the identity provider is down, slow or throttling: try again later
    TEMPORARY = "temporary"


#: Azure AD error codes (``AADSTSnnnnn`` in ``error_description``, or
#: ``error_codes``) that mean an administrator must act on the app registration
_CLIENT_CODES = frozenset({7000215, 7000222, 700016, 700027, 7000112, 7000218})
#: ... or on this grant (user, consent, MFA, password)
_GRANT_CODES = frozenset({50076, 50079, 50158, 65001, 50126, 50053, 50057, 70008, 700082})
_GRANT_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required"})
_AADSTS = re.compile(r"AADSTS(\d{5,7})")


class TokenError(Exception):
    """A token request failed: ``kind`` says whom it concerns, ``detail`` is the
    provider's own words (error code and description, passed through as they
    come, never a secret we sent)."""

    def __init__(self, kind: TokenFailure, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status


def classify_token_error(status: int | None, body: bytes | str | None) -> TokenError:
    """Read a token endpoint's failure (HTTP *status*, JSON *body*; None for a
    connection failure or timeout) as RFC 6749 section 5.2, Azure AD and Google
    answer it."""
    if status is None or status >= 500 or status in (408, 429):
        return TokenError(TokenFailure.TEMPORARY, f"identity provider: HTTP {status}", status)
    data: dict[str, Any] = {}
    if body:
        try:
            loaded = json.loads(body)
            if isinstance(loaded, dict):
                data = loaded
        except ValueError:
            pass
    error = str(data.get("error") or f"HTTP {status}")[:100]
    description = " ".join(str(data.get("error_description") or "").split())[:300]
    detail = f"{error}: {description}" if description else error
    codes = {int(c) for c in _AADSTS.findall(description)}
    for code in data.get("error_codes") or []:
        if isinstance(code, int):
            codes.add(code)
    if codes & _CLIENT_CODES or error in ("invalid_client", "unauthorized_client"):
        return TokenError(TokenFailure.CLIENT, detail, status)
    if codes & _GRANT_CODES or error in _GRANT_ERRORS:
        return TokenError(TokenFailure.GRANT, detail, status)
    if error == "temporarily_unavailable":
        return TokenError(TokenFailure.TEMPORARY, detail, status)
    # anything else (invalid_request, invalid_scope, unsupported_grant_type) is a
    # configuration mistake only an administrator can fix, for this grant
    return TokenError(TokenFailure.GRANT, detail, status)


__all__ = [
    "DEFAULT_MARGIN",
    "Token",
    "TokenCache",
    "TokenError",
    "TokenFailure",
    "classify_token_error",
]

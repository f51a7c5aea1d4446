"""What every OAuth auth driver of one gateway shares: one cache, one vault, one HTTP client.

A hundred mailboxes behind one app registration must cost one token request
per expiry, and an app registration the identity provider refuses must be
reported once, not a hundred times. That needs state above the single
driver: :class:`OAuthRuntime`, built by the kernel and handed to every auth
driver in :attr:`postroom.drivers.DriverContext.oauth`.
"""

from __future__ import annotations

import logging
from typing import Any

from postroom.grants import GrantVault, NeedsReauthorisation
from postroom.net.proxy import ProxySettings
from postroom.oauth.http import TokenHTTP
from postroom.tokens import DEFAULT_MARGIN, TokenCache

log = logging.getLogger(__name__)


class OAuthRuntime:
    """The token cache, the grant vault and the token HTTP client of one gateway.

    *store* is the kernel's asynchronous store (grant states and rotated
    refresh tokens survive a restart there); *secret* the site's
    ``gateway.token-encryption-secret`` (None: states only, no refresh
    token can be stored); *proxy* the ``proxy`` section's proxy, used for
    token requests.
    """

    def __init__(
        self,
        reactor: Any,
        clock: Any,
        store: Any,
        secret: str | bytes | None = None,
        *,
        proxy: ProxySettings | None = None,
        http: TokenHTTP | None = None,
        metrics: Any = None,
    ) -> None:
        self.clock = clock
        self.cache = TokenCache(clock, margin=DEFAULT_MARGIN)
        self.vault = GrantVault(store, secret)
        self.http = http if http is not None else TokenHTTP(reactor, clock, proxy=proxy)
        self.has_key = secret is not None
        #: the kernel's :class:`~postroom.metrics.Metrics` (None: not counted)
        self.metrics = metrics
        self._announced: set[str] = set()

    def __repr__(self) -> str:
        return f"OAuthRuntime({self.http!r}, {self.vault!r})"

    @property
    def token_requests(self) -> int:
        """Token requests made since start (``/metrics``)."""
        return self.cache.fetches

    async def usable(self, grant_key: str, configured: str) -> None:
        """Raise :class:`NeedsReauthorisation` if *grant_key* is marked for this configuration."""
        await self.vault.check(grant_key, configured)

    async def mark(self, grant_key: str, configured: str, reason: str) -> NeedsReauthorisation:
        """Persist ``needs-reauthorisation`` for *grant_key*; the error to raise."""
        await self.vault.needs_reauthorisation(grant_key, reason, configured)
        return NeedsReauthorisation(grant_key, reason)

    def counted(self, outcome: str) -> None:
        """Count a token request's outcome (``ok``, or a failure kind)."""
        if self.metrics is not None:
            self.metrics.token_requests.labels(outcome).inc()

    def expires(self, mailbox: str, at: float | None) -> None:
        """Show when *mailbox*'s token expires (``/metrics``)."""
        if self.metrics is not None:
            self.metrics.token_expiry.labels(mailbox).set(at or 0)

    def first_report(self, key: str) -> bool:
        """True the first time *key* is reported in this process (say it once)."""
        if key in self._announced:
            return False
        self._announced.add(key)
        return True


__all__ = ["OAuthRuntime"]

"""Doubles shared by the protocol tests: an auth driver that hands out one
secret, and after ``invalidate()`` the next of *refreshed* (a token refresh);
the ``proxy`` section of a site configuration."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from postroom.drivers import Credentials


class FakeAuthenticator:
    def __init__(
        self,
        user: str,
        secret: str,
        mechanism: str = "PLAIN",
        refreshed: tuple[str, ...] = (),
        protocol: str | None = None,
    ) -> None:
        self.creds = Credentials(user, secret, mechanism)
        self.refreshed = list(refreshed)
        self.protocol = protocol
        self.invalidated = 0
        self.asked = 0

    def credentials(self, protocol: str) -> defer.Deferred[Credentials]:
        if self.protocol is not None:
            assert protocol == self.protocol
        self.asked += 1
        return defer.succeed(self.creds)

    def invalidate(self) -> None:
        self.invalidated += 1
        if self.refreshed:
            fresh = self.refreshed.pop(0)
            self.creds = Credentials(self.creds.username, fresh, self.creds.mechanism)


#: the ``proxy`` section as the kernel's defaults leave it (switched off)
PROXY_DEFAULTS: dict[str, Any] = {"useProxy": False, "type": "socks5", "resolve-at-proxy": True}


def proxy_section(name: str, proxy: dict[str, Any] | None = None) -> Any:
    """``site.get("proxy", name)`` of a site whose ``proxy`` section is *proxy*
    (over the defaults); KeyError for a name the section does not have."""
    values = PROXY_DEFAULTS | (proxy or {})
    if name not in values and name not in ("host", "port", "user", "password"):
        raise KeyError(name)
    return values.get(name)

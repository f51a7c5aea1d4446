"""An auth driver double shared by the protocol tests: hands out one secret,
and after ``invalidate()`` the next of *refreshed* (a token refresh)."""

from __future__ import annotations

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

"""Back-off after refused logins, so a wrong password never locks the account.

Servers lock an account (or a tenant's IP) after a run of failed logins; a
mailbox retrying a wrong password at the connection back-off (seconds to five
minutes) would get there. A refused login is therefore its own state,
``auth-failed``, with its own delay: ``login-retry-initial`` after the first
refusal, doubling on each consecutive one up to ``login-retry-max``, reset
by a successful login. Connection failures neither count nor reset it.

One :class:`LoginPolicy` per mailbox service and one for the outbox's sender,
all on the kernel's injected clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs

#: a mailbox's (or the smtp-client's) state, in ``/health`` and ``/metrics``:
#: before the first connection, connected, the last connection failed
#: (connection back-off), the server refused the credentials (this policy)
STARTING = "starting"
CONNECTED = "connected"
CONNECTION_FAILED = "connection-failed"
AUTH_FAILED = "auth-failed"
#: an OAuth grant or app registration the identity provider refused (revoked
#: consent, MFA required, expired client secret): nothing to retry until an
#: administrator acts; the state is kept in the store across restarts
NEEDS_REAUTHORISATION = "needs-reauthorisation"
STATES = (STARTING, CONNECTED, CONNECTION_FAILED, AUTH_FAILED, NEEDS_REAUTHORISATION)
#: the states that stop a mailbox or the sender until someone acts
REFUSED_STATES = (AUTH_FAILED, NEEDS_REAUTHORISATION)
#: default delays: one minute, doubling to half an hour
DEFAULT_INITIAL = 60.0
DEFAULT_MAXIMUM = 1800.0
#: 2**40 times any initial delay is far beyond every cap: no overflow
_MAX_EXPONENT = 40


@attrs.define
class LoginPolicy:
    """Consecutive refused logins, the last refusal and when to try again."""

    clock: Any
    initial: float = DEFAULT_INITIAL
    maximum: float = DEFAULT_MAXIMUM
    failures: int = 0
    last_error: str | None = None
    #: clock seconds of the next login attempt (None: no refusal pending)
    next_attempt: float | None = None

    @classmethod
    def from_config(cls, config: Any, clock: Any) -> LoginPolicy:
        """The site's ``gateway: login-retry-initial`` and ``login-retry-max``."""
        return cls(
            clock,
            initial=float(config.get("gateway", "login-retry-initial")),
            maximum=float(config.get("gateway", "login-retry-max")),
        )

    def delay(self, failures: int) -> float:
        """The wait after the *failures*-th consecutive refusal (no jitter: the
        operator reads the next attempt in ``/health`` and it must hold)."""
        exponent = min(max(0, failures - 1), _MAX_EXPONENT)
        return min(self.maximum, self.initial * 2**exponent)

    def refused(self, error: str) -> float:
        """Count a refused login (*error*: the server's words); returns the delay."""
        self.failures += 1
        self.last_error = error
        wait = self.delay(self.failures)
        self.next_attempt = self.clock.seconds() + wait
        return wait

    def hold(self, error: str) -> float:
        """Count a refusal no retry can fix (a grant needing re-authorisation):
        look again only after the longest wait; returns it."""
        self.failures += 1
        self.last_error = error
        self.next_attempt = self.clock.seconds() + self.maximum
        return self.maximum

    def succeeded(self) -> None:
        """A login went through: the count starts again."""
        self.failures = 0
        self.last_error = None
        self.next_attempt = None

    @property
    def refusing(self) -> bool:
        """Whether the last login was refused."""
        return self.failures > 0

    def remaining(self) -> float:
        """Seconds until a login may be tried again (0: now)."""
        if self.next_attempt is None:
            return 0.0
        return max(0.0, self.next_attempt - self.clock.seconds())

    def next_attempt_iso(self) -> str | None:
        """The next attempt as an ISO 8601 UTC time, for ``/health`` and the log."""
        if self.next_attempt is None:
            return None
        return datetime.fromtimestamp(self.next_attempt, UTC).isoformat()

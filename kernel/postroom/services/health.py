"""Per-mailbox health, read by the health endpoint, the metrics and the CLI."""

from __future__ import annotations

from datetime import datetime

import attrs

from postroom.loginpolicy import STARTING


@attrs.define
class MailboxHealth:
    connected: bool = False
    state: str = STARTING
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    ingested: int = 0
    duplicates: int = 0
    failed: int = 0
    quarantined: int = 0
    #: consecutive connection failures (the connection back-off's count)
    consecutive_failures: int = 0
    #: consecutive refused logins (the login policy's count)
    auth_failures: int = 0
    #: when the next connection or login attempt is due, after a failure
    next_attempt: datetime | None = None
    #: messages being parsed and analysed now: source key -> since (clock seconds)
    analysing: dict[str, float] = attrs.field(factory=dict)

    def stuck(self, now: float, after: float) -> list[tuple[str, float]]:
        """Messages analysed for longer than *after* seconds (wall clock), longest first."""
        late = [(key, now - since) for key, since in self.analysing.items() if now - since > after]
        return sorted(late, key=lambda pair: -pair[1])

    def as_dict(
        self, now: float | None = None, stuck_after: float | None = None
    ) -> dict[str, object]:
        data = attrs.asdict(self)
        for key in ("last_success", "last_error_at", "next_attempt"):
            value = data[key]
            data[key] = value.isoformat() if value else None
        data["analysing"] = len(self.analysing)
        if now is not None and stuck_after is not None:
            data["stuck"] = [
                {"message": key, "seconds": round(seconds, 1)}
                for key, seconds in self.stuck(now, stuck_after)
            ]
        return data

"""Per-mailbox health, read by the health endpoint, the metrics and the CLI."""

from __future__ import annotations

from datetime import datetime

import attrs


@attrs.define
class MailboxHealth:
    connected: bool = False
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    ingested: int = 0
    duplicates: int = 0
    failed: int = 0
    quarantined: int = 0
    consecutive_failures: int = 0

    def as_dict(self) -> dict[str, object]:
        data = attrs.asdict(self)
        for key in ("last_success", "last_error_at"):
            value = data[key]
            data[key] = value.isoformat() if value else None
        return data

"""Prometheus metrics, one registry per kernel (nothing global).

Served at ``GET /metrics``. Per mailbox: messages ingested, duplicates,
errors, quarantine depth, connection state, last success, lag (arrival in the
mailbox to commit); outbox depth by state and send failures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: lag buckets in seconds: push delivery is about a second, polling minutes
LAG_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingested = Counter(
            "postroom_messages_ingested", "Interactions committed", ["mailbox"], registry=r
        )
        self.duplicates = Counter(
            "postroom_messages_duplicate",
            "Messages recognised as already stored",
            ["mailbox"],
            registry=r,
        )
        self.errors = Counter(
            "postroom_errors",
            "Failures by mailbox and kind (connection, message)",
            ["mailbox", "kind"],
            registry=r,
        )
        self.quarantine_depth = Gauge(
            "postroom_quarantine_depth", "Messages held in quarantine", ["mailbox"], registry=r
        )
        self.connected = Gauge(
            "postroom_mailbox_connected", "1 when the mailbox is connected", ["mailbox"], registry=r
        )
        self.last_success = Gauge(
            "postroom_mailbox_last_success_timestamp_seconds",
            "End of the last complete pass",
            ["mailbox"],
            registry=r,
        )
        self.lag = Histogram(
            "postroom_mailbox_lag_seconds",
            "From arrival in the mailbox to commit",
            ["mailbox"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.outbox_depth = Gauge(
            "postroom_outbox_depth", "Outbox entries by state", ["state"], registry=r
        )
        self.send_failures = Counter(
            "postroom_send_failures", "Send attempts that failed", ["final"], registry=r
        )
        self.handoff_failures = Counter(
            "postroom_handoff_failures", "Hand-off (submit) attempts that failed", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

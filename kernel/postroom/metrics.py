"""Prometheus metrics, one registry per kernel (nothing global).

Served at ``GET /metrics``. Per mailbox: messages ingested, duplicates,
errors, quarantine depth, connection state, last success, lag (arrival in the
mailbox to commit); per mailbox and for the ``smtp-client``: state (``auth-failed``
among them), consecutive refused logins, next attempt; outbox depth by state
and send failures; hand-off failures (per target too); event stream clients;
OAuth token requests by outcome and each mailbox's token expiry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest

from postroom.loginpolicy import STATES

#: the ``mailbox`` label of the outbox sender's login metrics
SMTP_CLIENT = "smtp-client"

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
        self.state = Enum(
            "postroom_mailbox_state",
            "Mailbox (or smtp-client) state: auth-failed when the server refuses the credentials",
            ["mailbox"],
            states=list(STATES),
            registry=r,
        )
        self.login_failures = Gauge(
            "postroom_login_failures",
            "Consecutive refused logins, per mailbox and smtp-client (0: the last login "
            "went through)",
            ["mailbox"],
            registry=r,
        )
        self.next_attempt = Gauge(
            "postroom_next_attempt_timestamp_seconds",
            "When a mailbox (or the smtp-client) that failed tries again (0: not waiting)",
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
        self.handoff_target_failures = Counter(
            "postroom_handoff_target_failures",
            "Hand-off attempts a target failed (outcome failed: retried) or refused for good "
            "(outcome refused), by target",
            ["target", "outcome"],
            registry=r,
        )
        self.event_clients = Gauge(
            "postroom_event_clients", "Clients reading the event stream (GET /events)", registry=r
        )
        self.event_clients_dropped = Counter(
            "postroom_event_clients_dropped",
            "Event stream clients dropped for reading too slowly",
            registry=r,
        )
        self.token_requests = Counter(
            "postroom_token_requests",
            "OAuth token requests to identity providers, by outcome (ok, grant, client, temporary)",
            ["outcome"],
            registry=r,
        )
        self.token_expiry = Gauge(
            "postroom_token_expiry_timestamp_seconds",
            "When the access token a mailbox (or the smtp-client) last logged in with expires",
            ["mailbox"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

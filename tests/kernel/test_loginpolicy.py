"""The login policy: refused logins back off exponentially to a cap, apart from
connection failures, and the state shows in /health and /metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from postroom.errors import AuthenticationFailed, SourceError
from postroom.grants import NeedsReauthorisation
from postroom.loginpolicy import LoginPolicy
from postroom.services.gateway import Gateway
from tests.conftest import run
from tests.kernel.test_gateway import make_kernel


def test_delays_double_to_the_cap_and_reset_on_success() -> None:
    clock = task.Clock()
    policy = LoginPolicy(clock, initial=60, maximum=1800)
    waits = [policy.refused("535 nope") for _ in range(8)]
    assert waits == [60, 120, 240, 480, 960, 1800, 1800, 1800]
    assert policy.failures == 8 and policy.last_error == "535 nope"
    assert policy.remaining() == 1800
    clock.advance(1000)
    assert policy.remaining() == 800
    assert policy.next_attempt_iso() == datetime.fromtimestamp(1800, UTC).isoformat()
    policy.succeeded()
    assert (policy.failures, policy.last_error, policy.next_attempt) == (0, None, None)
    assert policy.refused("again") == 60


def test_a_long_run_of_refusals_does_not_overflow() -> None:
    policy = LoginPolicy(task.Clock(), initial=3600, maximum=86400)
    for _ in range(2000):
        policy.refused("no")
    assert policy.delay(policy.failures) == 86400


class ScriptedSource:
    """A source whose connects follow a script: "auth", "down" or "ok"."""

    supports_push = False

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.connects = 0

    async def connect(self) -> None:
        self.connects += 1
        outcome = self.script.pop(0) if self.script else "ok"
        if outcome == "auth":
            raise AuthenticationFailed(
                "login refused for mailbox support on server imap.test:143: "
                "[AUTHENTICATIONFAILED] Authentication failed."
            )
        if outcome == "down":
            raise SourceError("connection to server imap.test:143 failed: connection refused")
        if outcome == "reauth":
            raise NeedsReauthorisation(
                "azure-ropc:alice", "invalid_grant: AADSTS50076: MFA required"
            )

    async def disconnect(self) -> None:
        pass

    async def list_new(self, cursor: Any) -> list[Any]:
        return []

    def wait_for_new(self, seconds: float) -> Any:
        return task.deferLater(self.clock, seconds, lambda: None)


@pytest.fixture
def scripted(quickstart: Path) -> Any:
    """Start a gateway whose one mailbox connects through a ScriptedSource."""
    started: list[Gateway] = []

    def start(script: list[str]) -> tuple[task.Clock, Gateway, ScriptedSource]:
        clock = task.Clock()
        kernel = make_kernel(quickstart, clock=clock)
        source = ScriptedSource(script)
        source.clock = clock  # type: ignore[attr-defined]
        kernel.build_source = lambda mailbox: source  # type: ignore[method-assign]
        gateway = Gateway(kernel)
        gateway.startService()
        started.append(gateway)
        return clock, gateway, source

    yield start
    for gateway in started:
        run(gateway.stopService())


def test_wrong_password_backs_off_60_120_240_to_the_cap(scripted: Any) -> None:
    clock, gateway, source = scripted(["auth"] * 8)
    mailbox = gateway.mailboxes[0]
    assert source.connects == 1
    for tries, wait in enumerate((60, 120, 240, 480, 960, 1800, 1800), start=1):
        clock.advance(wait - 1)
        assert source.connects == tries  # not yet
        clock.advance(1)
        assert source.connects == tries + 1
        assert mailbox.health.auth_failures == tries + 1
    assert mailbox.health.auth_failures == 8
    assert mailbox.health.consecutive_failures == 0  # not connection failures
    clock.advance(1800)  # the script is done: the password was fixed
    assert source.connects == 9
    assert mailbox.health.state == "connected" and mailbox.health.auth_failures == 0
    assert mailbox.health.next_attempt is None
    assert mailbox.login_policy.failures == 0


def test_auth_failed_state_in_health_and_metrics(scripted: Any) -> None:
    clock, gateway, _source = scripted(["auth", "auth", "auth"])
    clock.advance(60)
    clock.advance(120)
    health = gateway.health()["support"]
    assert health["state"] == "auth-failed"
    assert health["connected"] is False
    assert health["auth_failures"] == 3
    assert health["next_attempt"] == datetime.fromtimestamp(180 + 240, UTC).isoformat()
    assert "[AUTHENTICATIONFAILED] Authentication failed." in health["last_error"]
    metrics = gateway.kernel.metrics.render().decode()
    assert 'postroom_login_failures{mailbox="support"} 3.0' in metrics
    assert 'postroom_mailbox_state{mailbox="support",postroom_mailbox_state="auth-failed"} 1.0' in (
        metrics
    )
    assert 'postroom_errors_total{kind="auth",mailbox="support"} 3.0' in metrics
    assert 'postroom_next_attempt_timestamp_seconds{mailbox="support"} 420.0' in metrics
    clock.advance(240)
    metrics = gateway.kernel.metrics.render().decode()
    assert 'postroom_login_failures{mailbox="support"} 0.0' in metrics
    assert 'postroom_mailbox_state{mailbox="support",postroom_mailbox_state="connected"} 1.0' in (
        metrics
    )


def test_connection_failures_do_not_count_as_refused_logins(scripted: Any) -> None:
    clock, gateway, source = scripted(["auth", "down", "down", "auth"])
    mailbox = gateway.mailboxes[0]
    assert mailbox.health.auth_failures == 1
    clock.advance(60)  # the login policy's first delay
    assert source.connects == 2 and mailbox.health.consecutive_failures == 1
    # the connection back-off (about a second), not the login policy's
    assert mailbox.health.auth_failures == 1
    assert mailbox.health.state == "auth-failed"  # a network blip hides no wrong password
    clock.advance(1.5)
    assert source.connects == 3 and mailbox.health.consecutive_failures == 2
    clock.advance(3)
    assert source.connects == 4
    assert mailbox.health.auth_failures == 2  # the count went on: 120 s now
    clock.advance(119)
    assert source.connects == 4
    clock.advance(1)
    assert source.connects == 5 and mailbox.health.state == "connected"


def test_a_connection_failure_alone_is_connection_failed(scripted: Any) -> None:
    clock, gateway, _source = scripted(["down"])
    health = gateway.health()["support"]
    assert health["state"] == "connection-failed" and health["auth_failures"] == 0
    clock.advance(2)
    assert gateway.health()["support"]["state"] == "connected"


def test_the_delays_are_options(quickstart: Path, scripted: Any) -> None:
    text = quickstart.read_text()
    assert "\ngateway:" not in text
    options = "gateway:\n  login-retry-initial: '00:00:10'\n  login-retry-max: 25\n"
    quickstart.write_text(text + options)
    clock, gateway, source = scripted(["auth"] * 4)
    for tries, wait in enumerate((10, 20, 25), start=1):
        clock.advance(wait - 1)
        assert source.connects == tries
        clock.advance(1)
    assert source.connects == 4 and gateway.mailboxes[0].health.auth_failures == 4


def test_a_grant_needing_reauthorisation_waits_for_an_administrator(scripted: Any) -> None:
    clock, gateway, source = scripted(["reauth", "reauth"])
    mailbox = gateway.mailboxes[0]
    health = gateway.health()["support"]
    assert health["state"] == "needs-reauthorisation"
    assert "AADSTS50076" in health["last_error"]
    assert health["auth_failures"] == 0  # not a refused password: no login back-off count
    clock.advance(1799)
    assert source.connects == 1  # looked at again only after login-retry-max
    clock.advance(1)
    assert source.connects == 2
    clock.advance(1800)
    assert source.connects == 3 and mailbox.health.state == "connected"
    metrics = gateway.kernel.metrics.render().decode()
    assert 'postroom_errors_total{kind="auth",mailbox="support"} 2.0' in metrics


def test_states_are_kept_in_the_store_for_the_cli(scripted: Any) -> None:
    clock, gateway, _source = scripted(["auth", "down", "reauth"])
    store = gateway.kernel.store

    def kept() -> Any:
        [record] = run(store.list_mailbox_states())
        return record

    record = kept()
    assert (record.mailbox, record.state, record.failures) == ("support", "auth-failed", 1)
    assert "[AUTHENTICATIONFAILED]" in record.reason
    assert record.next_attempt == datetime.fromtimestamp(60, UTC)
    clock.advance(60)  # "down": still auth-failed (a network blip hides no wrong password)
    assert kept().state == "auth-failed"
    clock.advance(30)
    record = kept()
    assert record.state == "needs-reauthorisation" and "MFA required" in record.reason
    clock.advance(1800)
    record = kept()
    assert (record.state, record.reason, record.next_attempt) == ("connected", None, None)

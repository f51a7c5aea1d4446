"""A wrong SMTP password pauses the whole outbox by the login policy.

The outbox worker and the SMTP sender as the kernel builds them, on a fake
clock, against the scripted SMTP peer of ``fakes.py``: queued entries stay
queued with no attempt counted, one login is tried per back-off step (not one
per entry), and everything goes out once the login is accepted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet import defer, task

from postroom.grants import NeedsReauthorisation
from postroom.kernel import Kernel
from postroom.model import OutboundRequest
from postroom.runner import InlineRunner
from postroom.services.outbound import OutboundService, queue_send
from postroom_smtp.sender import SMTPSender
from tests.conftest import run
from tests.plugins.smtp.fakes import ScriptedServer, client_factory

SITE = (
    "tenant-id: 1\nstore: {driver: memory}\nsmtp-client:\n  server-type: smtp\n"
    "  server: mail.example.test\n  smtp-connection-security: none\n"
    "  enable-authentication: true\n  user: agent1\n  password: wrong-one\n"
)
QUEUED = 5


@pytest.fixture
def outbox(tmp_path: Path) -> Any:
    """(clock, kernel, outbound service, server) with QUEUED entries waiting."""
    path = tmp_path / "postroom.yaml"
    path.write_text(SITE, encoding="utf-8")
    clock = task.Clock()
    kernel = Kernel(path, clock=clock, runner=InlineRunner())
    run(kernel.open())
    server = ScriptedServer(extensions=["AUTH PLAIN"], password="secret-agent1")
    sender = kernel.build_sender()
    assert isinstance(sender, SMTPSender)
    sender.client_factory = client_factory(server)
    for n in range(QUEUED):
        request = OutboundRequest(to=[f"c{n}@example.com"], subject=f"answer {n}", text="hi")
        run(queue_send(kernel, request))
    service = OutboundService(kernel, sender)
    yield clock, kernel, service, server
    run(service.stopService())
    run(kernel.close())


def logins(server: ScriptedServer) -> int:
    return sum(command.startswith("AUTH") for command in server.commands)


def test_a_wrong_password_pauses_the_outbox_one_login_per_step(
    outbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock, kernel, service, server = outbox
    caplog.set_level(logging.WARNING, "postroom.services.outbound")
    service.startService()
    assert logins(server) == 1  # not one per queued entry
    for tries, wait in enumerate((60, 120, 240), start=1):
        service.wake()  # a new request arriving does not end the pause
        clock.advance(wait - 1)
        assert logins(server) == tries
        clock.advance(1)
        assert logins(server) == tries + 1
    entries = run(kernel.store.list_outbox())
    assert len(entries) == QUEUED
    assert {e.state for e in entries} == {"queued"}
    assert {e.attempts for e in entries} == {0}  # no entry counted a failed attempt
    assert service.login_policy.failures == 4
    refused = [r.getMessage() for r in caplog.records]
    assert len(refused) == 4  # one line per back-off step, not per entry
    assert "login refused (4 in a row), sending paused until 1970-01-01T00:15:00" in refused[-1]
    assert "wrong-one" not in "\n".join(refused)
    health = service.health()
    assert health["state"] == "auth-failed" and health["auth_failures"] == 4
    assert health["next_attempt"] == "1970-01-01T00:15:00+00:00"
    assert "535 5.7.8" in health["last_error"]
    metrics = kernel.metrics.render().decode()
    assert 'postroom_login_failures{mailbox="smtp-client"} 4.0' in metrics
    assert 'postroom_send_failures_total{final="false"}' not in metrics

    server.password = "wrong-one"  # the administrator fixed the password
    clock.advance(480)
    assert logins(server) == 5  # one login, then every entry over the same connection
    entries = run(kernel.store.list_outbox())
    assert {e.state for e in entries} == {"sent"}
    assert len(server.bodies) == QUEUED
    assert service.health() == {
        "state": "connected",
        "auth_failures": 0,
        "last_error": None,
        "next_attempt": None,
    }
    metrics = kernel.metrics.render().decode()
    assert 'postroom_login_failures{mailbox="smtp-client"} 0.0' in metrics


def test_a_once_run_ends_failed_with_the_entries_queued(outbox: Any) -> None:
    _clock, kernel, _service, server = outbox
    service = OutboundService(kernel, _service.sender, once=True)
    service.startService()
    assert run(service.finished) is False
    assert logins(server) == 1
    entries = run(kernel.store.list_outbox())
    assert {(e.state, e.attempts) for e in entries} == {("queued", 0)}


class NeedsNewConsent:
    """An auth driver whose grant the identity provider refused (kept so)."""

    asked = 0

    def credentials(self, protocol: str) -> Any:
        NeedsNewConsent.asked += 1
        return defer.fail(
            NeedsReauthorisation("azure-ropc alice", "invalid_grant: AADSTS65001: no consent")
        )

    def invalidate(self) -> None:
        raise AssertionError("nothing was refused by the server")


def test_a_grant_needing_reauthorisation_pauses_the_outbox_for_the_longest_wait(
    outbox: Any,
) -> None:
    clock, kernel, service, server = outbox
    service.sender.context = attrs.evolve(service.sender.context, authenticator=NeedsNewConsent())
    NeedsNewConsent.asked = 0
    service.startService()
    assert NeedsNewConsent.asked == 1 and logins(server) == 0  # no login with no token
    health = service.health()
    assert health["state"] == "needs-reauthorisation"
    assert "AADSTS65001" in health["last_error"]
    assert health["next_attempt"] == "1970-01-01T00:30:00+00:00"  # login-retry-max
    clock.advance(1799)
    assert NeedsNewConsent.asked == 1
    clock.advance(1)
    assert NeedsNewConsent.asked == 2
    entries = run(kernel.store.list_outbox())
    assert {(e.state, e.attempts) for e in entries} == {("queued", 0)}
    [kept] = run(kernel.store.list_mailbox_states())
    assert (kept.mailbox, kept.state) == ("smtp-client", "needs-reauthorisation")
    assert "AADSTS65001" in (kept.reason or "")

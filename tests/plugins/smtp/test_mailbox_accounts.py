"""A mailbox with its own SMTP login (``smtp-user``) sends its mail over its own
connections; a refused login holds only that mailbox's mail.

The outbox worker and the SMTP senders as the kernel builds them, on a fake
clock, each against its own scripted SMTP peer (``fakes.py``): one for the
``smtp-client`` account, one for the mailbox's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from postroom.config.document import read_document
from postroom.interfaces import SENDERS_GROUP
from postroom.kernel import Kernel
from postroom.model import OutboundRequest
from postroom.runner import InlineRunner
from postroom.services.outbound import OutboundService, queue_send
from postroom_smtp.sender import SMTPSender
from tests.conftest import run
from tests.plugins.smtp.fakes import ScriptedServer, client_factory

SITE = """\
tenant-id: 1
store: {driver: memory}
pop-client:
  - name: sales
    type: maildir
    folder-path: maildir
    address: sales@example.test
    display-name: Sales Team
    smtp-user: sales
    smtp-password: sales-password
  - name: support
    type: maildir
    folder-path: maildir
    address: support@example.test
smtp-client:
  server-type: smtp
  server: mail.example.test
  smtp-connection-security: none
  enable-authentication: true
  user: agent1
  password: secret-agent1
"""


@pytest.fixture
def outbox(tmp_path: Path) -> Any:
    """(clock, kernel, outbound service, shared server, the sales mailbox's server)."""
    path = tmp_path / "postroom.yaml"
    path.write_text(SITE, encoding="utf-8")
    clock = task.Clock()
    kernel = Kernel(path, clock=clock, runner=InlineRunner())
    run(kernel.open())
    shared = ScriptedServer(extensions=["AUTH PLAIN"], user="agent1", password="secret-agent1")
    own = ScriptedServer(extensions=["AUTH PLAIN"], user="sales", password="sales-password")
    sender = kernel.build_sender()
    senders = kernel.build_mailbox_senders()
    assert isinstance(sender, SMTPSender) and set(senders) == {"sales"}
    sender.client_factory = client_factory(shared)
    senders["sales"].client_factory = client_factory(own)
    service = OutboundService(kernel, sender, mailbox_senders=senders)
    yield clock, kernel, service, shared, own
    run(service.stopService())
    run(kernel.close())


def queue(kernel: Kernel, mailbox: str | None, to: str) -> str:
    request = OutboundRequest(to=[to], subject=f"from {mailbox}", text="hi", mailbox=mailbox)
    return run(queue_send(kernel, request)).id


def logins(server: ScriptedServer) -> list[str]:
    return [command for command in server.commands if command.startswith("AUTH")]


def test_a_mailbox_with_its_own_login_sends_over_its_own_connection(outbox: Any) -> None:
    _clock, kernel, service, shared, own = outbox
    queue(kernel, "sales", "c1@example.com")
    queue(kernel, "support", "c2@example.com")
    queue(kernel, None, "c3@example.com")
    queue(kernel, "sales", "c4@example.com")
    service.startService()
    entries = run(kernel.store.list_outbox())
    assert {e.state for e in entries} == {"sent"}
    # the sales mailbox's mail: its login, its From, one connection for both
    assert len(logins(own)) == 1 and len(own.bodies) == 2
    assert [c for c in own.commands if c.startswith("MAIL")] == [
        "MAIL FROM:<sales@example.test>"
    ] * 2
    assert all(b"From: Sales Team <sales@example.test>\r\n" in body for body in own.bodies)
    # the others: the smtp-client account, sending as support@ (send-as) and as the default
    assert len(logins(shared)) == 1 and len(shared.bodies) == 2
    assert [c for c in shared.commands if c.startswith("MAIL")] == [
        "MAIL FROM:<support@example.test>",
        "MAIL FROM:<postroom@localhost>",
    ]
    sales_sender = service.pipeline.mailbox_senders["sales"]
    assert sales_sender.name == "smtp-client[sales]"
    assert sales_sender.stats.opened == 1 and service.sender.stats.opened == 1


def test_a_refused_mailbox_login_holds_only_that_mailboxs_mail(
    outbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock, kernel, service, _shared, own = outbox
    own.password = "changed-by-the-administrator"
    caplog.set_level(logging.ERROR, "postroom.services.outbound")
    held = [queue(kernel, "sales", f"c{n}@example.com") for n in range(3)]
    other = queue(kernel, "support", "d@example.com")
    service.startService()
    states = {e.id: (e.state, e.attempts) for e in run(kernel.store.list_outbox())}
    assert states[other] == ("sent", 1)  # every attempt counts, a successful one too
    assert {states[i] for i in held} == {("queued", 0)}  # no attempt counted
    assert len(logins(own)) == 1  # one login, not one per entry
    assert not service.login_policy.refusing and service.health()["state"] == "connected"
    assert service.account_policies["sales"].failures == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(
        "smtp-client[sales]: login refused (1 in a row), this mailbox's mail waits until "
        "1970-01-01T00:01:00+00:00: "
    ), line
    assert "sales-password" not in line

    later = queue(kernel, "support", "e@example.com")
    service.wake()
    assert run(kernel.store.get_outbox(later)).state == "sent"  # the others go on
    own.password = "sales-password"
    clock.advance(60)
    assert len(logins(own)) == 2
    assert {run(kernel.store.get_outbox(i)).state for i in held} == {"sent"}
    assert len(own.bodies) == 3 and not service.account_policies["sales"].refusing


def test_a_mailbox_logs_in_even_when_the_smtp_client_account_does_not(tmp_path: Path) -> None:
    """``enable-authentication: false`` (a relay that trusts the host): the shared
    sender logs in to nothing, the mailbox with ``smtp-user`` still does."""
    path = tmp_path / "postroom.yaml"
    path.write_text(SITE.replace("enable-authentication: true", "enable-authentication: false"))
    # the auth driver is loaded for the mailbox's login alone
    assert (SENDERS_GROUP, "smtp", "basic") in read_document(path).driver_names().auth
    kernel = Kernel(path, clock=task.Clock(), runner=InlineRunner())
    run(kernel.open())
    relay = ScriptedServer(extensions=["AUTH PLAIN"])
    own = ScriptedServer(extensions=["AUTH PLAIN"], user="sales", password="sales-password")
    sender = kernel.build_sender()
    senders = kernel.build_mailbox_senders()
    sender.client_factory = client_factory(relay)
    senders["sales"].client_factory = client_factory(own)
    assert sender.context.authenticator is None
    service = OutboundService(kernel, sender, mailbox_senders=senders)
    try:
        queue(kernel, "sales", "c1@example.com")
        queue(kernel, "support", "c2@example.com")
        service.startService()
        assert {e.state for e in run(kernel.store.list_outbox())} == {"sent"}
        assert logins(relay) == [] and len(relay.bodies) == 1
        assert len(logins(own)) == 1 and len(own.bodies) == 1
    finally:
        run(service.stopService())
        run(kernel.close())

"""The plugin in a real kernel: inbound pipeline, hand-off, outbox and file sender.

A customer writes; the centre acknowledges automatically; the customer's
out-of-office answers the acknowledgement; the centre must not acknowledge
that, while an agent's reply still goes out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from postroom.ingest import ingest_files
from postroom.kernel import Kernel
from postroom.model import Interaction, OutboundRequest
from postroom.runner import InlineRunner
from postroom.services.outbound import OutboundService, queue_send
from postroom_autoreply import exchanges
from tests.conftest import run
from tests.plugins.autoreply.support import CUSTOMER, START

OURS = "support@centre.example"


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    site = tmp_path / "site.yaml"
    site.write_text(
        "email-processing:\n"
        "  default-domain: centre.example\n"
        "  autowar-max-reply-count: 3\n"
        "smtp-client:\n"
        "  server-type: file\n"
        f"  folder-path: {tmp_path / 'outbox'}\n",
        encoding="utf-8",
    )
    reactor = MemoryReactorClock()
    reactor.advance(START)
    made = Kernel(site, reactor=reactor, clock=reactor, enabled_plugins=["autoreply"],
                  store_override={"driver": "memory"}, runner=InlineRunner())  # fmt: skip
    run(made.open())
    yield made
    run(made.close())


def ingest(kernel: Kernel, path: Path, text: str) -> Interaction:
    path.write_bytes(text.replace("\n", "\r\n").encode())

    async def go() -> list[Any]:
        return [result async for result in ingest_files(kernel, [path])]

    [(_name, interactions)] = run(go())
    assert isinstance(interactions, list), interactions
    [interaction] = interactions
    assert run(kernel.hooks.committed(interaction, kernel.ctx)) == []  # after the commit
    return interaction


def send(kernel: Kernel, req: OutboundRequest) -> Interaction:
    queued = run(queue_send(kernel, req))
    service = OutboundService(kernel, kernel.build_sender(), once=True)
    assert run(service.run_pass()) == 1
    stored: Interaction = run(kernel.store.get_interaction(queued.id))
    return stored


def ack(parent: Interaction, automatic: bool = True) -> OutboundRequest:
    return OutboundRequest(to=[CUSTOMER], from_addr=OURS, subject="Re: my order",
                           text="We received your message.", in_reply_to=parent.id,
                           automatic=automatic)  # fmt: skip


def sent_files(tmp_path: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((tmp_path / "outbox").glob("*.eml"))]


def test_no_acknowledgement_for_an_out_of_office_but_an_agent_still_answers(
    kernel: Kernel, tmp_path: Path
) -> None:
    question = ingest(kernel, tmp_path / "q.eml",
                      f"From: {CUSTOMER}\nTo: {OURS}\nSubject: my order\n"
                      "Message-ID: <q1@example.org>\n\nWhere is my parcel?\n")  # fmt: skip
    assert "_AutoReply" not in question.attached_data

    first = send(kernel, ack(question))
    assert first.status == "Sent"
    [mail] = sent_files(tmp_path)
    assert b"Auto-Submitted: auto-replied" in mail
    assert f"X-Loop: {OURS}".encode() in mail
    assert run(exchanges.count(kernel.store, CUSTOMER, START - 1)) == 1  # recorded "out"

    kernel.clock.advance(20)
    away = ingest(kernel, tmp_path / "oof.eml",
                  f"From: {CUSTOMER}\nTo: {OURS}\nSubject: Automatic reply: Re: my order\n"
                  f"Message-ID: <oof1@example.org>\nIn-Reply-To: {first.message_id}\n"
                  "Auto-Submitted: auto-replied\n\nI am away until Monday.\n")  # fmt: skip
    assert away.attached_data["_AutoReply"] is True
    assert away.parent_id == first.id  # threading still works
    assert run(exchanges.count(kernel.store, CUSTOMER, START - 1)) == 2  # recorded "in"

    second = send(kernel, ack(away))
    assert second.status == "Failed"
    error = str(second.attached_data["_SendError"])
    assert error.startswith("vetoed by autoreply: automatic mail refused: ")
    assert "Auto-Submitted: auto-replied" in error
    entry = run(kernel.store.get_outbox(second.id))
    assert (entry.state, entry.attempts, entry.last_error) == ("failed", 1, error)  # never retried
    assert len(sent_files(tmp_path)) == 1  # nothing went out
    assert run(exchanges.count(kernel.store, CUSTOMER, START - 1)) == 2  # a refusal is no exchange

    reply = send(kernel, ack(away, automatic=False))
    assert reply.status == "Sent"
    assert len(sent_files(tmp_path)) == 2
    assert reply.message_id is not None
    [agent_mail] = [m for m in sent_files(tmp_path) if reply.message_id.encode() in m]
    assert b"X-Loop" not in agent_mail and b"Auto-Submitted" not in agent_mail


def test_an_acknowledgement_war_stops_at_the_budget(kernel: Kernel, tmp_path: Path) -> None:
    # a responder that marks nothing: each of its mails looks like a person's
    statuses = []
    for n in range(5):
        mail = ingest(kernel, tmp_path / f"r{n}.eml",
                      f"From: {CUSTOMER}\nTo: {OURS}\nSubject: Thanks for your mail\n"
                      f"Message-ID: <r{n}@example.org>\n\nThank you for writing.\n")  # fmt: skip
        statuses.append(send(kernel, ack(mail)).status)
        kernel.clock.advance(10)
    assert statuses == ["Sent", "Sent", "Sent", "Failed", "Failed"]
    kernel.clock.advance(600)  # the war is over: the budget is back
    later = ingest(kernel, tmp_path / "later.eml",
                   f"From: {CUSTOMER}\nTo: {OURS}\nSubject: new question\n"
                   "Message-ID: <later@example.org>\n\nAnother question.\n")  # fmt: skip
    assert send(kernel, ack(later)).status == "Sent"

"""An outbound interaction's status follows the reports that thread to it: DSNs
(the ``dsn`` plugin) and read receipts (the ``mdn`` plugin), through the real
inbound pipeline and store, each report's side effects (``postroom_committed``)
run as a mailbox runs them after the commit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import task

from postroom.ingest import ingest_mailbox
from postroom.kernel import Kernel
from postroom.model import FetchedMessage, Interaction, InteractionType, OutboundRequest, RawRef
from postroom.pipeline.inbound import InboundPipeline
from postroom.runner import InlineRunner
from postroom.views import interaction_json
from tests.conftest import run
from tests.plugins.mdn.fixtures import THUNDERBIRD

MID = "<out-4711@centre.example>"
ANN, BOB = "ann@customer.example", "bob@customer.example"


def dsn(n: int, *recipients: tuple[str, str, str]) -> bytes:
    """A Postfix-like report on MID (its ENVID), one group per (address, action, status)."""
    groups = b"".join(
        f"Final-Recipient: rfc822; {a}\nOriginal-Recipient: rfc822;{a}\nAction: {action}\n"
        f"Status: {status}\nDiagnostic-Code: smtp; {status[0]}50 {status} says the server\n\n"
        .encode()
        for a, action, status in recipients
    )  # fmt: skip
    return (
        b"From: MAILER-DAEMON@mx.centre.example\nTo: support@centre.example\n"
        b"Subject: Delivery Status Notification\n"
        + f"Message-ID: <report-{n}@mx.centre.example>\n".encode()
        + b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: text/plain\n\nA report.\n"
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.centre.example\n"
        + f"Original-Envelope-Id: {MID}\n\n".encode()
        + groups
        + b"--B--\n"
    )


class Reports:
    """A kernel with the dsn and mdn plugins, a memory store, and one outbound
    interaction sent to ANN and BOB."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.kernel = Kernel(
            reactor=task.Clock(),
            clock=task.Clock(),
            runner=InlineRunner(),
            enabled_plugins=["dsn", "mdn"],
            store_override={"driver": "memory"},
        )
        self.pipeline = InboundPipeline(self.kernel.hooks, self.kernel.ctx)
        self.mailbox = ingest_mailbox(self.kernel)
        self.count = 0
        self.outbound = ""

    def send(self) -> None:
        store = self.kernel.store
        entry = run(
            store.queue_outbound(
                Interaction(type=InteractionType.OUTBOUND.value, message_id=MID, to=[ANN, BOB]),
                OutboundRequest(to=[ANN, BOB], subject="Your ticket 4711", text="Hi"),
            )
        )
        self.outbound = entry.id
        run(store.claim_outbound(0.0))
        run(store.mark_outbound(entry.id, "sent", accepted=[ANN, BOB]))

    def receive(self, raw: bytes) -> Interaction:
        """Process one message, run its side effects; the interaction stored."""
        self.count += 1
        path = self.tmp_path / f"{self.count}.eml"
        path.write_bytes(raw)
        fetched = FetchedMessage(
            mailbox=self.mailbox.name, source_key=path.name, raw=RawRef.from_path(path)
        )
        [interaction] = run(self.pipeline.process(fetched, self.mailbox)).result.new
        assert interaction.parent_id == self.outbound
        assert run(self.kernel.hooks.committed(interaction, self.kernel.ctx)) == []
        return interaction

    def shown(self) -> dict:
        found = run(self.kernel.store.get_interaction(self.outbound))
        assert found is not None
        return interaction_json(found)


@pytest.fixture
def reports(tmp_path: Path) -> Iterator[Reports]:
    made = Reports(tmp_path)
    run(made.kernel.open())
    made.send()
    try:
        yield made
    finally:
        run(made.kernel.close())


def test_a_dsn_failing_one_of_two_recipients_is_partly_failed(reports: Reports) -> None:
    assert reports.shown()["status"] == "Sent"
    ndr = reports.receive(dsn(1, (BOB, "failed", "5.1.1")))
    assert ndr.subtype == "InboundNDR"
    shown = reports.shown()
    assert shown["status"] == "PartlyFailed"
    by = {row["recipient"]: row for row in shown["delivery"]}
    assert by[ANN]["status"] == "sent" and by[ANN]["report_id"] is None
    assert (by[BOB]["status"], by[BOB]["action"], by[BOB]["report_id"]) == (
        "failed", "failed", ndr.id,
    )  # fmt: skip
    assert "5.1.1" in by[BOB]["diagnostic"]
    # processed again (a restart before the kernel recorded the side effects): no change
    assert run(reports.kernel.hooks.committed(ndr, reports.kernel.ctx)) == []
    assert reports.shown()["delivery"] == shown["delivery"]
    assert reports.shown()["status"] == "PartlyFailed"


def test_a_delay_then_the_delivery(reports: Reports) -> None:
    reports.receive(dsn(1, (ANN, "delayed", "4.4.7"), (BOB, "delayed", "4.4.7")))
    assert reports.shown()["status"] == "Delayed"
    reports.receive(dsn(2, (ANN, "delivered", "2.0.0"), (BOB, "relayed", "2.0.0")))
    shown = reports.shown()
    assert shown["status"] == "Delivered"
    assert {r["recipient"]: (r["status"], r["action"]) for r in shown["delivery"]} == {
        ANN: ("delivered", "delivered"),
        BOB: ("delivered", "relayed"),
    }


def test_a_read_receipt_is_displayed(reports: Reports) -> None:
    receipt = reports.receive(THUNDERBIRD)
    assert receipt.subtype == "InboundDisposition"
    by = {row["recipient"]: row for row in reports.shown()["delivery"]}
    assert (by[BOB]["status"], by[BOB]["action"], by[BOB]["report_id"]) == (
        "displayed", "displayed", receipt.id,
    )  # fmt: skip
    assert by[ANN]["status"] == "sent"
    assert reports.shown()["status"] == "Sent"  # ann: nothing known yet
    reports.receive(dsn(1, (ANN, "delivered", "2.0.0")))
    assert reports.shown()["status"] == "Delivered"

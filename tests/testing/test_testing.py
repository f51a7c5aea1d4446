"""``postroom.testing``: the kernel, store, clock and fake drivers plugin authors test with.

Everything here goes through the public modules only (``postroom.api`` and
``postroom.testing``), as a third-party plugin's tests would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyClass, verifyObject

from postroom.api import (
    ConfigError,
    Envelope,
    Interaction,
    ISender,
    ISource,
    OutboundRequest,
    ParsedMessage,
    SendError,
    SourceError,
    Verdict,
    hookimpl,
)
from postroom.testing import (
    FakeSender,
    FakeSource,
    TestKernel,
    result_of,
    site_config,
)

GONE = "gone@customer.example"


def plain(n: int = 1, *, to: str = "support@centre.example") -> bytes:
    return (
        f"From: Customer <customer@client.example>\r\nTo: {to}\r\n"
        f"Subject: Order {n}\r\nMessage-ID: <order-{n}@client.example>\r\n"
        "Date: Mon, 3 Mar 2025 10:00:00 +0000\r\n\r\nPlease deliver on Monday.\r\n"
    ).encode()


def bounce(returned_message_id: str = "<unknown@centre.example>") -> bytes:
    """A DSN for GONE (5.1.1) that returns the headers of *returned_message_id*."""
    return (
        "From: MAILER-DAEMON@mx.customer.example\r\nTo: support@centre.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-1@mx.customer.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        f"Final-Recipient: rfc822; {GONE}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@centre.example\r\nTo: {GONE}\r\nMessage-ID: {returned_message_id}\r\n"
        "\r\n--B--\r\n"
    ).encode()


# ----------------------------------------------------------------- the kernel


def test_a_bounce_through_the_dsn_plugin_is_an_ndr_with_its_report() -> None:
    with TestKernel(["dsn"]) as kernel:
        [ndr] = kernel.ingest(bounce())
        assert ndr.type == "Inbound" and ndr.subtype == "InboundNDR"
        assert ndr.attached_data["_DSNInfo.Recipient1.Recipient"] == GONE
        assert ndr.attached_data["_DSNInfo.Recipient1.Status"] == "5.1.1"
        assert ndr.attached_data["_DSNRawInfo.Reporting-MTA"] == "dns; mx.customer.example"
        # committed, and handed off (the dsn plugin's postroom_submit ran)
        assert [i.id for i in kernel.interactions()] == [ndr.id]
        assert ndr.handoff_state == kernel.handoff_state(ndr.id) == "done"
        assert result_of(kernel.store.is_suppressed(GONE)) is not None


def test_a_sent_message_and_its_bounce_are_threaded() -> None:
    with TestKernel(["dsn"]) as kernel:
        sent = kernel.send(OutboundRequest(
            to=[f"Gone <{GONE}>"], from_addr="support@centre.example", subject="Your order",
            text="Shipped.", options={"dsn": {"notify": ["FAILURE"], "ret": "HDRS"}}))  # fmt: skip
        assert sent.status == "Sent"
        [wire] = kernel.sender.sent
        assert wire.envelope.rcpt_to == [GONE] and wire.envelope.rcpt_options == ["NOTIFY=FAILURE"]
        assert wire.envelope.mail_options[0] == "RET=HDRS"
        assert wire.message_id == sent.message_id == wire.message["Message-ID"]
        assert wire.message["Subject"] == "Your order" and wire.text == "Shipped.\n"
        [ndr] = kernel.ingest(bounce(sent.message_id or ""))
        assert ndr.parent_id == sent.id


def test_only_the_named_plugins_are_loaded_after_the_built_ins() -> None:
    from postroom_dsn import plugin as dsn_module

    class Tagger:
        @hookimpl
        def postroom_enrich(self, interaction: Interaction) -> None:
            interaction.attached_data["tagger.Seen"] = True

    with TestKernel([("tagger", Tagger()), dsn_module]) as kernel:
        order = kernel.plugins
        # the module is named after the installed entry point that points at it
        assert order[-2:] == ["tagger", "dsn"]
        assert not {"mdn", "split", "autoreply"} & set(order)
        [interaction] = kernel.ingest(plain())
        assert interaction.attached_data == {"tagger.Seen": True}


def test_a_duplicate_is_reported_as_one() -> None:
    with TestKernel() as kernel:
        [first] = kernel.ingest(plain())
        [again] = kernel.ingest(plain())
        assert again.duplicate_of == first.id
        assert len(kernel.interactions()) == 1


def test_the_site_configuration_applies_and_names_its_mailboxes(tmp_path: Path) -> None:
    config = {
        "tenant-id": 9,
        "pop-client": [{"name": "sales", "type": "maildir", "folder-path": "in"}],
    }
    with TestKernel(["split"], config, base_dir=tmp_path) as kernel:
        assert kernel.config.tenant_id == 9
        assert kernel.mailbox("sales").get("folder-path") == tmp_path / "in"
        [interaction] = kernel.ingest(plain(), mailbox="sales")
        assert (interaction.mailbox, interaction.tenant_id) == ("sales", 9)
        # a mailbox the site does not have: the declared defaults
        assert kernel.mailbox("other").get("copy-message-to-recipients") is False


def test_an_invalid_configuration_is_a_config_error_at_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        TestKernel(config="tenant-id: 3\ngateway:\n  max-attempts: many\n")
    error = info.value
    assert (error.file, error.line, error.option) == ("site.yaml", 3, "gateway.max-attempts")
    with pytest.raises(ConfigError, match="did you mean"):
        site_config("gateway:\n  max-atempts: 3\n")
    assert site_config({"gateway": {"max-attempts": 7}}).get("gateway", "max-attempts") == 7


# ------------------------------------------------------------- one stage at a time


class Failing:
    """A plugin whose analysis fails or cannot cross from the worker process."""

    def __init__(self, result: Callable[[], Any]) -> None:
        self.result = result

    @hookimpl
    def postroom_analyze(self) -> Any:
        return self.result()


def test_analyze_fails_on_a_failed_or_unpicklable_analysis() -> None:
    def broken() -> Any:
        raise ValueError("cannot read")

    with TestKernel([("broken", Failing(broken))]) as kernel:
        with pytest.raises(AssertionError, match="broken: postroom_analyze: ValueError"):
            kernel.analyze(plain())
        message = kernel.analyze(plain(), strict=False)
        assert message.analysis_errors == ["broken: postroom_analyze: ValueError: cannot read"]
        # the pipeline carries the failure to the interaction
        assert "cannot read" in kernel.enrich(message).attached_data["_PluginErrors"]
    unpicklable = Failing(lambda: {"lambda.f": lambda: 1})
    with TestKernel([("lambda", unpicklable)]) as kernel, pytest.raises(AssertionError,
                                                                        match="pickling"):
        kernel.analyze(plain())


def test_classify_enrich_and_expand_as_the_pipeline_runs_them() -> None:
    class Urgent:
        @hookimpl
        def postroom_analyze(self, message: ParsedMessage) -> dict[str, Any]:
            return {"urgent.urgent": "URGENT" in message.subject}

        @hookimpl
        def postroom_classify(self, message: ParsedMessage) -> Verdict | None:
            if message.analysed("urgent.urgent", bool):
                return Verdict("InboundUrgent", priority=50,
                               attached_data={"urgent.Why": "subject"})  # fmt: skip
            return None

    data = plain().replace(b"Subject: Order 1", b"Subject: URGENT order")
    with TestKernel([("urgent", Urgent())]) as kernel:
        verdict = kernel.classify(data)
        assert (verdict.subtype, verdict.plugin) == ("InboundUrgent", "urgent")
        enriched = kernel.enrich(data)
        assert enriched.subtype == "InboundUrgent"
        assert enriched.attached_data == {"urgent.Why": "subject"}
        assert enriched.subject == "URGENT order" and enriched.mailbox == "test"
        assert [c.subtype for c in kernel.expand(data)] == ["InboundUrgent"]
        assert kernel.interactions() == []  # nothing was stored
        # a message that was not analysed: the plugin must say so, not scan
        interaction = Interaction()
        assert kernel.classify(kernel.parse(data), interaction).subtype == "InboundNew"
        assert "no analysis under 'urgent.urgent'" in interaction.attached_data["_PluginErrors"]


# ------------------------------------------------------------------- the clock


class Slow:
    """Enriches after waiting five seconds on the kernel's clock."""

    @hookimpl
    async def postroom_enrich(self, interaction: Interaction, ctx: Any) -> None:
        await task.deferLater(ctx.clock, 5, lambda: None)
        interaction.attached_data["slow.Done"] = True


def test_time_moves_only_when_the_test_advances_the_clock() -> None:
    clock = task.Clock()
    clock.advance(1_700_000_000)
    with TestKernel([("slow", Slow())], clock=clock) as kernel:
        assert kernel.clock is clock and kernel.kernel.ctx.clock is clock
        assert kernel.now().timestamp() == 1_700_000_000
        with pytest.raises(AssertionError, match="has not fired"):
            kernel.ingest(plain(1))
        d = kernel.ingest_deferred(plain(2))
        clock.advance(4.9)
        assert not d.called
        clock.advance(0.1)
        [interaction] = result_of(d)
        assert interaction.attached_data == {"slow.Done": True}
        clock.advance(5)  # the first one completes too, unseen
        assert len(kernel.interactions()) == 2


def test_result_of_a_deferred_that_has_not_fired_fails_at_once() -> None:
    with pytest.raises(AssertionError, match="has not fired"):
        result_of(Deferred())
    failed: Deferred[None] = Deferred()
    failed.errback(ValueError("no"))
    with pytest.raises(ValueError, match="no"):
        result_of(failed)


# ------------------------------------------------------------------ the sender


def request(**overrides: Any) -> OutboundRequest:
    fields: dict[str, Any] = {"to": ["bob@customer.example"], "from_addr": "support@centre.example",
                              "subject": "Offer", "text": "Hello"}  # fmt: skip
    return OutboundRequest(**{**fields, **overrides})


def test_the_fake_sender_is_an_isender() -> None:
    assert verifyClass(ISender, FakeSender)
    assert verifyObject(ISender, FakeSender())


def wire(message_id: str = "<m1@centre.example>") -> bytes:
    return f"From: a@centre.example\r\nMessage-ID: {message_id}\r\n\r\nHi\r\n".encode()


@pytest.mark.parametrize(
    ("envelope", "problem"),
    [
        (Envelope(mail_from="a@centre.example", rcpt_to=[]), "no recipient"),
        (Envelope(mail_from="a@centre.example", rcpt_to=[""]), "not a plain"),
        (Envelope(mail_from="a@centre.example", rcpt_to=["Bob <b@x.example>"]), "not a plain"),
        (Envelope(mail_from="a@centre.example", rcpt_to=["b@x.example\r\nRCPT TO:<c@y>"]),
         "control character"),
        (Envelope(mail_from="nodomain", rcpt_to=["b@x.example"]), "sender address"),
        (Envelope(mail_from="", rcpt_to=["b@x.example"], mail_options=["RET = HDRS"]),
         "ESMTP parameter"),
    ],
)
def test_the_fake_sender_refuses_what_a_server_would(envelope: Envelope, problem: str) -> None:
    sender = FakeSender()
    with pytest.raises(SendError, match=problem) as info:
        result_of(sender.send(wire(), envelope, "<m1@centre.example>"))
    assert info.value.permanent
    assert sender.sent == []


def test_the_fake_sender_checks_the_message_it_is_given() -> None:
    sender = FakeSender()
    envelope = Envelope(mail_from="", rcpt_to=["b@x.example"])  # the null reverse-path is fine
    with pytest.raises(SendError, match=r"is not '<m2@centre\.example>'"):
        result_of(sender.send(wire(), envelope, "<m2@centre.example>"))
    with pytest.raises(TypeError, match="bytes"):
        result_of(sender.send(wire().decode(), envelope, "<m1@centre.example>"))  # type: ignore[arg-type]
    result = result_of(sender.send(wire(), envelope, "<m1@centre.example>"))
    assert result.accepted == ["b@x.example"] and len(sender.sent) == 1
    envelope.rcpt_to.append("later@x.example")  # the record is a copy
    assert sender.sent[0].envelope.rcpt_to == ["b@x.example"]
    result_of(sender.close())
    with pytest.raises(RuntimeError, match="after close"):
        result_of(sender.send(wire(), envelope, "<m1@centre.example>"))


def test_a_temporary_failure_is_retried_when_the_clock_passes_the_back_off() -> None:
    sender = FakeSender()
    sender.fail_next(SendError("421 try later"))
    with TestKernel(sender=sender) as kernel:
        queued = kernel.send(request())
        assert queued.status == "Queued" and sender.sent == []
        assert kernel.run_outbox() == 0  # not due yet
        kernel.clock.advance(30)
        assert kernel.run_outbox() == 1
        assert kernel.interaction(queued.id).status == "Sent"  # type: ignore[union-attr]
        assert [s.envelope.rcpt_to for s in sender.sent] == [["bob@customer.example"]]


def test_refused_recipients_are_recorded_and_a_message_refused_for_all_fails() -> None:
    sender = FakeSender(refuse={"gone@customer.example": "550 5.1.1 no such user"})
    with TestKernel(sender=sender) as kernel:
        sent = kernel.send(request(to=["bob@customer.example", "gone@customer.example"]))
        # sent, and one recipient refused at RCPT TO: partly failed at once
        assert sent.status == "PartlyFailed"
        assert "gone@customer.example: 550 5.1.1" in sent.attached_data["_RefusedRecipients"]
        failed = kernel.send(request(to=["gone@customer.example"]))
        assert failed.status == "Failed"
        assert "every recipient was refused" in failed.attached_data["_SendError"]
        assert [e.state for e in kernel.outbox()] == ["sent", "failed"]


# ------------------------------------------------------------------ the source


def test_the_fake_source_is_an_isource() -> None:
    assert verifyClass(ISource, FakeSource)
    assert verifyObject(ISource, FakeSource())


def test_a_mailbox_pass_over_the_fake_source() -> None:
    source = FakeSource([plain(1), plain(2)], mailbox="support")
    with TestKernel() as kernel:
        result = kernel.poll(source)
        assert result.ok and [i.subject for i in result.interactions] == ["Order 1", "Order 2"]
        assert {i.mailbox for i in result.interactions} == {"support"}
        assert {i.handoff_state for i in result.interactions} == {"done"}
        assert source.fetched == source.acknowledged == ["1", "2"]
        assert source.remaining == [] and source.released == []
        source.add(plain(3))
        assert [i.subject for i in kernel.poll(source).interactions] == ["Order 3"]
    source.close()


def test_a_message_that_fails_is_released_then_quarantined() -> None:
    class Broken:
        @hookimpl
        def postroom_expand(self) -> list[Interaction]:
            return []  # refused by the kernel: the message fails

    source = FakeSource({"bad": plain(1)}, mailbox="support")
    with TestKernel([("broken", Broken())], {"gateway": {"max-attempts": 2}}) as kernel:
        first = kernel.poll(source)
        assert (first.ok, first.failed, first.quarantined) == (False, 1, 0)
        assert source.released == ["bad"] and source.remaining == ["bad"]
        second = kernel.poll(source)
        assert (second.ok, second.quarantined) == (False, 1)
        # quarantined: kept in the store and acknowledged, out of the mailbox's way
        assert source.acknowledged == ["bad"] and source.remaining == []
        assert kernel.interactions() == []
    source.close()


def test_the_fake_source_refuses_what_it_did_not_serve() -> None:
    source = FakeSource([plain(1)])
    with pytest.raises(SourceError, match="before connect"):
        result_of(source.list_new(None))
    result_of(source.connect())
    [item] = result_of(source.list_new(None))
    fetched = result_of(source.fetch(item))
    result_of(source.acknowledge(fetched))
    with pytest.raises(SourceError, match="not a message it served"):
        result_of(source.acknowledge(fetched))
    with pytest.raises(SourceError, match="did not list"):
        result_of(source.fetch(item))
    assert len(source.problems) == 3
    source.close()


# ------------------------------------------------------------ pytest fixtures


def test_the_fixtures_come_with_the_pytest11_entry_point(
    make_postroom_kernel: Callable[..., TestKernel], fake_sender: FakeSender
) -> None:
    kernel = make_postroom_kernel(sender=fake_sender)
    assert kernel.send(request()).status == "Sent"
    assert len(fake_sender.sent) == 1

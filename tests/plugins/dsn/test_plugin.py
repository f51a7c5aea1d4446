"""The ``dsn`` hooks through the kernel's facade: classification rules,
attached keys, threading, suppression and outbound DSN requests."""

from __future__ import annotations

from typing import Any

import pytest

from postroom.errors import SendError
from postroom.model import (
    Envelope,
    Interaction,
    InteractionType,
    OutboundRequest,
    ParsedMessage,
    Subtype,
)
from postroom.parsing import ParseLimits, parse_bytes
from postroom.plugins.facade import PLUGIN_ERRORS_KEY, PluginFailure
from postroom_dsn import plugin
from postroom_dsn.analysis import Analysis
from postroom_dsn.envelope import xtext_decode, xtext_encode
from tests.conftest import run
from tests.hooks.support import FakeConfig, FakeStore, hooks_with, make_ctx
from tests.plugins.analysis import analysed

NDR = Subtype.INBOUND_NDR.value
REPORT = Subtype.INBOUND_REPORT.value
NEW = Subtype.INBOUND_NEW.value
OUTBOUND_ID = "<out-1@centre.example>"
SENDERS = list(plugin.DEFAULT_NDR_SENDERS)


class Store(FakeStore):
    """FakeStore plus the suppression list."""

    def __init__(self, interactions: list[Interaction] | None = None) -> None:
        super().__init__(interactions)
        self.suppressed: dict[str, tuple[str, str | None]] = {}

    async def suppress(self, address: str, reason: str, interaction_id: str | None = None) -> None:
        self.suppressed.setdefault(address.lower(), (reason, interaction_id))


def outbound() -> Interaction:
    return Interaction(
        type=InteractionType.OUTBOUND.value, subtype="OutboundNew", message_id=OUTBOUND_ID
    )


def ctx_with(store: Store | None = None, senders: list[str] | None = None) -> Any:
    config = FakeConfig({("email-processing", "ndr-senders-list"): senders or SENDERS})
    return make_ctx(config=config, store=store or Store())


def parse(text: str) -> ParsedMessage:
    return parse_bytes(text.replace("\n", "\r\n").encode(), ParseLimits())


def ingest(text: str, store: Store | None = None, senders: list[str] | None = None) -> Interaction:
    """analyze + classify + enrich as the pipeline runs them, with every built-in plugin."""
    hooks = hooks_with(("dsn", plugin))
    ctx = ctx_with(store, senders)
    message = analysed(hooks, parse(text), ctx)
    interaction = Interaction(message_id=message.message_id)
    verdict = run(hooks.classify(message, ctx, interaction))
    interaction.subtype = verdict.subtype
    interaction.attached_data.update(verdict.attached_data)
    run(hooks.enrich(message, interaction, ctx))
    assert PLUGIN_ERRORS_KEY not in interaction.attached_data
    return interaction


def report(
    groups: str,
    report_type: str = "delivery-status",
    sender: str = "MAILER-DAEMON@mx.example.org",
    returned: str = OUTBOUND_ID,
    ds_type: str = "message/delivery-status",
    ds_first: bool = False,
) -> str:
    notice = "--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
    ds = f"--B\nContent-Type: {ds_type}\n\nReporting-MTA: dns; mx.example.org\n\n{groups}\n"
    original = (
        "--B\nContent-Type: message/rfc822\n\n"
        f"From: agent@centre.example\nTo: a@example.com\nMessage-ID: {returned}\n"
        "Subject: Your order\n\nHello\n"
    )
    body = ds + notice if ds_first else notice + ds
    return (
        f"From: {sender}\nTo: agent@centre.example\nSubject: Undelivered Mail\n"
        "Message-ID: <report-1@mx.example.org>\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="B"\n\n'
        f"{body}{original}--B--\n"
    )


FAILED = "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n"
DELAYED = "Final-Recipient: rfc822; a@example.com\nAction: delayed\nStatus: 4.4.1\n"


# ------------------------------------------------------------------ classify


def test_a_failed_recipient_makes_an_ndr_with_the_spec_keys() -> None:
    groups = (
        "Original-Recipient: rfc822;a@example.com\nFinal-Recipient: rfc822; a@example.com\n"
        "Action: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.example.com\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <a@example.com>: User unknown\n\n"
        "Final-Recipient: rfc822; b@example.com\nAction: delivered\nStatus: 2.0.0\n"
    )
    interaction = ingest(report(groups))
    assert interaction.subtype == NDR
    data = interaction.attached_data
    assert data["_DSNInfo.RecipientCount"] == 2
    assert data["_DSNInfo.Recipient1.Recipient"] == "a@example.com"
    assert data["_DSNInfo.Recipient1.Action"] == "failed"
    assert data["_DSNInfo.Recipient2.Recipient"] == "b@example.com"
    assert data["_DSNInfo.Recipient2.Action"] == "delivered"
    assert data["_DSNInfo.Recipient1.Status"] == "5.1.1"  # documented extra
    assert data["_DSNInfo.Recipient1.ReplyCode"] == "550"  # documented extra
    assert data["_DSNRawInfo.Reporting-MTA"] == "dns; mx.example.org"
    assert data["_DSNRawInfo.Recipient1.Original-Recipient"] == "rfc822;a@example.com"
    assert data["_DSNRawInfo.Recipient1.Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <a@example.com>: User unknown"
    )
    assert data["_DSNRawInfo.Recipient2.Status"] == "2.0.0"
    assert data["_DSNRawInfo.RecipientCount"] == 2
    assert all(isinstance(v, str | int) for v in data.values())


def test_failure_spelling_counts_as_failed() -> None:
    interaction = ingest(report(FAILED.replace("Action: failed", "Action: Failure")))
    assert interaction.subtype == NDR
    assert interaction.attached_data["_DSNInfo.Recipient1.Action"] == "failed"
    assert interaction.attached_data["_DSNRawInfo.Recipient1.Action"] == "Failure"


def test_no_failed_recipient_makes_a_report() -> None:
    relayed = "Final-Recipient: rfc822; a@example.com\nAction: relayed\nStatus: 2.0.0\n"
    assert ingest(report(DELAYED)).subtype == REPORT
    assert ingest(report(relayed)).subtype == REPORT


def test_delivery_status_part_first_and_mislabelled_as_text() -> None:
    assert ingest(report(FAILED, ds_first=True)).subtype == NDR
    mislabelled = ingest(report(FAILED, ds_type="text/plain"))
    assert mislabelled.subtype == NDR
    assert mislabelled.attached_data["_DSNInfo.Recipient1.Recipient"] == "a@example.com"


@pytest.mark.parametrize("kind", ["disposition-notification", "feedback-report"])
def test_other_report_types_are_not_ours(kind: str) -> None:
    # even from a mail system and returning an outbound message (rule 2)
    interaction = ingest(report(FAILED, report_type=kind), store=Store([outbound()]))
    assert interaction.subtype == NEW
    assert not any(k.startswith("_DSN") for k in interaction.attached_data)


def forwarded(sender: str, subject: str = "Fwd: my old mail", mid: str = OUTBOUND_ID) -> str:
    return (
        f"From: {sender}\nTo: support@centre.example\nSubject: {subject}\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="M"\n\n'
        "--M\nContent-Type: text/plain\n\nSee the mail below.\n"
        "--M\nContent-Type: message/rfc822\n\n"
        f"From: someone@example.com\nTo: support@centre.example\nMessage-ID: {mid}\n"
        "Subject: old\n\nold text\n--M--\n"
    )


def test_rule_two_returned_message_from_a_mail_system() -> None:
    interaction = ingest(forwarded("Mail System <Postmaster@mx.example.org>", "Notice"))
    assert interaction.subtype == NDR


def test_rule_two_uses_the_configured_senders_list() -> None:
    text = forwarded("Bounces <bounce-robot@mx.example.org>", "Notice")
    assert ingest(text).subtype == NEW
    assert ingest(text, senders=["bounce-robot"]).subtype == NDR


def test_rule_two_returned_message_of_an_outbound_interaction() -> None:
    text = forwarded("customer@example.com")
    assert ingest(text, store=Store([outbound()])).subtype == NDR


def test_a_customer_forwarding_an_old_inbound_mail_is_not_a_bounce() -> None:
    inbound = Interaction(message_id=OUTBOUND_ID)  # an *inbound* interaction has that id
    interaction = ingest(forwarded("customer@example.com"), store=Store([inbound]))
    assert interaction.subtype == NEW
    assert interaction.parent_id is None or interaction.parent_id == inbound.id


QMAIL = """From: MAILER-DAEMON@mx.example.org
To: agent@centre.example
Subject: failure notice
Message-ID: <q-1@mx.example.org>

Hi. This is the qmail-send program at mx.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<gone@example.com>:
192.0.2.1 does not like recipient.
Remote host said: 550 5.1.1 <gone@example.com>... User Unknown
Giving up on 192.0.2.1.

<full@example.com>:
Remote host said: 452 4.2.2 <full@example.com>... Mailbox full

--- Below this line is a copy of the message.

Return-Path: <agent@centre.example>
From: agent@centre.example
To: gone@example.com, full@example.com
Message-ID: <out-1@centre.example>
Subject: Your order

Hello
"""


def test_vendor_format_bounce_without_returned_part() -> None:
    interaction = ingest(QMAIL)
    assert interaction.subtype == NDR
    data = interaction.attached_data
    assert data["_DSNInfo.RecipientCount"] == 2
    assert [data["_DSNInfo.Recipient1.Recipient"], data["_DSNInfo.Recipient2.Recipient"]] == [
        "gone@example.com",
        "full@example.com",
    ]
    assert (data["_DSNInfo.Recipient1.Status"], data["_DSNInfo.Recipient1.ReplyCode"]) == (
        "5.1.1",
        "550",
    )
    assert data["_DSNInfo.Recipient2.Status"] == "4.2.2"
    assert not any(k.startswith("_DSNRawInfo") for k in data)


def test_exim_failed_recipients_header() -> None:
    text = (
        "From: someone@relay.example.org\nTo: agent@centre.example\nSubject: Problem\n"
        "X-Failed-Recipients: lost@example.com\n\nSMTP error: 550 5.1.1 unknown user\n"
    )
    interaction = ingest(text)
    assert interaction.subtype == NDR
    assert interaction.attached_data["_DSNInfo.Recipient1.Recipient"] == "lost@example.com"


def test_a_person_quoting_a_bounce_is_not_one() -> None:
    quoted = QMAIL.replace("From: MAILER-DAEMON@mx.example.org", "From: bob@example.com", 1)
    quoted = quoted.replace("Subject: failure notice", "Subject: I got this", 1)
    assert ingest(quoted).subtype == NEW


def test_an_ordinary_mail_and_an_auto_reply_are_not_ours() -> None:
    mail = "From: bob@example.com\nTo: support@centre.example\nSubject: Hi\n\nHello\n"
    away = (
        "From: bob@example.com\nTo: support@centre.example\nSubject: Automatic reply: order\n"
        "Auto-Submitted: auto-replied\n\nI am away until Monday.\n"
    )
    assert ingest(mail).subtype == NEW
    assert ingest(away).subtype == NEW


def test_a_report_forwarded_inside_a_message_is_read_one_level_deeper() -> None:
    inner = report(FAILED)
    text = (
        "From: postmaster@relay.example.org\nTo: agent@centre.example\nSubject: Fwd\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="W"\n\n'
        "--W\nContent-Type: text/plain\n\nforwarded\n--W\nContent-Type: message/rfc822\n\n"
        f"{inner}\n--W--\n"
    )
    interaction = ingest(text)
    assert interaction.subtype == NDR
    assert interaction.attached_data["_DSNInfo.Recipient1.Recipient"] == "a@example.com"


# ------------------------------------------------- analysis and the gateway step


def analysis_of(text: str, senders: list[str] | None = None) -> Analysis:
    hooks = hooks_with(("dsn", plugin))
    message = analysed(hooks, parse(text), ctx_with(senders=senders))
    found = message.analysis["dsn.analysis"]
    assert isinstance(found, Analysis)
    return found


def test_the_analysis_decides_what_it_can_and_lists_what_to_look_up() -> None:
    decided = analysis_of(report(FAILED))
    assert decided.verdict is not None and decided.verdict.subtype == NDR
    assert decided.verdict.priority == plugin.PRIORITY
    assert decided.if_outbound is None
    assert decided.parent_candidates == (OUTBOUND_ID,)
    # rule two from a customer: only the store can tell
    open_question = analysis_of(forwarded("customer@example.com"))
    assert open_question.verdict is None
    assert open_question.if_outbound is not None and open_question.if_outbound.subtype == NDR
    assert open_question.returned_ids == (OUTBOUND_ID,)
    # rule two from a mail system: decided without the store
    mail_system = analysis_of(forwarded("Mail System <postmaster@mx.example.org>", "Notice"))
    assert mail_system.verdict is not None and mail_system.if_outbound is None
    assert analysis_of("From: bob@example.com\nSubject: Hi\n\nHello\n") == Analysis(None)


def test_the_gateway_hooks_read_the_analysis_not_the_message() -> None:
    hooks = hooks_with(("dsn", plugin))
    store = Store([outbound()])
    ctx = ctx_with(store)
    message = analysed(hooks, parse(forwarded("customer@example.com")), ctx)
    message.parts, message.text, message.headers = [], None, []  # nothing left to read
    interaction = Interaction()
    verdict = run(hooks.classify(message, ctx, interaction))
    interaction.subtype = verdict.subtype
    run(hooks.enrich(message, interaction, ctx))
    assert verdict.subtype == NDR and interaction.parent_id == store.interactions[0].id
    assert PLUGIN_ERRORS_KEY not in interaction.attached_data


def test_a_message_that_was_not_analysed_is_an_error_not_a_scan() -> None:
    hooks = hooks_with(("dsn", plugin))
    store = Store([outbound()])
    interaction = Interaction()
    verdict = run(hooks.classify(parse(report(FAILED)), ctx_with(store), interaction))
    assert verdict.subtype == NEW  # no verdict: the report was not read
    errors = interaction.attached_data[PLUGIN_ERRORS_KEY]
    assert "dsn: postroom_classify: NotAnalysed" in errors
    assert "no analysis under 'dsn.analysis'" in errors
    assert store.looked_up == []


# ------------------------------------------------------------------ threading


def test_a_report_becomes_the_child_of_the_outbound_it_returns() -> None:
    parent = outbound()
    other = Interaction(message_id="<reply@example.com>")
    text = report(FAILED).replace(
        "Message-ID: <report-1@mx.example.org>",
        "Message-ID: <report-1@mx.example.org>\nIn-Reply-To: <reply@example.com>",
    )
    interaction = ingest(text, store=Store([parent, other]))
    # the built-in threading chose the In-Reply-To; the returned Message-ID wins
    assert interaction.parent_id == parent.id


def test_original_envelope_id_is_a_fallback_for_threading() -> None:
    parent = outbound()
    text = report(FAILED, returned="<unknown@elsewhere>").replace(
        "Reporting-MTA: dns; mx.example.org",
        f"Reporting-MTA: dns; mx.example.org\nOriginal-Envelope-Id: {xtext_encode(OUTBOUND_ID)}",
    )
    assert ingest(text, store=Store([parent])).parent_id == parent.id


def test_an_unsolicited_ndr_keeps_going_without_parent() -> None:
    interaction = ingest(report(FAILED), store=Store([]))
    assert interaction.subtype == NDR
    assert interaction.parent_id is None


def test_vendor_format_threads_by_the_inline_copy() -> None:
    parent = outbound()
    assert ingest(QMAIL, store=Store([parent])).parent_id == parent.id


# ---------------------------------------------------------------- suppression


def committed(interaction: Interaction, store: Store) -> None:
    assert run(hooks_with(("dsn", plugin)).committed(interaction, ctx_with(store))) == []


def test_hard_bounces_are_suppressed_soft_ones_not() -> None:
    store = Store()
    interaction = ingest(QMAIL, store=store)
    committed(interaction, store)
    assert set(store.suppressed) == {"gone@example.com"}
    reason, interaction_id = store.suppressed["gone@example.com"]
    assert "5.1.1" in reason and interaction_id == interaction.id
    committed(interaction, store)  # called again (at least once): nothing changes
    assert set(store.suppressed) == {"gone@example.com"}


def test_delays_and_failed_4xx_are_not_suppressed() -> None:
    store = Store()
    committed(ingest(report(DELAYED)), store)
    failed_4xx = FAILED.replace("5.1.1", "4.4.7")
    committed(ingest(report(failed_4xx)), store)
    assert store.suppressed == {}


def test_other_interactions_are_left_alone() -> None:
    store = Store()
    fake = Interaction(
        subtype=NEW,
        attached_data={
            "_DSNInfo.RecipientCount": 1,
            "_DSNInfo.Recipient1.Recipient": "x@example.com",
            "_DSNInfo.Recipient1.Action": "failed",
            "_DSNInfo.Recipient1.Status": "5.1.1",
        },
    )
    committed(fake, store)
    assert store.suppressed == {}


# ------------------------------------------------------------------- envelope


def envelope_for(dsn: Any) -> Envelope:
    request = OutboundRequest(to=["a@example.com"], options={"dsn": dsn})
    envelope = Envelope(mail_from="agent@centre.example", rcpt_to=["a@example.com"])
    run(hooks_with(("dsn", plugin)).envelope(request, envelope, make_ctx()))
    return envelope


def test_envelope_parameters() -> None:
    envelope = envelope_for(
        {"notify": ["failure", "SUCCESS"], "ret": "hdrs", "envid": "order 4711+x=y"}
    )
    assert envelope.rcpt_options == ["NOTIFY=SUCCESS,FAILURE"]
    assert envelope.mail_options == ["RET=HDRS", "ENVID=order+204711+2Bx+3Dy"]
    assert xtext_decode("order+204711+2Bx+3Dy") == "order 4711+x=y"


def test_envid_defaults_to_the_message_id_the_outbox_fixed() -> None:
    request = OutboundRequest(to=["a@example.com"], options={"dsn": {"notify": ["FAILURE"]}})
    envelope = Envelope(
        mail_from="agent@centre.example", rcpt_to=["a@example.com"], message_id="<m+1@centre>"
    )
    run(hooks_with(("dsn", plugin)).envelope(request, envelope, make_ctx()))
    assert envelope.mail_options == ["ENVID=<m+2B1@centre>"]
    assert xtext_decode("<m+2B1@centre>") == "<m+1@centre>"
    # without a DSN request nothing is added
    plain = Envelope(mail_from="a@b", rcpt_to=["c@d"], message_id="<m@centre>")
    run(hooks_with(("dsn", plugin)).envelope(OutboundRequest(to=["c@d"]), plain, make_ctx()))
    assert plain.mail_options == []


def test_notify_never_and_string_form() -> None:
    assert envelope_for({"notify": "NEVER"}).rcpt_options == ["NOTIFY=NEVER"]
    assert envelope_for({"notify": "delay,failure"}).rcpt_options == ["NOTIFY=FAILURE,DELAY"]


def test_no_request_no_parameters() -> None:
    envelope = envelope_for(None)
    assert (envelope.mail_options, envelope.rcpt_options) == ([], [])


@pytest.mark.parametrize(
    ("dsn", "words"),
    [
        ({"notify": ["SUCCESS", "SOMETIMES"]}, "unknown NOTIFY value(s) SOMETIMES"),
        ({"notify": ["NEVER", "FAILURE"]}, "NEVER cannot be combined"),
        ({"ret": "BODY"}, "RET must be FULL or HDRS"),
        ({"envid": "x" * 101}, "ENVID must be 1 to 100"),
        ({"notfy": ["FAILURE"]}, "unknown key(s) notfy"),
        ("FAILURE", "expected a mapping"),
    ],
)
def test_invalid_requests_fail_permanently(dsn: Any, words: str) -> None:
    # the facade wraps it; the outbox reads the cause (permanent: no retry)
    with pytest.raises(PluginFailure) as raised:
        envelope_for(dsn)
    cause = raised.value.cause
    assert isinstance(cause, SendError) and cause.permanent
    assert words in str(cause)


def test_the_option_is_declared() -> None:
    from postroom.config.options import OptionSchema

    schema = OptionSchema()
    hooks_with(("dsn", plugin)).add_options(schema)
    declared = [o for o in schema if o.name == "ndr-senders-list"]
    assert len(declared) == 1
    assert declared[0].section == "email-processing" and declared[0].type == "list"
    assert declared[0].default == ["mailer-daemon", "postmaster", "mmdf"]

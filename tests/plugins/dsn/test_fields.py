"""The tolerant RFC 3464 field reader and the per-recipient normalisation."""

from __future__ import annotations

import base64

from postroom.model import AttachedValue
from postroom_dsn.data import (
    Recipient,
    bare_address,
    info_data,
    normal_action,
    raw_data,
    recipient_from_fields,
    recipients_from_data,
    reply_code,
    status_code,
)
from postroom_dsn.fields import looks_like_delivery_status, parse_delivery_status


def test_per_message_then_per_recipient_blocks() -> None:
    status = parse_delivery_status(
        "Reporting-MTA: dns; mx.example.org\nArrival-Date: Mon, 1 Jan 2024 10:00:00 +0000\n\n"
        "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n\n"
        "Final-Recipient: rfc822; b@example.com\nAction: delayed\nStatus: 4.2.2\n"
    )
    assert status.per_message == (
        ("Reporting-MTA", "dns; mx.example.org"),
        ("Arrival-Date", "Mon, 1 Jan 2024 10:00:00 +0000"),
    )
    assert [dict(r)["Final-Recipient"] for r in status.recipients] == [
        "rfc822; a@example.com",
        "rfc822; b@example.com",
    ]


def test_folded_values_are_unfolded_keeping_the_blanks() -> None:
    status = parse_delivery_status(
        "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@example.com\nAction: failed\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <a@example.com>: Recipient address\n"
        "    rejected: User unknown\n"
    )
    assert dict(status.recipients[0])["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <a@example.com>: Recipient address    rejected: User unknown"
    )


def test_comments_and_case_are_kept_verbatim_but_normalised_for_info() -> None:
    status = parse_delivery_status(
        "reporting-mta: DNS; mx\n\nFINAL-RECIPIENT: RFC822; <A@Example.com> (the customer)\n"
        "action: FAILURE (permanent)\nstatus: 5.1.1 (bad mailbox)\n"
    )
    fields = status.recipients[0]
    assert fields[0] == ("Final-Recipient", "RFC822; <A@Example.com> (the customer)")
    assert status.per_message == (("Reporting-MTA", "DNS; mx"),)
    recipient = recipient_from_fields(fields)
    assert recipient == Recipient(address="A@Example.com", action="failed", status="5.1.1")


def test_missing_blank_lines_between_groups() -> None:
    status = parse_delivery_status(
        "Reporting-MTA: dns; mx\nFinal-Recipient: rfc822; a@example.com\nAction: failed\n"
        "Status: 5.1.1\nFinal-Recipient: rfc822; b@example.com\nAction: failed\nStatus: 5.2.2\n"
    )
    assert status.per_message == (("Reporting-MTA", "dns; mx"),)
    assert [recipient_from_fields(r).address for r in status.recipients] == [
        "a@example.com",
        "b@example.com",
    ]


def test_several_blank_lines_and_no_space_after_the_colon() -> None:
    status = parse_delivery_status(
        "Reporting-MTA: dns;someserver.com\n\n\n\nOriginal-Recipient:rfc822;x@customer.com\n"
        "Status:5.5.0\n"
    )
    assert status.recipients == (
        (("Original-Recipient", "rfc822;x@customer.com"), ("Status", "5.5.0")),
    )
    # no Action field: the status class decides
    assert recipient_from_fields(status.recipients[0]).action == "failed"


def test_no_per_message_block_and_fields_in_any_order() -> None:
    status = parse_delivery_status(
        "Action: failed\nStatus: 5.0.0\nFinal-Recipient: rfc822;s@d.com\n"
    )
    assert status.per_message == ()
    assert recipient_from_fields(status.recipients[0]).address == "s@d.com"


def test_prose_lines_are_skipped() -> None:
    text = (
        "This is the mail system.\n\nReporting-MTA: dns; mx\n\n"
        "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n"
    )
    assert looks_like_delivery_status(text)
    assert not looks_like_delivery_status("Hello,\nplease call me back.\nRegards: Bob\n")


def test_groups_encoded_inside_the_part_are_decoded() -> None:
    groups = "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n"
    encoded = base64.encodebytes(groups.encode()).decode()
    status = parse_delivery_status(
        "Reporting-MTA: dns; mx\nContent-Transfer-Encoding: base64\n"
        f"Content-length: 99\n\n{encoded}"
    )
    assert ("Content-Length", "99") in status.per_message  # canonical spelling
    assert status.recipients[0][2] == ("Status", "5.1.1")


def _group(status: str, diagnostic: str) -> tuple[tuple[str, str], ...]:
    return (
        ("Final-Recipient", "rfc822; a@example.com"),
        ("Action", "failed"),
        ("Status", status),
        ("Diagnostic-Code", diagnostic),
    )


def test_generic_status_is_refined_by_the_diagnostic_code() -> None:
    recipient = recipient_from_fields(_group("5.0.0", "smtp; 550 5.7.1 relaying denied"))
    assert (recipient.status, recipient.reply_code) == ("5.7.1", "550")
    # a bare code (no reply before it) refines only a generic Status of its class
    assert recipient_from_fields(_group("5.0.0", "smtp; 5.1.0 unknown")).status == "5.1.0"
    assert recipient_from_fields(_group("5.2.2", "smtp; 5.1.0 unknown")).status == "5.2.2"
    assert recipient_from_fields(_group("4.0.0", "smtp; 5.1.0 unknown")).status == "4.0.0"
    assert recipient_from_fields(_group("5.1.1", "smtp; 550 user unknown")).status == "5.1.1"


def test_the_remote_reply_wins_over_the_reporting_mta_summary() -> None:
    # Sendmail: Status 4.4.7 "expired" over what the remote server replied
    expired = recipient_from_fields(_group("4.4.7", "SMTP; 450 4.7.1 Access denied"))
    assert (expired.status, expired.reply_code) == ("4.7.1", "450")
    contradicted = recipient_from_fields(_group("5.1.1", "SMTP; 552 5.2.2 Over quota"))
    assert contradicted.status == "5.2.2"
    # Postfix softened the class; the remote said 550 5.5.0
    assert recipient_from_fields(_group("4.5.0", "smtp; 550 5.5.0 refused")).status == "5.5.0"
    # the innermost quoted reply is the cause: "expired" because of a timeout
    nested = "smtp; 554 4.4.7 Message expired: unable to deliver.<421 4.4.2 Connection timed out>"
    assert recipient_from_fields(_group("4.4.7", nested)).status == "4.4.2"
    ses = "smtp; 5.1.0 - Unknown address error 550-'5.7.1 <x@y>... Access denied'"
    assert recipient_from_fields(_group("5.0.0", ses)).status == "5.7.1"


def test_the_raw_fields_stay_verbatim_when_the_status_is_refined() -> None:
    status = parse_delivery_status(
        "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@example.com\nAction: failed\n"
        "Status: 4.4.7\nDiagnostic-Code: SMTP; 450 4.7.1 Access denied\n"
    )
    data = raw_data(status)
    assert data["_DSNRawInfo.Recipient1.Status"] == "4.4.7"
    assert (
        info_data([recipient_from_fields(status.recipients[0])])["_DSNInfo.Recipient1.Status"]
        == "4.7.1"
    )


def test_status_codes_are_not_read_from_longer_dotted_numbers() -> None:
    assert status_code("see 4.16.55.1 and 192.0.2.1") is None
    assert status_code("Yahoo 421 4.7.0 [TSS04] - 4.16.55.1") == "4.7.0"
    assert status_code("550 5.1.1.") == "5.1.1"


def test_a_program_exit_status_is_not_a_reply_code() -> None:
    assert reply_code("X-Unix; 255") is None
    assert reply_code("X-LOCAL; 500 (err.nosuchuser)") == "500"
    assert reply_code("smtp; 550 5.1.1 unknown") == "550"


def test_actions_and_addresses() -> None:
    assert normal_action("Failure") == "failed"
    assert normal_action("expired") == "failed"
    assert normal_action("relayed (to a non-DSN MTA)") == "relayed"
    assert normal_action("exploded") is None
    assert bare_address("rfc822; <user@example.com>") == "user@example.com"
    assert bare_address("user@example.com") == "user@example.com"


def test_hard_and_soft_bounces() -> None:
    assert Recipient("a@x.org", "failed", "5.1.1").hard_bounce
    assert not Recipient("a@x.org", "failed", "4.4.7").hard_bounce
    assert not Recipient("a@x.org", "delayed", "5.1.1").hard_bounce
    assert Recipient("a@x.org", "failed", None, "550").hard_bounce
    assert not Recipient("a@x.org", "failed").hard_bounce


def test_recipients_read_back_from_attached_data_stored_as_text() -> None:
    data: dict[str, AttachedValue] = {
        "_DSNInfo.RecipientCount": "1",
        "_DSNInfo.Recipient1.Recipient": "a@example.com",
        "_DSNInfo.Recipient1.Action": "failed",
        "_DSNInfo.Recipient1.Status": "5.1.1",
        "_DSNRawInfo.Recipient1.Diagnostic-Code": "smtp; 550 5.1.1 unknown",
    }
    (recipient,) = recipients_from_data(data)
    assert recipient.hard_bounce and recipient.address == "a@example.com"
    assert recipient.diagnostic == "smtp; 550 5.1.1 unknown"
    assert recipients_from_data({}) == []

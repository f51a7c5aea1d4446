"""The tolerant RFC 3464 field reader and the per-recipient normalisation."""

from __future__ import annotations

import base64

from postroom.model import AttachedValue
from postroom_dsn.data import (
    Recipient,
    bare_address,
    normal_action,
    recipient_from_fields,
    recipients_from_data,
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


def test_generic_status_is_refined_by_the_diagnostic_code() -> None:
    fields = (
        ("Final-Recipient", "rfc822; a@example.com"),
        ("Action", "failed"),
        ("Status", "5.0.0"),
        ("Diagnostic-Code", "smtp; 550 5.7.1 relaying denied"),
    )
    recipient = recipient_from_fields(fields)
    assert (recipient.status, recipient.reply_code) == ("5.7.1", "550")
    specific = recipient_from_fields((*fields[:2], ("Status", "5.1.1"), fields[3]))
    assert specific.status == "5.1.1"  # a specific Status field is kept


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

"""Bounces without a usable delivery-status part: which senders and texts make
one, which recipients and codes the notice states, and what stays a customer's
mail (no-reply notifications, auto-replies, mailing-list posts)."""

from __future__ import annotations

from postroom.model import ParsedMessage, Part
from postroom_dsn import notice, vendor
from tests.plugins.dsn.test_plugin import NDR, NEW, REPORT, ingest, report

KDDI_LIKE = (
    "From: no-reply@gw.example.jp\nTo: agent@centre.example\nSubject: Mail error\n"
    "Message-ID: <n1@gw.example.jp>\n\n"
    "Your mail sent on: Thu, 29 Apr 2013 23:45:22 +0900\n"
    "     Could not be delivered to: <full@mobile.example.jp>\n"
    "     As their mailbox is full.\n"
)


def test_an_automated_sender_with_a_bounce_sentence_is_a_bounce() -> None:
    interaction = ingest(KDDI_LIKE)
    assert interaction.subtype == NDR
    assert interaction.attached_data["_DSNInfo.Recipient1.Recipient"] == "full@mobile.example.jp"


def test_an_automated_sender_needs_the_sentence_not_just_the_subject() -> None:
    shop = (
        "From: no-reply@shop.example\nTo: customer@example.com\n"
        "Subject: Your delivery is delayed\n\nYour parcel will arrive on Monday.\n"
    )
    assert ingest(shop).subtype == NEW


def test_the_null_return_path_with_a_bounce_subject() -> None:
    mms = (
        "Return-Path: <>\nFrom: MMSC Administrator <sysadmin@mms.example.com>\n"
        "To: agent@centre.example\nSubject: Undeliverable Message\n\n"
        "Message could not be delivered to mobile.\nError: No valid recipients\n\n"
        "Original Message:\nFrom: Agent <agent@centre.example>\nTo: 0000@mms.example.com\n"
    )
    interaction = ingest(mms)
    assert interaction.subtype == NDR
    assert interaction.attached_data["_DSNInfo.Recipient1.Recipient"] == "0000@mms.example.com"


def test_an_auto_reply_with_a_null_return_path_quoting_a_subject_is_not_a_bounce() -> None:
    away = (
        "Return-Path: <>\nFrom: bob@example.com\nTo: support@centre.example\n"
        "Subject: Automatic reply: Delivery delayed for order 42\n"
        "Auto-Submitted: auto-replied\n\nI am away until Monday.\n"
    )
    assert ingest(away).subtype == NEW


def test_opensmtpd_generic_status_takes_the_code_the_notice_states() -> None:
    groups = (
        "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.0.0\n\n"
        "Final-Recipient: rfc822; b@example.com\nAction: failed\nStatus: 5.0.0\n"
    )
    text = report(groups).replace(
        "Your message could not be delivered.\n",
        "An error has occurred while attempting to deliver a message for\n"
        "the following list of recipients:\n\n"
        "a@example.com: 550 5.1.1 <a@example.com>: Recipient address rejected\n"
        "b@example.com: 552 5.2.2 <b@example.com>: Mailbox full\n",
    )
    data = ingest(text).attached_data
    assert [data["_DSNInfo.Recipient1.Status"], data["_DSNInfo.Recipient2.Status"]] == [
        "5.1.1",
        "5.2.2",
    ]
    assert data["_DSNInfo.Recipient2.ReplyCode"] == "552"
    assert data["_DSNRawInfo.Recipient1.Status"] == "5.0.0"  # verbatim all the same


def test_the_notice_does_not_override_a_specific_status_or_another_class() -> None:
    groups = "Final-Recipient: rfc822; a@example.com\nAction: delayed\nStatus: 4.0.0\n"
    text = report(groups).replace(
        "Your message could not be delivered.\n", "a@example.com: 550 5.1.1 unknown user\n"
    )
    data = ingest(text).attached_data
    assert data["_DSNInfo.Recipient1.Status"] == "4.0.0"
    assert ingest(text).subtype == REPORT


def test_the_opensmtpd_mailer_daemon_display_name_and_sentence() -> None:
    text = (
        "From: Mailer Daemon <poostmaster@mx.example.org>\nTo: agent@centre.example\n"
        "Subject: Delivery status notification: error\n\n"
        "    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n"
        "kijitora@example.co.jp: Envelope expired\n\n"
        "    Below is a copy of the original message:\n\n"
        "From: Agent <agent@centre.example>\nTo: <kijitora@example.co.jp>\n"
    )
    interaction = ingest(text)
    assert interaction.subtype == NDR
    assert interaction.attached_data["_DSNInfo.RecipientCount"] == 1


FML_REJECTION = (
    "From: neko-admin@lists.example.org\nTo: sender@example.com\n"
    "Subject: You sender@example.com are not member (neko ML)\n"
    "X-MLServer: fml [fml 4.0.3 release]\n\n"
    "You are not a member of this mailing list <neko@lists.example.org>.\n\n"
    "If you know the general guide of this list, please send mail to\n\n"
    "\tneko-ctl@lists.example.org\n"
)


def test_a_mailing_list_rejection_names_the_list_as_the_failed_recipient() -> None:
    interaction = ingest(FML_REJECTION)
    assert interaction.subtype == NDR
    data = interaction.attached_data
    assert data["_DSNInfo.RecipientCount"] == 1
    assert data["_DSNInfo.Recipient1.Recipient"] == "neko@lists.example.org"


def test_a_mailing_list_post_saying_not_a_member_is_not_a_rejection() -> None:
    post = FML_REJECTION.replace("From: neko-admin@", "From: alice@", 1)
    assert ingest(post).subtype == NEW
    headerless = FML_REJECTION.replace("X-MLServer: fml [fml 4.0.3 release]\n", "")
    assert ingest(headerless).subtype == NEW


def test_delivery_status_fields_inline_in_the_notice() -> None:
    text = (
        "From: MAILER-DAEMON@mx.example.org\nTo: agent@centre.example\n"
        "Subject: Delivery Status Notification (Failure)\n\n"
        "An error occurred while trying to deliver the mail to the following recipients:\n"
        "a@example.com\n\nTechnical report:\n\nReporting-MTA: dsn; mx.example.org\n\n"
        "Action: failed\nFinal-Recipient: rfc822; a@example.com\n"
        "Diagnostic-Code: smtp; 550 5.2.1 <alias@example.com>... User Unknown\n"
        "Status: 5.2.1\n"
    )
    data = ingest(text).attached_data
    assert data["_DSNInfo.RecipientCount"] == 1  # not the address inside the diagnostic
    assert (data["_DSNInfo.Recipient1.Recipient"], data["_DSNInfo.Recipient1.Status"]) == (
        "a@example.com",
        "5.2.1",
    )


def test_a_helpdesk_address_and_an_alias_origin_are_not_recipients() -> None:
    text = (
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\nTo: agent@centre.example\n"
        "Subject: Undelivered Mail Returned to Sender\n\n"
        "I'm sorry to have to inform you that the message returned\n"
        "below could not be delivered to one or more destinations.\n\n"
        "For further assistance, please contact <support@isp.example>\n\n"
        "  gone@example.net\n    (generated from alias@example.com)\n"
        "    host mx.example.net said: 550 5.1.1 User unknown\n"
    )
    data = ingest(text).attached_data
    assert data["_DSNInfo.RecipientCount"] == 1
    assert data["_DSNInfo.Recipient1.Recipient"] == "gone@example.net"
    assert data["_DSNInfo.Recipient1.Status"] == "5.1.1"


def test_a_failure_code_is_preferred_to_a_transcripts_success_codes() -> None:
    text = (
        "From: MAILER-DAEMON@mx.example.org\nTo: postmaster@centre.example\n"
        "Subject: Postfix SMTP server: errors from localhost\n\n"
        "Transcript of session follows.\n\n"
        " In:  RCPT TO:<a@example.com>\n Out: 250 2.1.5 Ok\n In:  DATA\n"
        " Out: 451 4.3.0 Error: queue file write error\n"
    )
    data = ingest(text).attached_data
    assert data["_DSNInfo.Recipient1.Recipient"] == "a@example.com"
    assert (data["_DSNInfo.Recipient1.Status"], data["_DSNInfo.Recipient1.ReplyCode"]) == (
        "4.3.0",
        "451",
    )


def test_a_single_recipient_takes_the_code_stated_before_its_address() -> None:
    text = (
        "From: postmaster@mx.example.org\nTo: agent@centre.example\n"
        'Subject: Undeliverable Mail: "Hello"\n\n'
        "Could not be delivered because of\n\n550 5.1.1 User unknown\n\n"
        "The following recipients were affected:\n    a@example.com\n"
    )
    data = ingest(text).attached_data
    assert (data["_DSNInfo.Recipient1.Status"], data["_DSNInfo.Recipient1.ReplyCode"]) == (
        "5.1.1",
        "550",
    )


def test_a_bounce_of_mail_sent_to_oneself_names_the_addressee() -> None:
    text = (
        "From: MAILER-DAEMON@example.org\nTo: me@example.org\nSubject: failure notice\n\n"
        "Hi. This is the qmail-send program at example.org.\n\n"
        "<me@example.org>:\nRemote host said: 552 Error: disk quota exceeded\n"
    )
    data = ingest(text).attached_data
    assert data["_DSNInfo.Recipient1.Recipient"] == "me@example.org"
    assert data["_DSNInfo.Recipient1.ReplyCode"] == "552"


def test_an_ses_notification_split_by_a_relay_at_990_characters() -> None:
    message = (
        '{"notificationType":"Bounce","bounce":{"bounceType":"Permanent",'
        '"bouncedRecipients":[{"emailAddress":"gone@example.com","status":"5.1.1",'
        '"diagnosticCode":"smtp; 550 user unknown"}]},"mail":{"subject":"Nya' + "x" * 900 + 'aan"}}'
    )
    escaped = message.replace('"', '\\"')
    envelope = '{\n  "Type" : "Notification",\n  "Message" : "' + escaped + '"\n}\n'
    cut = envelope.index("5.1.1") + 3  # splits the status: 5.1!\n .1
    body = envelope[:cut] + "!\n " + envelope[cut:]  # Sendmail's long-line split
    text = (
        "From: SES <no-reply@sns.amazonaws.com>\nTo: agent@centre.example\n"
        f"Subject: AWS Notification Message\n\n{body}"
    )
    interaction = ingest(text)
    assert interaction.subtype == NDR
    assert interaction.attached_data["_DSNInfo.Recipient1.Status"] == "5.1.1"


def test_the_text_of_a_multipart_without_boundary_is_read() -> None:
    # what the kernel parser gives once it keeps the body of a multipart whose
    # boundary is missing (see the docs): the notice is that text
    message = ParsedMessage(
        headers=[("From", "MAILER-DAEMON@mx.example.org")],
        subject="Delivery Notification: Delivery has failed",
        from_addr="MAILER-DAEMON@mx.example.org",
        parts=[Part(path="", content_type="multipart/report", text="Recipient address: a@x.org\n")],
    )
    assert "a@x.org" in notice.notice_text(message)
    assert vendor.looks_like_bounce(message, [])
    assert [r.address for r in notice.extract_recipients(message)] == ["a@x.org"]

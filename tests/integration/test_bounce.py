"""A mail to an unknown local user comes back as a real Postfix bounce, which postroom stores.

``postroom send --now`` (smtp-client: Postfix's submission port, STARTTLS, AUTH as
agent4) sends a reply to a customer's mail to two recipients, agent5 (known) and
nobody@example.test; Postfix accepts both, delivers agent5's, Dovecot's LMTP
refuses the other, and Postfix returns a DSN (``multipart/report``) to agent4.
``postroom run --once`` on agent4's INBOX then stores that bounce as an
interaction, raw bytes and all; the DSN plugin makes it an ``InboundNDR`` and the
child of the message it reports on, and the outbound interaction's delivery status
follows: nobody failed, agent5 sent, the whole ``PartlyFailed`` (``--once`` here;
the running gateway's path is in ``test_reports.py``).
"""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

from tests.integration.servers import MailServers
from tests.integration.sites import Site, explain


def test_a_bounce_from_postfix_is_ingested_and_stored(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    for user in ("agent4", "agent5"):
        ms.clear(user)
    site = Site(tmp_path, ms)
    site.smtp_client("agent4")
    site.mailbox("bounces", "agent4")
    site.write()
    question = tmp_path / "question.eml"
    question.write_bytes(
        b"From: customer@client.example\r\nTo: agent4@example.test\r\n"
        b"Subject: anybody there?\r\nMessage-ID: <question-1@client.example>\r\n\r\nHello?\r\n"
    )
    ingested = site.cli("ingest", str(question), "--json")
    assert ingested.returncode == 0, explain(ingested)
    inbound_id = json.loads(ingested.stdout)["id"]

    sent = site.cli(
        "send",
        "--in-reply-to", inbound_id,
        "--from", ms.address("agent4"),
        "--to", ms.address("agent5"),
        "--to", ms.address("nobody"),
        "--text", "Is anybody there?",
        "--now",  # no gateway runs on this site: send from the command
    )  # fmt: skip
    assert sent.returncode == 0, explain(sent)
    outbound_id, outbound_mid, status = sent.stdout.split()
    assert status == "Sent"  # Postfix took both recipients
    ms.wait_for_messages("agent5", 1, timeout=30)

    ms.wait_for_messages("agent4", 1, timeout=30)
    done = site.run_once()
    assert done.returncode == 0, explain(done)
    assert ms.message_count("agent4") == 0

    [bounce] = site.rows("type = 'Inbound' AND id <> ?", inbound_id)
    assert bounce["mailbox"] == "bounces"
    assert "MAILER-DAEMON" in bounce["from_addr"]
    assert bounce["message_id"] != outbound_mid

    # the raw bytes: the DSN as Postfix wrote it, reporting on our message
    raw = site.raw(bounce["id"])
    assert raw.startswith(b"Return-Path: <>")
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = {part.get_content_type(): part for part in report.iter_parts()}
    assert "message/delivery-status" in parts
    assert b"Action: failed" in raw and b"Status: 5.1.1" in raw
    [returned] = parts["message/rfc822"].iter_parts()
    assert returned["Message-ID"] == outbound_mid

    # `postroom interactions show` finds it
    shown = site.cli("interactions", "show", bounce["id"])
    assert shown.returncode == 0, explain(shown)
    head = json.JSONDecoder().raw_decode(shown.stdout)[0]
    assert head["id"] == bounce["id"] and head["type"] == "Inbound"
    assert "MAILER-DAEMON" in head["from"]

    # Postfix's DSN carries no In-Reply-To or References: the parent comes from
    # the returned message's Message-ID, which the DSN plugin reads
    assert report["In-Reply-To"] is None and report["References"] is None
    assert bounce["subtype"] == "InboundNDR"
    assert bounce["parent_id"] == outbound_id

    # the reply's status follows the bounce: one of its two recipients failed
    shown = site.cli("interactions", "show", outbound_id, "--json")
    assert shown.returncode == 0, explain(shown)
    outbound = json.loads(shown.stdout)
    assert outbound["parent_id"] == inbound_id and outbound["status"] == "PartlyFailed"
    delivery = {row["recipient"]: row for row in outbound["delivery"]}
    assert delivery[ms.address("agent5")]["status"] == "sent"
    failed = delivery[ms.address("nobody")]
    assert (failed["status"], failed["report_id"]) == ("failed", bounce["id"])
    assert "5.1.1" in failed["diagnostic"]
    assert outbound["outbox"]["attempts"] == 1
    assert [h["result"] for h in outbound["outbox"]["history"]] == ["sent"]

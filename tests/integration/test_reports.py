"""Real delivery status notifications from Postfix, classified and threaded automatically.

A running gateway (``postroom run``, IMAP IDLE on agent8's INBOX, poll interval
one hour) sends through Postfix's submission port as agent8, asking for
``NOTIFY=SUCCESS,FAILURE``: once to agent9 (a known user) and once to
nobody@example.test (unknown). Postfix hands the first to Dovecot's LMTP,
which does not announce DSN, so Postfix itself returns a success notice with
``Action: relayed``; Dovecot refuses the second recipient, and Postfix returns
a bounce (``Action: failed``, ``Status: 5.1.1``). Both come back to agent8,
where the DSN plugin makes them an ``InboundReport`` and an ``InboundNDR``,
each the child of the outbound interaction it reports on, and the bounced
address lands on the suppression list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.servers import MailServers
from tests.integration.sites import Site, http, running_gateway

#: generous: each notice takes about a second (Postfix queue, LMTP, IDLE, commit)
GUARD = 60.0
DSN = {"notify": ["SUCCESS", "FAILURE"], "ret": "HDRS"}


def attached(row: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(row["attached_data"]))


def test_postfix_success_and_failure_notices_become_report_and_ndr_children(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    for user in ("agent8", "agent9"):
        ms.clear(user)
    site = Site(tmp_path, ms)
    site.mailbox("reports", "agent8", poll_interval="01:00:00")
    site.smtp_client("agent8")

    with running_gateway(site, "reports") as running:

        def child_of(outbound_id: str) -> list[dict[str, Any]]:
            running()
            return site.rows("type = 'Inbound' AND parent_id = ?", outbound_id)

        def send(to: str, subject: str) -> dict[str, Any]:
            status, outbound = http(
                site.api_port,
                "/send",
                {
                    "from": ms.address("agent8"),
                    "to": [to],
                    "subject": subject,
                    "text": "Your order has shipped.",
                    "options": {"dsn": DSN},
                },
            )
            assert status == 202, outbound
            return dict(outbound)

        known = send(ms.address("agent9"), "to a known user")
        unknown = send(ms.address("nobody"), "to an unknown user")
        [report] = ms.wait_for(lambda: child_of(known["id"]), GUARD, "the success notice")
        [ndr] = ms.wait_for(lambda: child_of(unknown["id"]), GUARD, "the bounce")

        def status_is(outbound: dict[str, Any], status: str) -> dict[str, Any] | None:
            running()
            _, shown = http(site.api_port, f"/interactions/{outbound['id']}")
            return dict(shown) if shown["status"] == status else None

        # each outbound interaction's status follows its report (after its commit)
        delivered = ms.wait_for(lambda: status_is(known, "Delivered"), GUARD, "Delivered")
        suppressed = ms.wait_for(
            lambda: status_is(unknown, "DeliveryFailed"), GUARD, "DeliveryFailed"
        )

    # the known user got the message itself
    assert ms.message_count("agent9") == 1

    assert report["subtype"] == "InboundReport"
    data = attached(report)
    assert data["_DSNInfo.RecipientCount"] == 1
    assert data["_DSNInfo.Recipient1.Recipient"] == ms.address("agent9")
    assert data["_DSNInfo.Recipient1.Action"] == "relayed"
    assert data["_DSNRawInfo.Recipient1.Action"] == "relayed"
    assert data["_DSNRawInfo.Reporting-MTA"].startswith("dns;")
    # ENVID defaulted to the outbound Message-ID, and Postfix sent it back
    assert data["_DSNRawInfo.Original-Envelope-Id"]

    assert ndr["subtype"] == "InboundNDR"
    data = attached(ndr)
    assert data["_DSNInfo.RecipientCount"] == 1
    assert data["_DSNInfo.Recipient1.Recipient"] == ms.address("nobody")
    assert data["_DSNInfo.Recipient1.Action"] == "failed"
    assert data["_DSNRawInfo.Recipient1.Status"] == "5.1.1"

    # the hard bounce is on the suppression list, with the NDR that put it there
    listed = site.cli("suppression", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["address"] == ms.address("nobody").lower()
    assert entry["interaction_id"] == ndr["id"]
    assert "5.1.1" in entry["reason"]
    # the send itself succeeded (Postfix accepted it); the report says what became of it
    assert suppressed["outbox"]["state"] == "sent" and suppressed["outbox"]["attempts"] == 1
    [row] = suppressed["delivery"]
    assert (row["recipient"], row["status"], row["report_id"]) == (
        ms.address("nobody"), "failed", ndr["id"],
    )  # fmt: skip
    [row] = delivered["delivery"]
    assert (row["status"], row["action"]) == ("delivered", "relayed")
    assert row["report_id"] == report["id"]

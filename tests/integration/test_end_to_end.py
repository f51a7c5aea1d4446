"""One running gateway, end to end: send over Postfix, receive over IDLE, thread the reply.

``postroom run`` (not ``--once``) with an IMAP mailbox for agent5 whose poll
interval is an hour, and an smtp-client sending as agent6 through Postfix's
submission port. A message sent with ``POST /send`` to agent5 goes through
Postfix and Dovecot's LMTP and must come back as an inbound interaction: with
an hour between polls only IDLE can bring it within the test's (generous)
guard. A reply to it from agent7 must become an inbound interaction whose
parent is the outbound interaction. SIGTERM then stops the gateway cleanly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.integration.servers import MailServers, make_message
from tests.integration.sites import Site, http, running_gateway

#: generous: the path takes about a second (Postfix queue, LMTP, IDLE, commit)
GUARD = 60.0


def test_sent_over_postfix_comes_back_over_idle_and_the_reply_threads(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    ms.clear("agent5")
    site = Site(tmp_path, ms)
    site.mailbox("agent5-box", "agent5", poll_interval="01:00:00")
    site.smtp_client("agent6")

    with running_gateway(site, "agent5-box") as running:

        def inbound(where: str, *params: Any) -> list[dict[str, Any]]:
            running()
            return site.rows(f"type = 'Inbound' AND {where}", *params)

        port = site.api_port
        status, outbound = http(
            port,
            "/send",
            {
                "from": ms.address("agent6"),
                "to": [ms.address("agent5")],
                "subject": "Your order 4711",
                "text": "It has shipped.",
            },
        )
        assert status == 202, outbound
        assert outbound["type"] == "Outbound"
        sent_mid = outbound["message_id"]
        began = time.monotonic()
        [arrived] = ms.wait_for(
            lambda: inbound("message_id = ?", sent_mid), GUARD, "the sent message as inbound"
        )
        took = time.monotonic() - began
        assert arrived["subject"] == "Your order 4711"
        assert arrived["from_addr"] == ms.address("agent6")
        status, stored = http(port, f"/interactions/{outbound['id']}")
        assert status == 200 and stored["status"] == "Sent", stored
        assert stored["outbox"]["state"] == "sent", stored

        reply = make_message(
            subject="Re: Your order 4711",
            sender=ms.address("agent7"),
            to=ms.address("agent5"),
            body="Thanks!\r\n",
            headers={"In-Reply-To": sent_mid, "References": sent_mid},
        )
        ms.submit("agent7", [ms.address("agent5")], reply)
        [child] = ms.wait_for(
            lambda: inbound("parent_id = ?", outbound["id"]), GUARD, "the reply, threaded"
        )
        assert child["subject"] == "Re: Your order 4711"
        assert child["from_addr"] == ms.address("agent7")
    assert ms.message_count("agent5") == 0
    print(f"\nsent -> inbound interaction in {took:.2f} s (poll interval 1 h)")

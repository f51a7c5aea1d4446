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

import email
import imaplib
import time
from email import policy
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


def read_over_imap(ms: MailServers, user: str) -> list[email.message.EmailMessage]:
    """*user*'s INBOX as an IMAP client reads it (STARTTLS, the run's CA verified)."""
    client = imaplib.IMAP4(ms.host, ms.ports["imap"], timeout=30)
    try:
        client.starttls(ssl_context=ms.tls_context())
        client.login(user, ms.password(user))
        client.select("INBOX", readonly=True)
        _, [numbers] = client.search(None, "ALL")
        found = []
        for number in numbers.split():
            _, data = client.fetch(number, "(BODY.PEEK[])")
            raw = data[0][1]  # type: ignore[index]
            found.append(email.message_from_bytes(raw, policy=policy.default))
        return found  # type: ignore[return-value]
    finally:
        client.logout()  # closes the connection


def test_a_reply_made_from_in_reply_to_alone_goes_out_threaded_and_its_answer_threads(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    """Issue 12: the agent gives only in_reply_to and a text; the customer (agent7,
    answers wanted at agent8: Reply-To) reads a reply with the right To, Subject,
    In-Reply-To and whole References, and the answer to it threads to it."""
    ms = mail_servers
    ms.clear("agent5", "agent7", "agent8")
    site = Site(tmp_path, ms)
    site.mailbox("agent5-box", "agent5", poll_interval="01:00:00")
    site.smtp_client("agent6")
    customer = make_message(
        subject="RE: order 4711 arrived damaged",
        sender=f"Anna <{ms.address('agent7')}>",
        to=ms.address("agent5"),
        body="The parcel was crushed.\r\n",
        headers={
            "Reply-To": f"Orders <{ms.address('agent8')}>",
            "In-Reply-To": "<ack-1@centre.example>",
            "References": "<first-1@shop.example> <ack-1@centre.example>",
        },
    )
    customer_mid = email.message_from_bytes(customer, policy=policy.default)["Message-ID"]

    with running_gateway(site, "agent5-box") as running:

        def inbound(where: str, *params: Any) -> list[dict[str, Any]]:
            running()
            return site.rows(f"type = 'Inbound' AND {where}", *params)

        ms.submit("agent7", [ms.address("agent5")], customer)
        [parent] = ms.wait_for(
            lambda: inbound("message_id = ?", customer_mid), GUARD, "the customer's mail"
        )
        port = site.api_port
        status, shown = http(port, f"/interactions/{parent['id']}")
        assert status == 200, shown
        assert shown["reply_to"] == [ms.address("agent8")]
        assert shown["references"] == ["<first-1@shop.example>", "<ack-1@centre.example>"]
        assert shown["date"] is not None
        status, outbound = http(
            port,
            "/send",
            {"from": ms.address("agent6"), "text": "We are sorry.", "in_reply_to": parent["id"]},
        )
        assert status == 202, outbound
        chain = ["<first-1@shop.example>", "<ack-1@centre.example>", customer_mid]
        ms.wait_for_messages("agent8", 1, timeout=GUARD)
        [reply] = read_over_imap(ms, "agent8")
        assert [a.addr_spec for a in reply["To"].addresses] == [ms.address("agent8")]
        assert reply["Subject"] == "Re: order 4711 arrived damaged"
        assert reply["In-Reply-To"] == customer_mid
        assert reply["References"].split() == chain
        assert reply["Message-ID"] == outbound["message_id"]
        assert reply.get_content().rstrip() == "We are sorry."
        assert ms.message_count("agent7") == 0  # Reply-To wins over From

        answer = make_message(
            subject=reply["Subject"],
            sender=ms.address("agent7"),
            to=ms.address("agent5"),
            body="Thank you.\r\n",
            headers={
                "In-Reply-To": reply["Message-ID"],
                "References": " ".join([*chain, reply["Message-ID"]]),
            },
        )
        ms.submit("agent7", [ms.address("agent5")], answer)
        [child] = ms.wait_for(
            lambda: inbound("parent_id = ?", outbound["id"]), GUARD, "the answer, threaded"
        )
        assert child["subject"] == "Re: order 4711 arrived damaged"
        status, shown = http(port, f"/interactions/{child['id']}")
        assert status == 200 and shown["references"] == [*chain, outbound["message_id"]]

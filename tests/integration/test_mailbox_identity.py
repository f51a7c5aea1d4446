"""Mailbox identity through the real Postfix and Dovecot (issue 12, item 3).

One running gateway (``postroom run``) reads the mailbox "desk" (agent4, whose
address and display name are its identity, with a text signature) over IMAP
IDLE and sends through Postfix's submission port as agent3: the shared
``smtp-client`` account, which the test Postfix lets send as agent4@ (send-as
rights, ``SEND_AS`` in contrib/scripts/mail-test-servers) and as nobody else.

* A customer's mail (with a photo) to the desk is answered with ``in_reply_to``,
  a text and two files (the customer's photo by reference, a label uploaded):
  the reply read back over IMAP comes from the desk's identity, signed, with the
  whole References chain and both files byte for byte; the customer's answer to
  it threads to it.
* Mail from the mailbox "sales" (agent6@, for which agent3 has no right) fails
  for good, the error saying plainly that the server refused the From.
* Mail from the mailbox "own" (agent7@, with its own login ``smtp-user``)
  goes out over its own connection, which agent3's could not do; ``postroom
  check --connect`` logs in with that login too.
"""

from __future__ import annotations

import base64
import email
import imaplib
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.integration.servers import MailServers, make_message
from tests.integration.sites import Site, http, running_gateway

#: generous: the path takes about a second (Postfix queue, LMTP, IDLE, commit)
GUARD = 60.0
SIGNATURE = "Anna Weber\nCustomer Care, Centre"


#: the customer's photo (every byte value) and the return label the reply adds
PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 64 + b"\xff\xd9"
LABEL = b"%PDF-1.4\n" + bytes(range(255, -1, -1)) * 32 + b"\n%%EOF\n"


def with_photo(message: bytes) -> bytes:
    """*message* (text/plain) made multipart/mixed with :data:`PHOTO` attached."""
    parsed = email.message_from_bytes(message, policy=policy.SMTP)
    parsed.make_mixed()
    parsed.add_attachment(PHOTO, maintype="image", subtype="jpeg", filename="parcel.jpg")
    return parsed.as_bytes(policy=policy.SMTP)


def read_one(ms: MailServers, user: str, message_id: str) -> EmailMessage:
    """The message with *message_id* in *user*'s INBOX, as an IMAP client reads it
    (STARTTLS, the run's CA verified)."""
    client = imaplib.IMAP4(ms.host, ms.ports["imap"], timeout=30)
    try:
        client.starttls(ssl_context=ms.tls_context())
        client.login(user, ms.password(user))
        client.select("INBOX", readonly=True)
        _, [numbers] = client.search(None, "HEADER", "Message-ID", message_id)
        [number] = numbers.split()
        _, data = client.fetch(number, "(BODY.PEEK[])")
        raw = data[0][1]  # type: ignore[index]
        return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]
    finally:
        client.logout()


def test_replies_go_out_from_the_mailbox_identity_with_send_as_rights(
    mail_servers: MailServers, tmp_path: Path
) -> None:
    ms = mail_servers
    assert ms.state["send_as"] == {ms.address("agent4"): ["agent3"]}
    ms.clear("agent2", "agent4")
    (tmp_path / "signature.txt").write_text(SIGNATURE + "\n", encoding="utf-8")
    site = Site(tmp_path, ms)
    site.mailbox(
        "desk",
        "agent4",
        poll_interval="01:00:00",
        address=ms.address("agent4"),
        display_name="Customer Care",
        signature_text_file=str(tmp_path / "signature.txt"),
    )
    site.mailbox("sales", "agent6", enabled=False, address=ms.address("agent6"))
    site.mailbox(
        "own",
        "agent7",
        enabled=False,
        address=ms.address("agent7"),
        display_name="Agent Seven",
        smtp_user="agent7",
        smtp_password=ms.password("agent7"),
    )
    site.smtp_client("agent3")
    site.sections["email-processing"] = {"default-domain": ms.domain}
    customer = with_photo(make_message(
        subject="RE: order 4711 arrived damaged",
        sender=f"Anna <{ms.address('agent2')}>",
        to=ms.address("agent4"),
        body="The parcel was crushed.\r\n",
        headers={
            "In-Reply-To": "<ack-1@centre.example>",
            "References": "<first-1@shop.example> <ack-1@centre.example>",
        },
    ))  # fmt: skip
    customer_mid = email.message_from_bytes(customer, policy=policy.default)["Message-ID"]
    chain = ["<first-1@shop.example>", "<ack-1@centre.example>", customer_mid]

    with running_gateway(site, "desk") as running:

        def rows(where: str, *params: Any) -> list[dict[str, Any]]:
            running()
            return site.rows(where, *params)

        port = site.api_port
        ms.submit("agent2", [ms.address("agent4")], customer)
        [parent] = ms.wait_for(
            lambda: rows("type = 'Inbound' AND message_id = ?", customer_mid),
            GUARD,
            "the customer's mail",
        )
        assert parent["mailbox"] == "desk"

        # the reply: from the desk's identity, through agent3's send-as right, with
        # the customer's photo back (by reference) and a label of ours (uploaded)
        status, reply = http(port, "/send", {
            "in_reply_to": parent["id"], "text": "We are sorry.",
            "attachments": [
                {"interaction": parent["id"], "index": 0},
                {"filename": "Rücksendeetikett.pdf", "content": base64.b64encode(LABEL).decode()},
            ],
        })  # fmt: skip
        assert status == 202, reply
        assert reply["mailbox"] == "desk" and reply["from"] == ms.address("agent4")
        ms.wait_for(
            lambda: rows("id = ? AND status = 'Sent'", reply["id"]), GUARD, "the reply sent"
        )
        ms.wait_for(lambda: ms.search("agent2", f"HEADER Message-ID {reply['message_id']}"),
                    GUARD, "the reply delivered")  # fmt: skip
        got = read_one(ms, "agent2", reply["message_id"])
        assert str(got["From"]) == f"Customer Care <{ms.address('agent4')}>"
        assert got["Return-Path"] == f"<{ms.address('agent4')}>"  # the envelope sender too
        assert [a.addr_spec for a in got["To"].addresses] == [ms.address("agent2")]
        assert got["In-Reply-To"] == customer_mid
        assert got["References"].split() == chain
        assert got["Subject"] == "Re: order 4711 arrived damaged"
        body = got.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert body == f"We are sorry.\n\n{SIGNATURE}\n"
        files = [
            (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
            for part in got.iter_attachments()
        ]
        assert files == [
            ("parcel.jpg", "image/jpeg", PHOTO),
            ("Rücksendeetikett.pdf", "application/pdf", LABEL),
        ]
        status, shown = http(port, f"/interactions/{reply['id']}")
        assert status == 200 and shown["mailbox"] == "desk", shown

        # the customer's answer to the reply threads to the outbound interaction
        answer = make_message(
            subject=str(got["Subject"]), sender=ms.address("agent2"), to=ms.address("agent4"),
            body="Thank you.\r\n",
            headers={"In-Reply-To": reply["message_id"],
                     "References": " ".join([*chain, reply["message_id"]])},
        )  # fmt: skip
        ms.submit("agent2", [ms.address("agent4")], answer)
        [child] = ms.wait_for(
            lambda: rows("type = 'Inbound' AND parent_id = ?", reply["id"]),
            GUARD,
            "the answer, threaded to the reply",
        )
        assert child["mailbox"] == "desk"

        # no send-as right for agent6@: failed for good, the server's refusal said plainly
        status, refused = http(port, "/send", {
            "mailbox": "sales", "to": ms.address("agent2"), "subject": "offer", "text": "x",
        })  # fmt: skip
        assert status == 202, refused
        ms.wait_for(
            lambda: rows("id = ? AND status = 'Failed'", refused["id"]), GUARD, "the refusal"
        )
        status, shown = http(port, f"/interactions/{refused['id']}")
        assert status == 200, shown
        assert shown["outbox"]["state"] == "failed" and shown["outbox"]["attempts"] == 1
        assert shown["attached_data"]["_SendError"].startswith(
            f"SMTPSendError: the server refused to let agent3 send as {ms.address('agent6')}: "
            "grant send-as rights or use the user's own address (server said: 553 5.7.1 "
            f"<{ms.address('agent6')}>: Sender address rejected: not owned by user agent3"
        ), shown["attached_data"]

        # its own login: agent7 sends as itself, on a connection of its own
        status, own = http(port, "/send", {
            "mailbox": "own", "to": ms.address("agent2"), "subject": "own login", "text": "x",
        })  # fmt: skip
        assert status == 202, own
        ms.wait_for(lambda: rows("id = ? AND status = 'Sent'", own["id"]), GUARD, "own sent")
        ms.wait_for(lambda: ms.search("agent2", f"HEADER Message-ID {own['message_id']}"),
                    GUARD, "own delivered")  # fmt: skip
        got = read_one(ms, "agent2", own["message_id"])
        assert str(got["From"]) == f"Agent Seven <{ms.address('agent7')}>"
    assert ms.search("agent2", f"HEADER Message-ID {refused['message_id']}") == []
    log = (tmp_path / "gateway.log").read_text(errors="replace")
    assert ms.password("agent7") not in log and ms.password("agent3") not in log

    # check --connect logs in with the mailbox's own login too
    done = site.cli("check", "--connect")
    assert done.returncode == 0, done.stdout + done.stderr
    [own_line] = [line for line in done.stdout.splitlines() if "smtp-client[own]" in line]
    assert own_line.startswith("ok     smtp-client[own] (") and " as agent7; " in own_line
    assert ms.password("agent7") not in done.stdout + done.stderr

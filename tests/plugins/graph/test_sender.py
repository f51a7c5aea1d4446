"""The graph sender (sendMail with MIME) against the Graph fake."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from postroom.api import Envelope, SenderAuthenticationFailed, SendError
from postroom.drivers import DriverContext
from postroom.testing import result_of
from postroom_graph.sender import MAX_MIME, UPLOAD_CHUNK, GraphSender, with_recipients
from tests.fakes.graph import GraphFake
from tests.fakes.graph.client import BlockingHTTP
from tests.plugins.fake_auth import FakeAuthenticator
from tests.plugins.graph.conftest import BOX, TOKEN
from tests.plugins.imap.conftest import FakeConfig


class FakeHTTPSender(GraphSender):
    ca_file_for_tests = ""

    def make_http(self) -> Any:
        return BlockingHTTP(self.ca_file_for_tests)


def make_sender(graph: GraphFake, auth: FakeAuthenticator | None = None) -> FakeHTTPSender:
    FakeHTTPSender.ca_file_for_tests = graph.ca_file
    events: list[tuple[str, ...]] = []
    context = DriverContext(
        reactor=task.Clock(), clock=task.Clock(), runner=None, config=FakeConfig(),
        spool_dir="/nonexistent", authenticator=auth or FakeAuthenticator(BOX, TOKEN, "BEARER"),
        auth_event=lambda *e: events.append(e),
    )  # fmt: skip
    options = {"server": graph.url, "protocol-timeout": 30.0, "enable-debug": False,
               "user": BOX, "verify-message-id": True}
    sender = FakeHTTPSender(options, context)
    sender.events = events  # type: ignore[attr-defined]
    return sender


def outbound(size: int = 1024) -> bytes:
    head = (f"From: Support <{BOX}>\r\nTo: Ann <ann@example.test>, gone@example.test\r\n"
            "Cc: bob@example.test\r\nSubject: your ticket\r\n"
            "Message-ID: <out-1@contoso.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    return head + b"y" * (size - len(head))


def envelope(*rcpt: str, **kwargs: Any) -> Envelope:
    return Envelope(mail_from=BOX, rcpt_to=list(rcpt), **kwargs)


def test_sends_1kb_with_bcc_and_without_suppressed_recipients(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    sender = make_sender(graph)
    # gone@example.test is suppressed: the kernel left it out of the envelope
    sent = outbound()
    result = result_of(sender.send(sent, envelope(
        "ann@example.test", "bob@example.test", "carol@example.test"), "<out-1@contoso.test>"))
    assert result.message_id == "<out-1@contoso.test>"
    assert sorted(result.accepted) == ["ann@example.test", "bob@example.test",
                                       "carol@example.test"]
    [mime] = graph.sent(BOX)
    parsed = message_from_bytes(mime)
    assert parsed["To"] == "Ann <ann@example.test>"
    assert parsed["Cc"] == "bob@example.test"
    assert parsed["Bcc"] == "carol@example.test"
    assert parsed["Message-ID"] == "<out-1@contoso.test>"
    assert mime.split(b"\r\n\r\n", 1)[1] == sent.split(b"\r\n\r\n", 1)[1]  # body untouched
    assert graph.counts["sendMail"] == 1
    # read back from Sent Items: Exchange kept it
    assert "Message-ID kept" in result.detail
    assert graph.counts["listMessages"] == 1


def test_a_message_id_exchange_replaced_is_reported(
    graph: GraphFake, caplog: pytest.LogCaptureFixture
) -> None:
    graph.mailbox(BOX)
    graph.rewrite_message_ids = True
    with caplog.at_level("WARNING"):
        result = result_of(make_sender(graph).send(outbound(), envelope("ann@example.test"),
                                                   "<out-1@contoso.test>"))
    assert "not found in Sent Items" in result.detail
    assert "may have given the message another Message-ID" in caplog.text


def test_dsn_options_are_refused_permanently_without_a_request(graph: GraphFake) -> None:
    sender = make_sender(graph)
    with pytest.raises(SendError, match="DSN") as info:
        result_of(sender.send(outbound(), envelope("ann@example.test",
                                                   rcpt_options=["NOTIFY=SUCCESS"]), "<x@y>"))
    assert info.value.permanent
    assert graph.counts.total() == 0


def test_too_large_without_attachments_is_permanent(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    sender = make_sender(graph)
    with pytest.raises(SendError, match=f"at most {MAX_MIME} bytes") as info:
        result_of(sender.send(outbound(MAX_MIME + 1000), envelope("ann@example.test"), "<x@y>"))
    assert info.value.permanent
    assert graph.counts.total() == 0


def with_attachment(data: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = f"Support <{BOX}>"
    message["To"] = "Ann <ann@example.test>"
    message["Subject"] = "the logs"
    message["Message-ID"] = "<big-1@contoso.test>"
    message.set_content("The logs are attached.\n")
    message.add_attachment(data, maintype="application", subtype="gzip",
                           filename="logs.tar.gz")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def test_sends_10mb_with_an_attachment_through_an_upload_session(graph: GraphFake) -> None:
    import random

    graph.mailbox(BOX)
    data = random.Random(11).randbytes(7 * 1024 * 1024 + 12345)  # ~10 MB once base64
    sent = with_attachment(data)
    assert len(sent) > 9 * 1024 * 1024
    result = result_of(make_sender(graph).send(
        sent, envelope("ann@example.test", "carol@example.test"), "<big-1@contoso.test>"))
    assert graph.problems == []
    assert result.accepted == ["ann@example.test", "carol@example.test"]
    assert "upload session" in result.detail and "Message-ID kept" in result.detail
    assert graph.counts["sendMail"] == 0
    assert graph.counts["createDraft"] == 1 and graph.counts["sendDraft"] == 1
    assert graph.counts["createUploadSession"] == 1
    assert graph.counts["uploadRange"] == -(-len(data) // UPLOAD_CHUNK)
    [mime] = graph.sent(BOX)
    parsed = message_from_bytes(mime)
    assert parsed["To"] == "Ann <ann@example.test>"
    assert parsed["Bcc"] == "carol@example.test"
    assert parsed["Message-ID"] == "<big-1@contoso.test>"
    parts = [p for p in parsed.walk() if not p.is_multipart()]
    assert [p.get_filename() for p in parts] == [None, "logs.tar.gz"]
    assert "The logs are attached." in parts[0].get_payload(decode=True).decode()
    assert parts[1].get_payload(decode=True) == data
    assert graph.messages_in(BOX, "drafts") == []


def test_a_refused_token_is_refreshed_then_the_sender_pauses(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    auth = FakeAuthenticator(BOX, "old-tok", "BEARER", refreshed=(TOKEN,))
    result_of(make_sender(graph, auth).send(outbound(), envelope("ann@example.test"), "<x@y>"))
    assert auth.invalidated == 1 and len(graph.sent(BOX)) == 1
    auth = FakeAuthenticator(BOX, "old-tok", "BEARER", refreshed=("also-bad",))
    with pytest.raises(SenderAuthenticationFailed):
        result_of(make_sender(graph, auth).send(outbound(), envelope("ann@example.test"),
                                                "<x@y>"))


def test_a_mailbox_graph_does_not_know_is_a_permanent_failure(graph: GraphFake) -> None:
    sender = make_sender(graph)
    with pytest.raises(SendError, match="404 ErrorInvalidUser") as info:
        result_of(sender.send(outbound(), envelope("ann@example.test"), "<x@y>"))
    assert info.value.permanent


def test_recipient_headers_follow_the_envelope_lf_and_folded(tmp_path: Path) -> None:
    message = (b"From: a@x\nTo: one@x,\n two@x\nBcc: old@x\nSubject: s\n\nbody\n")
    assert with_recipients(message, ["two@x", "three@x"]) == (
        b"From: a@x\nTo: two@x\nSubject: s\nBcc: three@x\n\nbody\n"
    )


def test_the_kernel_sends_1kb_with_bcc_and_suppressed_recipients_left_out(
    graph: GraphFake,
) -> None:
    from postroom.api import OutboundRequest
    from postroom.testing import TestKernel

    graph.mailbox(BOX)
    with TestKernel(sender=make_sender(graph)) as kernel:
        result_of(kernel.store.suppress("gone@example.test", "5.1.1 user unknown"))
        sent = kernel.send(OutboundRequest(
            to=["Ann <ann@example.test>"], cc=["gone@example.test"],
            bcc=["carol@example.test"], from_addr=BOX, subject="your ticket",
            text="z" * 1024, automatic=True,
        ))  # fmt: skip
        assert sent.status == "Sent", sent.attached_data
    [mime] = graph.sent(BOX)
    parsed = message_from_bytes(mime)
    assert parsed["To"] == "Ann <ann@example.test>"
    assert parsed["Cc"] is None  # the suppressed address is not in the message
    assert parsed["Bcc"] == "carol@example.test"
    assert parsed["Message-ID"] == sent.message_id
    assert "z" * 1024 in parsed.get_payload(decode=True).decode()


def test_two_large_parts_each_get_a_session_and_a_small_one_stays_in_the_draft(
    graph: GraphFake,
) -> None:
    import random

    graph.mailbox(BOX)
    rng = random.Random(12)
    big = [rng.randbytes(3 * 1024 * 1024 + 1), rng.randbytes(4 * 1024 * 1024)]
    small = rng.randbytes(100_000)
    message = message_from_bytes(with_attachment(big[0]), _class=EmailMessage,
                                 policy=default)
    message.add_attachment(small, maintype="image", subtype="png", filename="small.png")
    message.add_attachment(big[1], maintype="application", subtype="pdf", filename="big.pdf")
    result_of(make_sender(graph).send(message.as_bytes(), envelope("ann@example.test"),
                                      "<big-1@contoso.test>"))
    assert graph.problems == []
    assert graph.counts["createUploadSession"] == 2
    [mime] = graph.sent(BOX)
    parts = {p.get_filename(): p for p in message_from_bytes(mime).walk()
             if p.get_filename()}
    assert parts["logs.tar.gz"].get_payload(decode=True) == big[0]
    assert parts["big.pdf"].get_payload(decode=True) == big[1]
    assert parts["big.pdf"].get_content_type() == "application/pdf"
    assert parts["small.png"].get_payload(decode=True) == small

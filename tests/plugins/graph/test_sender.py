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


def make_sender(graph: GraphFake, auth: FakeAuthenticator | None = None,
                **options: Any) -> FakeHTTPSender:
    FakeHTTPSender.ca_file_for_tests = graph.ca_file
    events: list[tuple[str, ...]] = []
    context = DriverContext(
        reactor=task.Clock(), clock=task.Clock(), runner=None, config=FakeConfig(),
        spool_dir="/nonexistent", authenticator=auth or FakeAuthenticator(BOX, TOKEN, "BEARER"),
        auth_event=lambda *e: events.append(e),
    )  # fmt: skip
    values = {"server": graph.url, "protocol-timeout": 30.0, "enable-debug": False,
              "user": BOX, "verify-message-id": True, "save-to-sent-items": True}
    values.update({k.replace("_", "-"): v for k, v in options.items()})
    sender = FakeHTTPSender(values, context)
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
    # verify-message-id: through a draft, whose internetMessageId Exchange kept
    assert (graph.counts["sendMail"], graph.counts["createDraft"],
            graph.counts["sendDraft"]) == (0, 1, 1)
    assert "Message-ID kept" in result.detail
    # save-to-sent-items (default): one copy in Sent Items, none left in Drafts
    [copy] = graph.messages_in(BOX, "sentitems")
    assert copy.internet_message_id == "<out-1@contoso.test>"
    assert graph.messages_in(BOX, "drafts") == []
    assert graph.counts["updateMessage"] == 0


def test_without_verification_a_small_message_goes_with_sendmail(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    result = result_of(make_sender(graph, verify_message_id=False).send(
        outbound(), envelope("ann@example.test"), "<out-1@contoso.test>"))
    assert (graph.counts["sendMail"], graph.counts["createDraft"]) == (1, 0)
    assert result.message_id == "<out-1@contoso.test>"
    assert "not checked" in result.detail
    assert len(graph.messages_in(BOX, "sentitems")) == 1


@pytest.mark.parametrize("size", [1024, 0], ids=["1kb", "10mb"])
def test_without_save_to_sent_items_neither_sent_items_nor_drafts_keep_a_copy(
    graph: GraphFake, size: int
) -> None:
    import random

    graph.mailbox(BOX)
    data = outbound(size) if size else with_attachment(
        random.Random(3).randbytes(7 * 1024 * 1024))
    for verify in (True, False):  # sendMail always saves: both go through a draft
        result = result_of(make_sender(graph, save_to_sent_items=False,
                                       verify_message_id=verify).send(
            data, envelope("ann@example.test"), "<out-1@contoso.test>"))
        assert "not saved to Sent Items" in result.detail
    assert graph.counts["sendMail"] == 0 and graph.counts["sendDraft"] == 2
    # PidTagDeleteAfterSubmit set on each draft before it was sent
    assert graph.counts["updateMessage"] == 2
    assert len(graph.sent(BOX)) == 2
    assert graph.messages_in(BOX, "sentitems") == []
    assert graph.messages_in(BOX, "drafts") == []


def test_a_message_id_exchange_replaced_is_the_one_returned(
    graph: GraphFake, caplog: pytest.LogCaptureFixture
) -> None:
    graph.mailbox(BOX)
    graph.rewrite_message_ids = True
    with caplog.at_level("WARNING"):
        result = result_of(make_sender(graph).send(outbound(), envelope("ann@example.test"),
                                                   "<out-1@contoso.test>"))
    [mime] = graph.sent(BOX)
    went_out = message_from_bytes(mime)["Message-ID"]
    assert went_out != "<out-1@contoso.test>" and went_out.endswith("@exchange.fake>")
    assert result.message_id == went_out
    assert f"Exchange gave it Message-ID {went_out}" in result.detail
    assert "the interaction records it" in caplog.text
    assert graph.counts["getMessage"] == 0  # the create answer carried it


def test_the_draft_is_read_when_the_create_answer_has_no_message_id(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    graph.rewrite_message_ids = True
    graph.omit_created_message_id = True
    result = result_of(make_sender(graph).send(outbound(), envelope("ann@example.test"),
                                               "<out-1@contoso.test>"))
    assert graph.counts["getMessage"] == 1
    [mime] = graph.sent(BOX)
    assert result.message_id == message_from_bytes(mime)["Message-ID"] != "<out-1@contoso.test>"


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


def test_the_kernel_records_the_message_id_exchange_used_and_a_reply_threads(
    graph: GraphFake,
) -> None:
    from postroom.api import OutboundRequest
    from postroom.testing import TestKernel

    graph.mailbox(BOX)
    graph.rewrite_message_ids = True
    with TestKernel(sender=make_sender(graph)) as kernel:
        sent = kernel.send(OutboundRequest(to=["ann@example.test"], from_addr=BOX,
                                           subject="your ticket", text="hello"))
        assert sent.status == "Sent", sent.attached_data
        [mime] = graph.sent(BOX)
        went_out = message_from_bytes(mime)["Message-ID"]
        assert sent.message_id == went_out
        [entry] = kernel.outbox()
        assert entry.message_id != went_out  # the outbox keeps the one assigned
        reply = (f"Message-ID: <reply-1@example.test>\r\nFrom: ann@example.test\r\n"
                 f"To: {BOX}\r\nSubject: Re: your ticket\r\nIn-Reply-To: {went_out}\r\n"
                 f"References: {went_out}\r\n\r\nThanks!\r\n").encode()
        [inbound] = kernel.ingest(reply)
        assert inbound.parent_id == sent.id


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


@pytest.mark.parametrize(("status", "retry_after", "permanent"), [
    (408, None, False), (409, None, False), (429, 7, False), (400, None, True),
    (413, None, True),
])
def test_a_failed_upload_range_deletes_the_draft(
    graph: GraphFake, status: int, retry_after: int | None, permanent: bool
) -> None:
    import random

    graph.mailbox(BOX)
    graph.fail_next_upload(status, retry_after)
    with pytest.raises(SendError, match=f"answered {status}") as info:
        result_of(make_sender(graph).send(
            with_attachment(random.Random(5).randbytes(4 * 1024 * 1024)),
            envelope("ann@example.test"), "<big-1@contoso.test>"))
    assert info.value.permanent is permanent
    assert graph.counts["uploadFailed"] == 1 and graph.counts["delete"] == 1
    assert graph.messages_in(BOX, "drafts") == []
    assert graph.sent(BOX) == [] and graph.counts["sendDraft"] == 0


def test_a_draft_that_cannot_be_deleted_is_logged(
    graph: GraphFake, caplog: pytest.LogCaptureFixture
) -> None:
    import random

    graph.mailbox(BOX)
    graph.fail_next_upload(400)
    graph.refuse_next_delete()
    with caplog.at_level("WARNING"), pytest.raises(SendError, match="answered 400"):
        result_of(make_sender(graph).send(
            with_attachment(random.Random(5).randbytes(4 * 1024 * 1024)),
            envelope("ann@example.test"), "<big-1@contoso.test>"))
    assert "could not delete the draft of a failed send" in caplog.text
    assert "403" in caplog.text
    assert len(graph.messages_in(BOX, "drafts")) == 1


def test_a_throttled_upload_is_retried_by_the_outbox_with_a_new_draft(graph: GraphFake) -> None:
    import random

    from postroom.api import OutboundRequest
    from postroom.testing import TestKernel

    graph.mailbox(BOX)
    graph.fail_next_upload(429, retry_after=7)
    # an HTML part over 3 MB: the kernel's message takes the upload path
    html = "<p>" + random.Random(6).randbytes(2 * 1024 * 1024).hex() + "</p>"
    with TestKernel(sender=make_sender(graph)) as kernel:
        first = kernel.send(OutboundRequest(to=["ann@example.test"], from_addr=BOX,
                                            subject="logs", text="see below", html=html))
        assert first.status == "Queued", first.attached_data
        [entry] = kernel.outbox()
        assert entry.attempts == 1 and "answered 429" in (entry.last_error or "")
        assert graph.messages_in(BOX, "drafts") == []  # deleted, not left to pile up
        kernel.clock.advance(31)
        assert kernel.run_outbox() == 1
        again = kernel.interaction(first.id)
        assert again is not None and again.status == "Sent", again.attached_data
    assert graph.counts["createDraft"] == 2 and graph.counts["sendDraft"] == 1
    assert graph.messages_in(BOX, "drafts") == []
    [mime] = graph.sent(BOX)
    [part] = [p for p in message_from_bytes(mime).walk() if p.get_filename()]
    assert part.get_payload(decode=True).decode().strip() == html


def test_a_send_without_an_answer_leaves_the_draft_which_may_be_the_sent_copy(
    graph: GraphFake, caplog: pytest.LogCaptureFixture
) -> None:
    graph.mailbox(BOX)
    graph.drop_next_send()  # Exchange sent it, the answer was lost
    with caplog.at_level("WARNING"), pytest.raises(SendError) as info:
        result_of(make_sender(graph).send(outbound(), envelope("ann@example.test"),
                                          "<out-1@contoso.test>"))
    assert not info.value.permanent  # the outbox tries again (at least once)
    assert "may have gone out, so the draft is not deleted" in caplog.text
    assert graph.counts["delete"] == 0
    # the Sent Items copy has the draft's immutable id: it was not deleted
    [copy] = graph.messages_in(BOX, "sentitems")
    assert copy.internet_message_id == "<out-1@contoso.test>"
    assert len(graph.sent(BOX)) == 1


def test_a_refused_send_deletes_the_draft(graph: GraphFake) -> None:
    graph.mailbox(BOX)
    sender = make_sender(graph)
    # the draft is refused by message: send (another client deleted it first)
    original = sender.session.request

    async def request(method: str, path: str, **kwargs: Any) -> Any:
        if path.endswith("/send"):
            [draft] = graph.messages_in(BOX, "drafts")
            graph.remove(BOX, draft.id)
        return await original(method, path, **kwargs)

    sender.session.request = request  # type: ignore[method-assign]
    with pytest.raises(SendError, match="404 ErrorItemNotFound") as info:
        result_of(sender.send(outbound(), envelope("ann@example.test"), "<out-1@contoso.test>"))
    assert info.value.permanent
    assert graph.counts["delete"] == 1  # tried (404: gone already), logged
    assert graph.sent(BOX) == []

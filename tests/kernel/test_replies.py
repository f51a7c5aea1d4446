"""Replies done for the agent (issue 12, item 2): inbound interactions keep Reply-To,
References and Date, bounded; a send request naming only ``in_reply_to`` and a text
gets its To, Subject, In-Reply-To and full References from the parent."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest

from postroom.ingest import ingest_files
from postroom.kernel import Kernel
from postroom.model import (
    MAX_MESSAGE_ID_CHARS,
    MAX_REFERENCES,
    MAX_REPLY_TO,
    Interaction,
    InteractionType,
    OutboundRequest,
    bounded_references,
)
from postroom.replies import (
    QuoteStyle,
    quote_text,
    reply_recipients,
    reply_references,
    reply_subject,
)
from postroom.sendrequest import RequestError, request_from_json, validate_request
from postroom.services.gateway import Gateway
from postroom.views import interaction_json
from tests.conftest import run
from tests.kernel.test_gateway import make_kernel
from tests.kernel.test_send_request import outbox_files

#: a customer's mail as a webmail client writes it: a reply in a thread, with Reply-To
CUSTOMER = (
    b"Return-Path: <anna@customer.example>\r\n"
    b"From: Anna Kowalski <anna@customer.example>\r\n"
    b"Reply-To: Orders Desk <orders@customer.example>, anna.k@home.example\r\n"
    b"To: support@centre.example\r\n"
    b"Subject: RE: Re : order 4711 arrived damaged\r\n"
    b"Date: Fri, 13 Feb 2026 22:38:16 +0100 (CET)\r\n"
    b"Message-ID: <7da78721a8a2@customer.example>\r\n"
    b"In-Reply-To: <ack-1@centre.example>\r\n"
    b"References: <first-1@customer.example>\r\n"
    b"    <ack-1@centre.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"The parcel was crushed.\r\n"
)


def mail(headers: bytes, body: bytes = b"Hello.\r\n", subject: bytes = b"hello") -> bytes:
    return (
        b"From: customer@example.net\r\nTo: support@centre.example\r\nSubject: "
        + subject
        + b"\r\n"
        + headers
        + b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
        + body
    )


def ingest(kernel: Kernel, tmp_path: Path, raw: bytes, name: str = "in.eml") -> Interaction:
    path = tmp_path / name
    path.write_bytes(raw)

    async def go() -> list[Interaction]:
        async for _file, result in ingest_files(kernel, [path]):
            assert not isinstance(result, BaseException), result
            return result
        raise AssertionError("nothing ingested")

    [made] = run(go())
    stored = run(kernel.store.get_interaction(made.id))
    assert stored is not None
    return stored


def started(config: Path) -> Gateway:
    """A gateway on *config* (no mailboxes), its store open."""
    gateway = Gateway(make_kernel(config), mailboxes=False)
    gateway.startService()
    assert gateway.opened is not None
    run(gateway.opened)
    return gateway


@pytest.fixture
def gateway(quickstart: Path) -> Gateway:
    gateway = started(quickstart)
    yield gateway  # type: ignore[misc]
    run(gateway.stopService())


def sent(quickstart: Path, message_id: str) -> email.message.EmailMessage:
    """The message the file sender wrote with *message_id*."""
    for path in outbox_files(quickstart):
        if path.suffix == ".eml":
            found = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            if found["Message-ID"] == message_id:
                return found  # type: ignore[return-value]
    raise AssertionError(f"no message {message_id} was sent")


# ------------------------------------------------------------------- storing


def test_an_inbound_mail_keeps_reply_to_references_and_date(
    gateway: Gateway, tmp_path: Path
) -> None:
    got = ingest(gateway.kernel, tmp_path, CUSTOMER)
    assert got.reply_to == ["orders@customer.example", "anna.k@home.example"]
    assert got.references == ["<first-1@customer.example>", "<ack-1@centre.example>"]
    assert got.date == datetime(2026, 2, 13, 21, 38, 16, tzinfo=UTC)
    assert got.date is not None and got.date.utcoffset() == timedelta(hours=1)  # as sent
    shown = interaction_json(got)
    assert shown["reply_to"] == ["orders@customer.example", "anna.k@home.example"]
    assert shown["references"] == ["<first-1@customer.example>", "<ack-1@centre.example>"]
    assert shown["date"] == "2026-02-13T22:38:16+01:00"


def test_without_references_a_single_in_reply_to_starts_the_chain(
    gateway: Gateway, tmp_path: Path
) -> None:
    """RFC 5322, section 3.6.4: a reply to it refers to that id and to the mail's own."""
    got = ingest(gateway.kernel, tmp_path, mail(b"In-Reply-To: <only@x.example>\r\n"))
    assert got.references == ["<only@x.example>"]
    two = mail(b"In-Reply-To: <a@x.example> <b@x.example>\r\n")
    assert ingest(gateway.kernel, tmp_path, two, "two.eml").references == []


def test_absent_or_garbage_dates_are_none_never_a_failure(gateway: Gateway, tmp_path: Path) -> None:
    for n, date in enumerate(
        [b"", b"Date: yesterday-ish \x01\r\n", b"Date: 99 Foo 99999 99:99\r\n"]
    ):
        got = ingest(gateway.kernel, tmp_path, mail(date, f"{n}\r\n".encode()), f"{n}.eml")
        assert got.date is None
        assert interaction_json(got)["date"] is None


def test_hostile_reply_to_and_references_are_stored_bounded(
    gateway: Gateway, tmp_path: Path
) -> None:
    ids = b"".join(b" <ref-%d@x.example>\r\n" % n for n in range(10_000))
    long_id = b"<" + b"l" * 5000 + b"@x.example>"
    many = b", ".join(b"r%d@x.example" % n for n in range(5000))
    raw = mail(
        b"References: <root@x.example>\r\n" + ids + b" " + long_id + b"\r\n"
        b"Reply-To: " + many + b", " + b"h" * 100_000 + b"@x.example\r\n"
        b"Date: " + b"Fri, 13 Feb 2026 " * 2000 + b"\r\n"
    )
    got = ingest(gateway.kernel, tmp_path, raw)
    assert len(got.references) == MAX_REFERENCES
    # the first and the most recent ones, in order; the overlong id dropped
    assert got.references[0] == "<root@x.example>"
    assert got.references[1] == "<ref-9901@x.example>"
    assert got.references[-1] == "<ref-9999@x.example>"
    assert all(len(mid) <= MAX_MESSAGE_ID_CHARS for mid in got.references)
    assert 0 < len(got.reply_to) <= MAX_REPLY_TO and all(len(a) <= 320 for a in got.reply_to)
    assert got.reply_to[0] == "r0@x.example"
    assert got.date is None


def test_bounded_references_keeps_the_first_and_the_latest() -> None:
    chain = [f"<{n}@x>" for n in range(250)]
    kept = bounded_references(chain)
    assert kept == ["<0@x>", *chain[151:]] and len(kept) == MAX_REFERENCES
    assert bounded_references(chain[:100]) == chain[:100]
    assert bounded_references(["<a@x>", "<" + "b" * 600 + "@x>", "<c@x>"]) == ["<a@x>", "<c@x>"]


# ------------------------------------------------------------- reply fields


@pytest.mark.parametrize(
    ("subject", "prefix", "expected"),
    [
        ("order 4711", "Re:", "Re: order 4711"),
        ("Re: order 4711", "Re:", "Re: order 4711"),
        ("RE: Re: re:order", "Re:", "Re: order"),
        ("Re : order", "Re:", "Re: order"),
        ("Re[2]: order", "Re:", "Re: order"),
        ("AW: Re: order", "AW:", "AW: order"),
        ("aw : order", "AW:", "AW: order"),
        ("Regarding order", "Re:", "Re: Regarding order"),
        ("Reorder", "Re:", "Re: Reorder"),
        ("", "Re:", "Re:"),
        ("order", "", "order"),
        ("line\r\nbreak\x00and\u2028more", "Re:", "Re: line break and more"),
    ],
)
def test_the_reply_prefix_is_put_there_once(subject: str, prefix: str, expected: str) -> None:
    assert reply_subject(subject, prefix) == expected


def test_a_huge_subject_is_cut_to_what_a_request_may_hold() -> None:
    made = reply_subject("x" * 5000, "Re:")
    assert made.startswith("Re: xxx") and len(made) == 998
    validate_request(OutboundRequest(to=["a@x.example"], subject=made))


def test_recipients_are_reply_to_else_from_and_to_for_our_own_mail() -> None:
    both = Interaction(from_addr="a@x.example", reply_to=["r@x.example"], to=["us@c.example"])
    assert reply_recipients(both) == ["r@x.example"]
    assert reply_recipients(Interaction(from_addr="a@x.example")) == ["a@x.example"]
    assert reply_recipients(Interaction()) == []
    ours = Interaction(type=InteractionType.OUTBOUND.value, from_addr="us@c.example",
                       to=["a@x.example"], reply_to=[])  # fmt: skip
    assert reply_recipients(ours) == ["a@x.example"]


def test_references_are_the_parents_chain_and_its_id() -> None:
    parent = Interaction(message_id="<p@x>", references=["<a@x>", "<b@x>"])
    assert reply_references(parent) == ["<a@x>", "<b@x>", "<p@x>"]
    long = Interaction(message_id="<p@x>", references=[f"<{n}@x>" for n in range(150)])
    chain = reply_references(long)
    assert len(chain) == MAX_REFERENCES and chain[0] == "<0@x>" and chain[-1] == "<p@x>"
    assert chain[-2] == "<149@x>"


# --------------------------------------------------------------- validation


def test_to_is_required_unless_in_reply_to_is_given() -> None:
    with pytest.raises(RequestError, match="required unless in_reply_to") as refused:
        request_from_json({"text": "x"})
    assert refused.value.field == "to"
    with pytest.raises(RequestError) as refused:
        request_from_json({"text": "x", "in_reply_to": None})
    assert refused.value.field == "to"
    with pytest.raises(RequestError) as refused:
        validate_request(OutboundRequest(text="x"))
    assert refused.value.field == "to"
    with pytest.raises(RequestError) as refused:  # given, it must hold an address
        request_from_json({"to": [], "in_reply_to": "p-1"})
    assert refused.value.field == "to"
    request = request_from_json({"text": "x", "in_reply_to": "p-1"})
    assert request.to == [] and request.in_reply_to == "p-1"
    assert validate_request(OutboundRequest(text="x", in_reply_to="p-1")).to == []


# ----------------------------------------------------------------- replying


def test_a_reply_with_only_in_reply_to_and_text_is_filled_from_the_parent(
    gateway: Gateway, quickstart: Path, tmp_path: Path
) -> None:
    parent = ingest(gateway.kernel, tmp_path, CUSTOMER)
    reply = run(gateway.send(OutboundRequest(text="We are sorry.", in_reply_to=parent.id)))
    assert reply.parent_id == parent.id and reply.subtype == "OutboundReply"
    assert reply.to == ["orders@customer.example", "anna.k@home.example"]
    assert reply.subject == "Re: order 4711 arrived damaged"
    chain = ["<first-1@customer.example>", "<ack-1@centre.example>", parent.message_id]
    assert reply.references == chain
    stored = run(gateway.kernel.store.get_interaction(reply.id))
    assert stored.status == "Sent" and stored.references == chain
    message = sent(quickstart, reply.message_id)
    assert [a.addr_spec for a in message["To"].addresses] == reply.to
    assert message["Subject"] == "Re: order 4711 arrived damaged"
    assert message["In-Reply-To"] == "<7da78721a8a2@customer.example>"
    assert message["References"].split() == chain
    assert message.get_content().rstrip() == "We are sorry."


def test_what_the_request_gives_wins_over_the_parent(
    gateway: Gateway, quickstart: Path, tmp_path: Path
) -> None:
    parent = ingest(gateway.kernel, tmp_path, CUSTOMER)
    request = OutboundRequest(to=["boss@customer.example"], subject="Your claim", text="x",
                              in_reply_to=parent.id)  # fmt: skip
    reply = run(gateway.send(request))
    message = sent(quickstart, reply.message_id)
    assert message["To"] == "boss@customer.example" and message["Subject"] == "Your claim"
    assert message["In-Reply-To"] == parent.message_id


def test_a_parent_without_reply_to_is_answered_at_its_from(
    gateway: Gateway, quickstart: Path, tmp_path: Path
) -> None:
    parent = ingest(gateway.kernel, tmp_path, mail(b"Message-ID: <solo@example.net>\r\n"))
    reply = run(gateway.send(OutboundRequest(text="Hi", in_reply_to=parent.id)))
    message = sent(quickstart, reply.message_id)
    assert message["To"] == "customer@example.net" and message["Subject"] == "Re: hello"
    assert message["References"] == "<solo@example.net>"


def test_a_follow_up_to_our_own_mail_goes_to_its_recipients_and_continues_the_chain(
    gateway: Gateway, quickstart: Path
) -> None:
    first = run(gateway.send(OutboundRequest(to=["a@x.example"], subject="Order", text="1")))
    second = run(gateway.send(OutboundRequest(text="2", in_reply_to=first.id)))
    third = run(gateway.send(OutboundRequest(text="3", in_reply_to=second.id)))
    message = sent(quickstart, third.message_id)
    assert message["To"] == "a@x.example" and message["Subject"] == "Re: Order"
    assert message["In-Reply-To"] == second.message_id
    assert message["References"].split() == [first.message_id, second.message_id]


def test_the_site_reply_prefix_is_used(quickstart: Path, tmp_path: Path) -> None:
    text = quickstart.read_text(encoding="utf-8")
    assert "email-processing:\n" in text
    quickstart.write_text(
        text.replace("email-processing:\n", "email-processing:\n  subject-reply-prefix: 'AW:'\n"),
        encoding="utf-8",
    )
    gateway = Gateway(make_kernel(quickstart), mailboxes=False)
    gateway.startService()
    try:
        parent = ingest(gateway.kernel, tmp_path, mail(b"", subject=b"Re: AW: Frage"))
        reply = run(gateway.send(OutboundRequest(text="Antwort", in_reply_to=parent.id)))
        assert sent(quickstart, reply.message_id)["Subject"] == "AW: Frage"
    finally:
        run(gateway.stopService())


def test_a_parent_with_nobody_to_answer_is_refused_naming_to(
    gateway: Gateway, tmp_path: Path
) -> None:
    raw = b"Subject: no sender\r\nMessage-ID: <nofrom@x.example>\r\n\r\nx\r\n"
    parent = ingest(gateway.kernel, tmp_path, raw)
    assert parent.from_addr is None
    with pytest.raises(RequestError, match="no Reply-To or From") as refused:
        run(gateway.send(OutboundRequest(text="x", in_reply_to=parent.id)))
    assert refused.value.field == "to"
    assert sum(run(gateway.kernel.store.outbox_counts()).values()) == 0


def test_the_chain_is_bounded_when_the_parents_is_long(
    gateway: Gateway, quickstart: Path, tmp_path: Path
) -> None:
    ids = b"".join(b" <ref-%d@x.example>\r\n" % n for n in range(300))
    parent = ingest(gateway.kernel, tmp_path, mail(b"Message-ID: <p@x.example>\r\n"
                                                   b"References:" + ids))  # fmt: skip
    reply = run(gateway.send(OutboundRequest(text="x", in_reply_to=parent.id)))
    chain = sent(quickstart, reply.message_id)["References"].split()
    assert len(chain) == MAX_REFERENCES
    assert chain[0] == "<ref-0@x.example>" and chain[-1] == "<p@x.example>"
    assert chain[-2] == "<ref-299@x.example>"


# ------------------------------------------------------------------ quoting


def test_a_quoted_reply_carries_the_parent_below_its_text(
    gateway: Gateway, quickstart: Path, tmp_path: Path
) -> None:
    parent = ingest(gateway.kernel, tmp_path, CUSTOMER)
    request = OutboundRequest(text="We are sorry.", in_reply_to=parent.id, quote=True)
    reply = run(gateway.send(request))
    expected = (
        "We are sorry.\n"
        "\n"
        "-----Original Message-----\n"
        "From: anna@customer.example\n"
        "Sent: Fri, 13 Feb 2026 22:38:16 +0100\n"
        "To: support@centre.example\n"
        "Subject: RE: Re : order 4711 arrived damaged\n"
        "\n"
        "> The parcel was crushed.\n"
    )
    assert reply.text == expected
    message = sent(quickstart, reply.message_id)
    assert message.get_content().replace("\r\n", "\n") == expected


def test_html_quoting_escapes_every_value_from_the_parent(
    gateway: Gateway, quickstart: Path, tmp_path: Path
) -> None:
    raw = mail(
        b"Cc: <x@y.example>\r\n",
        body=b"<script>alert(1)</script> & <b>bold</b>\r\nline two\r\n",
        subject=b"<img src=x onerror=alert(2)>",
    )
    parent = ingest(gateway.kernel, tmp_path, raw)
    request = OutboundRequest(
        html="<html><body><p>Sorry</p></body></html>", in_reply_to=parent.id, quote=True
    )
    reply = run(gateway.send(request))
    message = sent(quickstart, reply.message_id)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert html.startswith("<html><body><p>Sorry</p>") and html.rstrip().endswith("</html>")
    assert '<blockquote type="cite">' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;<br>" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html and "<img" not in html
    assert "<script>" not in html and "<b>bold" not in html
    assert "<b>Cc:</b> x@y.example<br>" in html
    assert "<b>Subject:</b> Re:" not in html  # the quoted subject is the parent's own
    assert message.get_body(("plain",)) is None  # only what the request asked for


def test_the_quote_options_shape_the_quote() -> None:
    parent = Interaction(
        from_addr="a@x.example",
        to=["s@c.example"],
        subject="Frage",
        text="eins\r\nzwei",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    style = QuoteStyle(prefix="| ", separator="", from_label="Von:", sent_label="",
                       to_label="An:", subject_label="Betreff:")  # fmt: skip
    assert quote_text("Antwort", parent, style) == (
        "Antwort\n\nVon: a@x.example\nAn: s@c.example\nBetreff: Frage\n\n| eins\n| zwei\n"
    )
    # no Date header: the time it was stored; an HTML-only parent is quoted as text
    html_only = Interaction(from_addr="a@x.example", html="<p>Hi<br>there</p><style>x</style>",
                            created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))  # fmt: skip
    quoted = quote_text(None, html_only, QuoteStyle())
    assert "Sent: Fri, 02 Jan 2026 03:04:05 +0000\n" in quoted
    assert quoted.endswith("> Hi\n> there\n") and "> x" not in quoted


def test_quote_without_in_reply_to_is_refused_naming_quote() -> None:
    with pytest.raises(RequestError, match="needs in_reply_to") as refused:
        request_from_json({"to": "a@x.example", "text": "x", "quote": True})
    assert refused.value.field == "quote"
    with pytest.raises(RequestError) as refused:
        request_from_json({"text": "x", "in_reply_to": "p-1", "quote": "yes"})
    assert refused.value.field == "quote"


def test_what_the_kernel_filled_is_kept_with_the_queued_request() -> None:
    """A renderer runs at send time, maybe after a restart: ``filled`` must
    survive the outbox's JSON, or a template's subject would never apply."""
    from postroom.model import OutboundRequest
    from postroom.store.sql.values import request_from_json, request_to_json

    queued = OutboundRequest(to=["ann@example.com"], subject="Re: x", filled=["to", "subject"])
    assert request_from_json(request_to_json(queued)).filled == ["to", "subject"]

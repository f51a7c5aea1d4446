"""Strict send requests (issue 8): one validation, against the published schema,
for the HTTP API, the CLI and ``Gateway.send``; what passes is exactly what is written."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from twisted.internet import task

from postroom import hookimpl
from postroom.model import Interaction, OutboundRequest
from postroom.sendrequest import (
    MAX_DEPTH,
    RequestError,
    parse_json,
    request_from_json,
    schema_text,
    validate_request,
)
from postroom.services.gateway import Gateway
from tests.conftest import ROOT, run
from tests.kernel.test_gateway import make_kernel

OK = "customer@example.com"

#: every refused request of the issue: (request, the field named)
REFUSED: list[tuple[dict[str, Any], str]] = [
    # header names compared after normalisation; postroom's headers never settable
    ({"to": [OK], "headers": {"Bcc ": "evil@x.com"}}, "headers"),
    ({"to": [OK], "headers": {"Bcc\t": "evil@x.com"}}, "headers"),
    ({"to": [OK], "headers": {" bcc": "evil@x.com"}}, "headers"),
    ({"to": [OK], "headers": {"Message-ID ": "<second@x>"}}, "headers"),
    ({"to": [OK], "headers": {"Received ": "from evil"}}, "headers"),
    ({"to": [OK], "headers": {"From": "ceo@example.com"}}, "headers"),
    ({"to": [OK], "headers": {"To": "other@example.com"}}, "headers"),
    ({"to": [OK], "headers": {"Cc": "other@example.com"}}, "headers"),
    ({"to": [OK], "headers": {"SUBJECT": "x"}}, "headers"),
    ({"to": [OK], "headers": {"Date": "Mon, 1 Jan 2024 00:00:00 +0000"}}, "headers"),
    ({"to": [OK], "headers": {"MIME-Version": "1.0"}}, "headers"),
    ({"to": [OK], "headers": {"Content-Type": "text/html"}}, "headers"),
    ({"to": [OK], "headers": {"content-transfer-encoding": "8bit"}}, "headers"),
    ({"to": [OK], "headers": {"Content-Disposition": "attachment"}}, "headers"),
    ({"to": [OK], "headers": {"In-Reply-To": "<p@x>"}}, "headers"),
    ({"to": [OK], "headers": {"References": "<p@x>"}}, "headers"),
    ({"to": [OK], "headers": {"Auto-Submitted": "no"}}, "headers"),
    ({"to": [OK], "headers": {"Disposition-Notification-To": OK}}, "headers"),
    ({"to": [OK], "headers": {"X-Loop": OK}}, "headers"),
    ({"to": [OK], "headers": {"Resent-To": OK}}, "headers"),
    ({"to": [OK], "headers": {"Return-Path": "<x@y.example>"}}, "headers"),
    ({"to": [OK], "headers": {"X-Mozilla-Status": "1"}}, "headers"),
    # names with spaces, colons, control or non-ASCII characters
    ({"to": [OK], "headers": {"X A": "1"}}, "headers"),
    ({"to": [OK], "headers": {"X:A": "1"}}, "headers"),
    ({"to": [OK], "headers": {"X-A\x00": "1"}}, "headers"),
    ({"to": [OK], "headers": {"X-Ä": "1"}}, "headers"),
    ({"to": [OK], "headers": {"": "1"}}, "headers"),
    ({"to": [OK], "headers": {"X-A": "1", "x-a ": "2"}}, "headers"),
    # control characters in any header value, the subject, an address
    *[
        ({"to": [OK], "headers": {"X-A": f"a{c}b"}}, "headers")
        for c in ("\x00", "\r", "\n", "\r\n", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028")
    ],
    *[
        ({"to": [OK], "subject": f"a{c}Bcc: x"}, "subject")
        for c in ("\x00", "\r", "\n", "\x0b", "\x85", "\u2028", "\u2029")
    ],
    ({"to": [f"Anna\r\nBcc: evil@x.com <{OK}>"]}, "to"),
    ({"to": [OK], "cc": [f"a\u2028b <{OK}>"]}, "cc"),
    ({"to": [OK], "bcc": [f"x\x0b <{OK}>"]}, "bcc"),
    ({"to": [OK], "from": f"Support\x85 <{OK}>"}, "from"),
    # a CR/LF hidden in an RFC 2047 encoded word
    ({"to": [OK], "subject": "=?utf-8?q?Hi=0D=0ABcc:_evil@x.com?="}, "subject"),
    ({"to": [OK], "subject": "=?utf-8?b?SGkNCkJjYzogZXZpbEB4LmNvbQ==?="}, "subject"),
    ({"to": [OK], "headers": {"X-A": "=?utf-8?q?a=0Ab?="}}, "headers"),
    ({"to": [OK], "headers": {"X-A": "=?iso-8859-1?q?a=85b?="}}, "headers"),
    ({"to": [f"=?utf-8?q?Anna=0D=0A?= <{OK}>"]}, "to"),
    ({"to": [f'"=?utf-8?q?Anna=0A?=" <{OK}>']}, "to"),
    ({"to": [OK], "from": "=?utf-8?q?a=0D?=@example.com"}, "from"),
    # types, strictly
    ({"to": [OK], "text": 12345}, "text"),
    ({"to": [OK], "html": ["x"]}, "html"),
    ({"to": [OK], "from": 42}, "from"),
    ({"to": [OK], "automatic": "false"}, "automatic"),
    ({"to": [OK], "automatic": 0}, "automatic"),
    ({"to": [OK], "subject": None}, "subject"),
    ({"to": [OK], "subject": ["a"]}, "subject"),
    ({"to": [OK], "headers": {"X-A": 1}}, "headers"),
    ({"to": [OK], "headers": ["X-A: 1"]}, "headers"),
    ({"to": [OK], "in_reply_to": 7}, "in_reply_to"),
    ({"to": [OK], "attached_data": {"k": [1]}}, "attached_data"),
    ({"to": [OK], "attached_data": {"k": {"a": 1}}}, "attached_data"),
    ({"to": [OK], "options": []}, "options"),
    ({"to": [OK], "unknown": 1}, "unknown"),
    ({"to": 5}, "to"),
    ({"to": [5]}, "to"),
    # lengths
    ({"to": [OK], "subject": "x" * 999}, "subject"),
    ({"to": [OK], "headers": {"X-A": "x" * 999}}, "headers"),
    ({"to": [OK], "headers": {"X-" + "a" * 80: "1"}}, "headers"),
    ({"to": [OK], "headers": {f"X-{n}": "1" for n in range(51)}}, "headers"),
    ({"to": [OK] * 501}, "to"),
    ({"to": [", ".join([OK] * 20)] * 26}, "to"),
    ({"to": [OK], "in_reply_to": "x" * 129}, "in_reply_to"),
    ({"to": [OK], "attached_data": {"k": "v" * 65536}}, "attached_data"),
    # postroom's attached data
    ({"to": [OK], "attached_data": {"_Automatic": True}}, "attached_data"),
    ({"to": [OK], "attached_data": {"_SendError": "none"}}, "attached_data"),
    ({"to": [OK], "attached_data": {"a\nb": "1"}}, "attached_data"),
    # addresses: RFC 5322 address lists of valid addr-specs, nothing added
    ({"to": []}, "to"),
    ({"to": ""}, "to"),
    ({"to": [""]}, "to"),
    ({"to": ["  "]}, "to"),
    ({"to": ["not an address"]}, "to"),
    ({"to": ["not"]}, "to"),
    ({"to": [OK, "a@x.example,"]}, "to"),
    ({"to": ["undisclosed-recipients:;"]}, "to"),
    ({"to": ["a@[192.0.2.1]"]}, "to"),
    ({"to": [OK], "cc": ["nobody"]}, "cc"),
    ({"to": [OK], "bcc": ["a@-x.example"]}, "bcc"),
    ({"to": [OK], "from": "a@x.example, b@y.example"}, "from"),
    ({"to": [OK], "from": ""}, "from"),
    ({"to": [OK], "headers": {"Reply-To": "not an address"}}, "headers"),
    ({"to": [OK], "headers": {"Sender": "a@x.example, b@y.example"}}, "headers"),
    ({"to": [OK], "text": "a\x00b"}, "text"),
    ({"subject": "no recipient"}, "to"),
]


@pytest.mark.parametrize(("data", "field"), REFUSED)
def test_every_refused_request_names_its_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as refused:
        request_from_json(data)
    assert refused.value.field == field, refused.value
    assert str(refused.value).startswith(f"{field}: ")


def test_the_schema_is_published_and_valid() -> None:
    schema = json.loads(
        (ROOT / "kernel" / "postroom" / "schemas" / "send-request.json").read_text()
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    assert json.loads(schema_text()) == schema
    example = {
        "to": ["customer@example.com"],
        "subject": "Re: order 4711",
        "text": "Done.",
        "headers": {"X-Ticket": "4711"},
        "automatic": False,
    }
    jsonschema.validate(example, schema)
    assert request_from_json(example).headers == {"X-Ticket": "4711"}


def test_requests_are_normalised() -> None:
    request = request_from_json(
        {
            "to": "a@x.example, Anna <b@bücher.example>",
            "cc": ["c@y.example", "D. Dee <d@y.example>"],
            "from": "Support <support@centre.example>",
            "subject": "Grüße\tund mehr",
            "headers": {" X-Ticket\t": "4711", "Reply-To": "Team <team@centre.example>"},
            "attached_data": {"Ticket": 4711, "Urgent": True, "Note": "x"},
            "in_reply_to": "6d1f3c9e-0000-4000-8000-000000000000",
            "automatic": True,
            "options": {"dsn": {"notify": ["FAILURE"]}},
        }
    )
    assert request.to == ["a@x.example", "Anna <b@xn--bcher-kva.example>"]
    assert request.cc == ["c@y.example", '"D. Dee" <d@y.example>']
    assert request.from_addr == "Support <support@centre.example>"
    assert request.headers == {"X-Ticket": "4711", "Reply-To": "Team <team@centre.example>"}
    assert request.automatic is True and request.options == {"dsn": {"notify": ["FAILURE"]}}
    assert validate_request(request) == request  # normalising twice changes nothing


def test_json_is_bounded_before_it_can_hurt() -> None:
    for raw, why in (
        (b"[" * 10_000_000, "nested more than"),  # 10 MB of brackets: refused at once
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested more than"),
        (b'{"to": "a@x.example", "to": "b@y.example"}', "appears twice"),
        (b'{"to": "a@x.example", "attached_data": {"n": NaN}}', "NaN"),
        (b'{"to": "a@x.example", "attached_data": {"n": Infinity}}', "Infinity"),
        (b'{"to": "\\ud800@x.example"}', "lone surrogate"),
        (b"\xff\xfe{", "not valid JSON"),
        (b"", "not valid JSON"),
    ):
        with pytest.raises(RequestError, match=why):
            request_from_json(parse_json(raw))
    nested: Any = "x"
    for _ in range(MAX_DEPTH - 2):  # options -> ... within the bound
        nested = [nested]
    assert request_from_json({"to": OK, "options": {"deep": nested}}).options["deep"] == nested
    with pytest.raises(RequestError, match="nested more than"):
        request_from_json({"to": OK, "options": {"deep": [nested]}})
    with pytest.raises(RequestError, match="not a JSON value"):
        validate_request(OutboundRequest(to=[OK], options={"when": object()}))


# ------------------------------------------------------- through the gateway


def outbox_files(config: Path) -> list[Path]:
    folder = config.parent / "outbox"
    return sorted(folder.iterdir()) if folder.exists() else []


def sent_message(config: Path) -> tuple[email.message.EmailMessage, dict[str, Any]]:
    [eml] = [p for p in outbox_files(config) if p.suffix == ".eml"]
    [envelope] = [p for p in outbox_files(config) if p.name.endswith(".envelope.json")]
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    return message, json.loads(envelope.read_text())  # type: ignore[return-value]


def test_a_refused_request_queues_suppresses_and_writes_nothing(quickstart: Path) -> None:
    kernel = make_kernel(quickstart)
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    tried = 0
    for data, field in REFUSED:
        if "to" in data and "unknown" not in data:  # what OutboundRequest can express
            with pytest.raises(RequestError) as refused:
                run(gateway.send(OutboundRequest(**_typed(data))))
            assert refused.value.field == field
            tried += 1
    assert tried == len(REFUSED) - 2
    assert sum(run(kernel.store.outbox_counts()).values()) == 0
    assert run(kernel.store.list_interactions(100)) == []
    assert run(kernel.store.list_suppressions()) == []
    assert outbox_files(quickstart) == []
    run(gateway.stopService())


def _typed(data: dict[str, Any]) -> dict[str, Any]:
    """A JSON request as OutboundRequest keywords (what an embedding application passes)."""
    names = {"from": "from_addr"}
    return {names.get(k, k): v for k, v in data.items()}


def test_in_reply_to_must_name_a_stored_interaction(quickstart: Path) -> None:
    kernel = make_kernel(quickstart)
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    with pytest.raises(RequestError, match="no interaction 'nope' is stored") as refused:
        run(gateway.send(OutboundRequest(to=[OK], text="x", in_reply_to="nope")))
    assert refused.value.field == "in_reply_to"
    assert sum(run(kernel.store.outbox_counts()).values()) == 0
    first = run(gateway.send(OutboundRequest(to=[OK], text="x")))
    reply = run(gateway.send(OutboundRequest(to=[OK], text="y", in_reply_to=first.id)))
    assert reply.parent_id == first.id and reply.subtype == "OutboundReply"
    run(gateway.stopService())


def test_an_address_list_is_several_recipients_in_header_and_envelope(quickstart: Path) -> None:
    kernel = make_kernel(quickstart)
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    interaction = run(
        gateway.send(
            OutboundRequest(
                to=["a@x.example, Anna <b@y.example>"],
                cc=["Jürgen <j@bücher.example>"],
                bcc=["hidden@z.example"],
                from_addr="Support Team <support@centre.example>",
                subject="Grüße",
                text="Hallo",
                headers={"Reply-To": "Team <team@centre.example>", "X-Ticket ": "4711"},
            )
        )
    )
    message, envelope = sent_message(quickstart)
    assert envelope["rcpt_to"] == [
        "a@x.example",
        "b@y.example",
        "j@xn--bcher-kva.example",
        "hidden@z.example",
    ]
    assert envelope["mail_from"] == "support@centre.example"
    assert [a.addr_spec for a in message["To"].addresses] == ["a@x.example", "b@y.example"]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["j@xn--bcher-kva.example"]
    assert message["Cc"].addresses[0].display_name == "Jürgen"
    assert message["Reply-To"] == "Team <team@centre.example>" and message["X-Ticket"] == "4711"
    assert message["Bcc"] is None and message["Subject"] == "Grüße"
    stored = run(kernel.store.get_interaction(interaction.id))
    assert stored.to == ["a@x.example", "b@y.example"] and stored.cc == ["j@xn--bcher-kva.example"]
    assert stored.from_addr == "support@centre.example" and stored.status == "Sent"
    run(gateway.stopService())


def test_a_utf8_local_part_is_written_with_utf8_headers(quickstart: Path) -> None:
    """SMTPUTF8 (RFC 6531/6532): the local part stays UTF-8 in the header and the
    envelope, never an encoded word; the smtp sender needs the server's SMTPUTF8."""
    kernel = make_kernel(quickstart)
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    run(gateway.send(OutboundRequest(to=["Jürgen <jürgen@example.de>"], text="x")))
    [eml] = [p for p in outbox_files(quickstart) if p.suffix == ".eml"]
    raw = eml.read_bytes()
    assert "To: Jürgen <jürgen@example.de>".encode() in raw and b"=?utf-8?" not in raw
    assert sent_message(quickstart)[1]["rcpt_to"] == ["jürgen@example.de"]
    run(gateway.stopService())


def test_no_domain_is_ever_added_to_a_recipient(quickstart: Path) -> None:
    """The issue: "not an address" was sent as RCPT TO:<not> and the server made it
    not@<its domain>, which then bounced into the suppression list."""
    kernel = make_kernel(quickstart)
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    for to in ("not an address", "not", "not@"):
        with pytest.raises(RequestError, match="to: "):
            run(gateway.send(OutboundRequest(to=[to], text="x")))
    assert outbox_files(quickstart) == [] and run(kernel.store.list_suppressions()) == []
    run(gateway.stopService())


def test_the_default_from_is_checked_too(quickstart: Path) -> None:
    quickstart.write_text(
        quickstart.read_text().replace(
            "  default-domain: example.com", "  default-domain: example.com\n"
            "  default-from-address: Support <support@centre.example>",
        )
    )  # fmt: skip
    kernel = make_kernel(quickstart)
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    interaction = run(gateway.send(OutboundRequest(to=[OK], text="x")))
    assert interaction.from_addr == "support@centre.example"
    assert str(sent_message(quickstart)[0]["From"]) == "Support <support@centre.example>"
    run(gateway.stopService())
    quickstart.write_text(
        quickstart.read_text().replace("support@centre.example", "support at centre")
    )
    kernel = make_kernel(quickstart)
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    with pytest.raises(RequestError, match="default-from-address") as refused:
        run(gateway.send(OutboundRequest(to=[OK], text="x")))
    assert refused.value.field == "from"
    run(gateway.stopService())


# ------------------------------------------- what can never succeed fails at once


def failed_after(quickstart: Path, plugin: object, request: OutboundRequest) -> Interaction:
    """Queue *request* with *plugin* enabled; the interaction after two hours of retries."""
    clock = task.Clock()
    kernel = make_kernel(quickstart, plugins=[("plugin", plugin)], clock=clock)
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    interaction = run(gateway.send(request))
    clock.advance(7200)
    stored: Interaction = run(kernel.store.get_interaction(interaction.id))
    entry = run(kernel.store.get_outbox(interaction.id))
    run(gateway.stopService())
    assert entry.attempts == 1, "retried: it can never succeed"
    return stored


def test_a_render_plugin_that_makes_a_request_invalid_fails_it_for_good(
    quickstart: Path,
) -> None:
    class BadTemplate:
        @hookimpl
        def postroom_render(self, request: OutboundRequest) -> None:
            request.subject = "Hi\r\nBcc: evil@x.com"
            request.headers["Bcc "] = "evil@x.com"

    stored = failed_after(quickstart, BadTemplate(), OutboundRequest(to=[OK], text="x"))
    assert stored.status == "Failed" and "RequestError" in stored.attached_data["_SendError"]
    assert outbox_files(quickstart) == []


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("X-Campaign", "a\r\nBcc: evil@x.com", "control character"),
        ("X-Campaign", "=?utf-8?q?a=0D=0Ab?=", "encoded word"),
        ("X Campaign", "1", "not a header name"),
        ("X-Campaign ", "1", "blanks around it"),
        ("From", "ceo@example.com", "set by postroom"),
        ("Content-Type", "text/html", "set by postroom"),
    ],
)
def test_a_plugin_header_that_cannot_be_written_fails_for_good(
    quickstart: Path, name: str, value: str, why: str
) -> None:
    class AddsHeader:
        @hookimpl
        def postroom_envelope(self, envelope: Any) -> None:
            envelope.extra_headers[name] = value

    stored = failed_after(quickstart, AddsHeader(), OutboundRequest(to=[OK], text="x"))
    assert stored.status == "Failed" and why in stored.attached_data["_SendError"]
    assert outbox_files(quickstart) == []


@pytest.mark.parametrize("rcpt", ["not an address", "Anna <a@x.example>", "", "a@x.example\r\n"])
def test_an_envelope_plugin_cannot_add_a_recipient_that_is_no_address(
    quickstart: Path, rcpt: str
) -> None:
    class AddsRecipient:
        @hookimpl
        def postroom_envelope(self, envelope: Any) -> None:
            envelope.rcpt_to.append(rcpt)

    stored = failed_after(quickstart, AddsRecipient(), OutboundRequest(to=[OK], text="x"))
    assert stored.status == "Failed" and "envelope address" in stored.attached_data["_SendError"]


def test_a_request_queued_before_the_rules_fails_for_good_when_sent(quickstart: Path) -> None:
    """An entry a lax older version queued is checked when it is sent."""
    clock = task.Clock()
    kernel = make_kernel(quickstart, clock=clock)
    run(kernel.open())
    lax = OutboundRequest(to=["not an address"], headers={"Bcc ": "evil@x.com"}, text="x")
    queued = run(
        kernel.store.queue_outbound(
            Interaction(message_id="<old@example.com>", type="Outbound", to=["not"]), lax
        )
    )
    run(kernel.close())
    kernel = make_kernel(quickstart, clock=clock)
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    clock.advance(7200)
    entry = run(kernel.store.get_outbox(queued.id))
    assert entry.state == "failed" and entry.attempts == 1 and "RequestError" in entry.last_error
    run(gateway.stopService())
    assert outbox_files(quickstart) == []


def test_a_message_that_cannot_be_built_fails_for_good(
    quickstart: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postroom.pipeline import outbound

    def broken(*args: Any) -> bytes:
        raise ValueError("the email package refused a header")

    monkeypatch.setattr(outbound, "build_message", broken)
    stored = failed_after(quickstart, object(), OutboundRequest(to=[OK], text="x"))
    assert "the message cannot be built" in stored.attached_data["_SendError"]


def test_a_forbidden_header_from_a_plugin_is_dropped_not_failed(quickstart: Path) -> None:
    class AddsBcc:
        @hookimpl
        def postroom_envelope(self, envelope: Any) -> None:
            envelope.extra_headers["Bcc"] = "boss@example.com"
            envelope.extra_headers["Received"] = "from a\r\nBcc: x"

    kernel = make_kernel(quickstart, plugins=[("adds", AddsBcc())])
    gateway = Gateway(kernel, mailboxes=False)
    gateway.startService()
    interaction = run(gateway.send(OutboundRequest(to=[OK], text="x")))
    assert run(kernel.store.get_interaction(interaction.id)).status == "Sent"
    message, _ = sent_message(quickstart)
    assert message["Bcc"] is None and message["Received"] is None
    run(gateway.stopService())


def test_build_message_refuses_a_request_header_postroom_owns() -> None:
    from datetime import UTC, datetime

    from postroom.pipeline.outbound import HeaderInjection, build_message

    request = OutboundRequest(to=[OK], text="x", headers={"Bcc": "evil@x.com"})
    with pytest.raises(HeaderInjection, match="use the bcc field") as refused:
        build_message(request, "<m@x>", None, {}, datetime.now(UTC))
    assert refused.value.permanent

"""The ``mdn`` plugin: classify, thread and request read receipts.

Through ``postroom.testing``: a kernel with the installed plugin enabled by
name (the built-in plugins in front), the real parser, a memory store; receipts
of messages the kernel sent itself (through its fake sender) thread to them.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from postroom.api import Interaction, OutboundRequest, ParsedMessage, SendError, Verdict, hookimpl
from postroom.testing import TestKernel, result_of
from postroom_mdn import plugin
from postroom_mdn.analysis import Receipt
from postroom_mdn.fields import parse_fields
from postroom_mdn.report import parse_disposition, read_mdn, recipient_address
from tests.plugins.mdn import fixtures

MDN_EP = EntryPoint(name="mdn", value="postroom_mdn.plugin", group="postroom.plugins")


@pytest.fixture(scope="module")
def kernel() -> Iterator[TestKernel]:
    """One kernel for the tests that store nothing: parse, analyze, classify."""
    with TestKernel(["mdn"]) as made:
        yield made


def classify(kernel: TestKernel, data: bytes) -> Interaction:
    """analyze then classify as the pipeline does: subtype and the winner's attached data."""
    interaction = Interaction()
    verdict = kernel.classify(data, interaction)
    interaction.subtype = verdict.subtype
    interaction.attached_data.update(verdict.attached_data)
    return interaction


def raw_info(interaction: Interaction) -> dict[str, Any]:
    prefix = "_MDNRawInfo."
    return {
        k[len(prefix) :]: v for k, v in interaction.attached_data.items() if k.startswith(prefix)
    }


# ------------------------------------------------------------------ packaging


def test_the_entry_point_is_the_plugin_with_its_hooks() -> None:
    assert MDN_EP.load() is plugin
    with TestKernel([MDN_EP]) as kernel:
        assert kernel.plugins[-1] == "mdn"
        assert kernel.hooks_of("mdn") == [
            "postroom_analyze", "postroom_classify", "postroom_committed", "postroom_enrich",
            "postroom_envelope"]


# --------------------------------------------------------------------- corpus


def test_the_corpus_mdn_gives_the_specified_keys(kernel: TestKernel, corpus: Path) -> None:
    entries = json.loads((corpus / "mimekit.json").read_text(encoding="utf-8"))
    [entry] = [e for e in entries if e["kind"] == "mdn"]
    interaction = classify(kernel, (corpus / entry["file"]).read_bytes())
    assert interaction.subtype == "InboundDisposition"
    expected = entry["expected"]["mdn_fields"]
    raw = raw_info(interaction)
    assert len(raw) == entry["expected"]["mdn_field_count"] == len(expected)
    # names: the RFC's spelling (MimeKit writes "Original-Message-Id"); values verbatim
    by_lower = {name.lower(): value for name, value in raw.items()}
    assert by_lower == {name.lower(): value for name, value in expected.items()}
    assert raw["Original-Message-ID"] == expected["Original-Message-Id"]
    data = interaction.attached_data
    assert data["_MDNInfo.ActionMode"] == "manual-action"
    assert data["_MDNInfo.SendingMode"] == "MDN-sent-manually"
    assert data["_MDNInfo.DispositionType"] == "displayed"
    assert data["_MDNInfo.Recipient"] == "Joe_Recipient@example.com"


def test_nothing_else_in_the_corpus_is_taken_for_an_mdn(kernel: TestKernel, corpus: Path) -> None:
    wrong, seen = [], 0
    for manifest in ("sisimai.json", "stalwart.json", "mimekit.json"):
        for entry in json.loads((corpus / manifest).read_text(encoding="utf-8")):
            found = read_mdn(kernel.parse((corpus / entry["file"]).read_bytes())) is not None
            seen += 1
            if found != (entry["kind"] == "mdn"):
                wrong.append(entry["file"])
    assert seen > 600 and wrong == []


# ------------------------------------------------------------ real clients


def test_thunderbird(kernel: TestKernel) -> None:
    interaction = classify(kernel, fixtures.THUNDERBIRD)
    assert interaction.subtype == "InboundDisposition"
    assert interaction.attached_data == {
        "_MDNInfo.ActionMode": "manual-action",
        "_MDNInfo.SendingMode": "MDN-sent-manually",
        "_MDNInfo.DispositionType": "displayed",
        "_MDNInfo.Recipient": "bob@customer.example",
        "_MDNRawInfo.Reporting-UA": "laptop.customer.example; Mozilla Thunderbird",
        "_MDNRawInfo.Final-Recipient": "rfc822;bob@customer.example",
        "_MDNRawInfo.Original-Message-ID": "<out-4711@centre.example>",
        "_MDNRawInfo.Disposition": "manual-action/MDN-sent-manually; displayed",
    }


def test_outlook_exchange_read_and_not_read(kernel: TestKernel) -> None:
    read = classify(kernel, fixtures.OUTLOOK)
    assert read.subtype == "InboundDisposition"
    assert read.attached_data["_MDNInfo.ActionMode"] == "automatic-action"
    assert read.attached_data["_MDNInfo.SendingMode"] == "MDN-sent-automatically"
    assert read.attached_data["_MDNInfo.DispositionType"] == "displayed"
    assert read.attached_data["_MDNInfo.Recipient"] == "carol@client.example"
    # vendor fields are kept like the others, under their own names
    assert read.attached_data["_MDNRawInfo.X-MSExch-Correlation-Key"] == (
        "3iU7Q1bSxkGZ8Z6L5J0P6w=="
    )
    assert read.attached_data["_MDNRawInfo.X-Display-Name"] == "Carol Client"
    assert len(raw_info(read)) == 6
    not_read = classify(kernel, fixtures.OUTLOOK_NOT_READ)
    assert not_read.attached_data["_MDNInfo.DispositionType"] == "deleted"


def test_a_quirky_client_text_plain_part_in_the_wrong_place(kernel: TestKernel) -> None:
    interaction = classify(kernel, fixtures.QUIRKY)
    data = interaction.attached_data
    assert interaction.subtype == "InboundDisposition"
    assert data["_MDNInfo.ActionMode"] == "manual-action"
    assert data["_MDNInfo.SendingMode"] == "MDN-sent-manually"
    assert data["_MDNInfo.DispositionType"] == "displayed"
    assert data["_MDNInfo.Recipient"] == "Dan@Mobile.example"
    raw = raw_info(interaction)
    # RFC spellings for the keys, values as written but unfolded
    assert raw["Reporting-UA"] == "phone.mobile.example;   MobileMail 2.1 (iOS)"
    assert raw["Final-Recipient"] == "RFC822; <Dan@Mobile.example> (Dan on the phone)"
    assert raw["Original-Message-ID"] == "<out-99@centre.example>"
    assert raw["Disposition"] == (
        "Manual-Action / MDN-Sent-Manually (user clicked) ;Displayed/Error"
    )
    assert raw["Error"] == "could not render\nsecond problem"
    assert read_mdn(kernel.parse(fixtures.QUIRKY)).disposition.modifiers == ("error",)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data",
    [fixtures.DSN, fixtures.ARF, fixtures.FORWARDED, fixtures.PLAIN],
    ids=["dsn", "arf", "forwarded-receipt", "plain"],
)
def test_other_mail_is_not_an_mdn(kernel: TestKernel, data: bytes) -> None:
    assert read_mdn(kernel.parse(data)) is None
    interaction = classify(kernel, data)
    assert interaction.subtype == "InboundNew"
    assert not any(k.startswith("_MDN") for k in interaction.attached_data)


@pytest.mark.parametrize(
    "data", [fixtures.NO_REPORT_TYPE, fixtures.MIXED], ids=["no-report-type", "multipart-mixed"]
)
def test_a_disposition_part_in_a_mislabelled_container_is_an_mdn(
    kernel: TestKernel, data: bytes
) -> None:
    interaction = classify(kernel, data)
    assert interaction.subtype == "InboundDisposition"
    assert interaction.attached_data["_MDNInfo.DispositionType"] == "displayed"


def test_an_mdn_report_without_a_readable_disposition_is_still_one(kernel: TestKernel) -> None:
    interaction = classify(kernel, fixtures.EMPTY_MDN)
    assert interaction.subtype == "InboundDisposition"
    # nothing to read but who sent it
    assert interaction.attached_data == {"_MDNInfo.Recipient": "frank@customer.example"}


def test_a_wrapping_message_is_never_an_mdn() -> None:
    wrapped = ParsedMessage(wrapping_reason="NUL bytes in the header block")
    assert read_mdn(wrapped) is None


def test_the_mdn_verdict_beats_an_ordinary_classifier() -> None:
    class Urgent:
        @hookimpl
        def postroom_classify(self) -> Verdict:
            return Verdict("InboundUrgent", priority=50)

    with TestKernel([("aaa", Urgent()), "mdn"]) as kernel:
        verdict = kernel.classify(fixtures.OUTLOOK)
    assert verdict.subtype == "InboundDisposition" and verdict.plugin == "mdn"


# ------------------------------------------------------------ field reading


MAN, AUTO = "manual-action", "automatic-action"
SENT_MAN, SENT_AUTO = "MDN-sent-manually", "MDN-sent-automatically"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("manual-action/MDN-sent-manually; displayed", (MAN, SENT_MAN, "displayed", ())),
        ("automatic-action/MDN-sent-automatically; deleted", (AUTO, SENT_AUTO, "deleted", ())),
        ("AUTOMATIC-ACTION/mdn-sent-automatically;Processed", (AUTO, SENT_AUTO, "processed", ())),
        (
            "manual-action/MDN-sent-manually; displayed/error",
            (MAN, SENT_MAN, "displayed", ("error",)),
        ),
        (
            "automatic-action/MDN-sent-automatically; deleted/expired, mailbox-terminated",
            (AUTO, SENT_AUTO, "deleted", ("expired", "mailbox-terminated")),
        ),
        (
            "manual-action (by user) / MDN-sent-manually (ok); (note) displayed",
            (MAN, SENT_MAN, "displayed", ()),
        ),
        ("manual-action/MDN-sent-manually displayed", (MAN, SENT_MAN, "displayed", ())),
        ("automatic-action/MDN-sent-automatically; denied", (AUTO, SENT_AUTO, "denied", ())),
        ("user-action/MDN-sent-by-robot; read", ("user-action", "MDN-sent-by-robot", "read", ())),
        ("displayed", (None, None, "displayed", ())),
        ("", (None, None, None, ())),
    ],
)
def test_disposition_field_is_read_tolerantly(value: str, expected: tuple[Any, ...]) -> None:
    d = parse_disposition(value)
    assert (d.action_mode, d.sending_mode, d.type, d.modifiers) == expected


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("rfc822;joe@example.com", "joe@example.com"),
        ("RFC822; <Joe@Example.com>", "Joe@Example.com"),
        ("rfc822; joe@example.com (Joe)", "joe@example.com"),
        ("joe@example.com", "joe@example.com"),
        ('rfc822; "Joe Bloggs" <joe@example.com>', "joe@example.com"),
        ("utf-8; jöe@bücher.example", "jöe@bücher.example"),
    ],
)
def test_recipient_address_drops_the_address_type(value: str, address: str) -> None:
    assert recipient_address(value) == address


def test_field_blocks_unfold_and_skip_junk() -> None:
    text = (
        "\n  Reporting-UA: a;\n\tb\n"
        "this line is junk\n"
        "   continuation after junk is not glued\n"
        "\n"
        "Final-Recipient : rfc822; x@y\r\n"
        "Disposition: manual-action/MDN-sent-manually;\r\n displayed  \n"
    )
    assert parse_fields(text) == [
        ("Reporting-UA", "a;\tb"),
        ("Final-Recipient", "rfc822; x@y"),
        ("Disposition", "manual-action/MDN-sent-manually; displayed"),
    ]


# ---------------------------------------------- where the work runs: analysis


def test_the_analysis_is_the_receipt_with_its_verdict_and_it_pickles(kernel: TestKernel) -> None:
    message = kernel.analyze(fixtures.OUTLOOK)  # checks it survives pickling, too
    receipt = message.analysis["mdn.receipt"]
    assert isinstance(receipt, Receipt)
    assert receipt.verdict.subtype == "InboundDisposition" and receipt.verdict.priority == 100
    assert receipt.original_message_id == "<out-815@centre.example>"
    assert pickle.loads(pickle.dumps(receipt)) == receipt
    assert kernel.analyze(fixtures.PLAIN).analysis["mdn.receipt"] is None


# ------------------------------------------------------------------ threading


def send(kernel: TestKernel) -> Interaction:
    """A message the centre sent (through the kernel's fake sender)."""
    sent = kernel.send(OutboundRequest(
        to=["bob@customer.example"], from_addr="support@centre.example",
        subject="Your ticket 4711", text="Fixed."))  # fmt: skip
    assert sent.status == "Sent" and sent.message_id is not None
    return sent


def answering(data: bytes, original: str, message_id: str | None) -> bytes:
    """*data*, a receipt for *original*, made a receipt for *message_id*."""
    assert message_id is not None and original.encode() in data
    return data.replace(original.encode(), message_id.encode())


def looked_up(kernel: TestKernel, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Message-IDs the plugins will look up in the store from now on."""
    seen: list[str] = []
    find = kernel.store.find_by_message_id

    def recording(message_id: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(message_id)
        return find(message_id, *args, **kwargs)

    monkeypatch.setattr(kernel.store, "find_by_message_id", recording, raising=False)
    return seen


def test_an_mdn_is_a_child_of_the_outbound_it_acknowledges() -> None:
    with TestKernel(["mdn"]) as kernel:
        outbound = send(kernel)
        [mdn] = kernel.ingest(
            answering(fixtures.OUTLOOK, "<out-815@centre.example>", outbound.message_id))
        assert mdn.subtype == "InboundDisposition" and mdn.parent_id == outbound.id


def test_the_gateway_hooks_read_the_analysis_not_the_message() -> None:
    with TestKernel(["mdn"]) as kernel:
        outbound = send(kernel)
        data = answering(fixtures.OUTLOOK, "<out-815@centre.example>", outbound.message_id)
        message = kernel.analyze(data)
        message.parts, message.headers = [], []  # nothing left to read
        interaction = kernel.enrich(message)
    assert interaction.subtype == "InboundDisposition" and interaction.parent_id == outbound.id
    assert "_PluginErrors" not in interaction.attached_data


def test_a_message_that_was_not_analysed_is_an_error_not_a_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with TestKernel(["mdn"]) as kernel:
        seen = looked_up(kernel, monkeypatch)
        interaction = kernel.enrich(kernel.parse(fixtures.OUTLOOK))
    assert interaction.subtype == "InboundNew"
    errors = interaction.attached_data["_PluginErrors"].splitlines()
    assert [e.split(":")[1].strip() for e in errors] == ["postroom_classify", "postroom_enrich"]
    assert all("no analysis under 'mdn.receipt'" in e for e in errors)
    assert seen == []


def forwarded_back(message_id: str) -> bytes:
    """A customer forwarding the centre's message back: an inbound copy of its id."""
    return (
        "From: bob@customer.example\r\nTo: support@centre.example\r\n"
        f"Subject: Fwd: Your ticket 4711\r\nMessage-ID: {message_id}\r\n\r\nSee below.\r\n"
    ).encode()


def test_the_outbound_parent_overrides_what_threading_found() -> None:
    # Thunderbird's References names the original: threading finds an *inbound*
    # copy of it (a customer had forwarded it back), the MDN knows better
    with TestKernel(["mdn"]) as kernel:
        [inbound] = kernel.ingest(forwarded_back("<out-4711@centre.example>"))
        [mdn] = kernel.ingest(fixtures.THUNDERBIRD)
        assert mdn.parent_id == inbound.id  # threading's choice: no outbound has the id
    with TestKernel(["mdn"]) as kernel:
        outbound = send(kernel)
        [inbound] = kernel.ingest(forwarded_back(outbound.message_id or ""))
        [mdn] = kernel.ingest(
            answering(fixtures.THUNDERBIRD, "<out-4711@centre.example>", outbound.message_id))
        assert mdn.parent_id == outbound.id != inbound.id


def test_without_an_outbound_parent_threading_is_kept() -> None:
    with TestKernel(["mdn"]) as kernel:
        [inbound] = kernel.ingest(forwarded_back("<out-4711@centre.example>"))
        assert kernel.enrich(fixtures.THUNDERBIRD).parent_id == inbound.id
        earlier = Interaction(parent_id="earlier")
        assert kernel.enrich(fixtures.OUTLOOK, earlier).parent_id == "earlier"


def test_the_returned_headers_give_the_id_when_the_field_is_missing(kernel: TestKernel) -> None:
    data = fixtures.THUNDERBIRD.replace(b"Original-Message-ID: <out-4711@centre.example>\n", b"")
    data = data.replace(b"References: <out-4711@centre.example>\n", b"")
    mdn = read_mdn(kernel.parse(data))
    assert mdn is not None and mdn.original_message_id == "<out-4711@centre.example>"
    with TestKernel(["mdn"]) as fresh:
        outbound = send(fresh)
        [stored] = fresh.ingest(answering(data, "<out-4711@centre.example>", outbound.message_id))
        assert stored.parent_id == outbound.id
    # and from a returned message/rfc822
    quirky = read_mdn(kernel.parse(
        fixtures.QUIRKY.replace(b"original-message-id:\n <out-99@centre.example>\n", b"")))
    assert quirky is not None and quirky.original_message_id == "<out-99@centre.example>"


def test_ordinary_mail_is_not_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    with TestKernel(["mdn"]) as kernel:
        seen = looked_up(kernel, monkeypatch)
        kernel.ingest(fixtures.PLAIN)
        assert seen == []
        kernel.ingest(fixtures.OUTLOOK)  # a receipt is looked up
    assert seen == ["<out-815@centre.example>"]


# ------------------------------------------------------------------- outbound


def request(options: dict[str, Any], from_addr: str | None = "support@centre.example"
            ) -> OutboundRequest:  # fmt: skip
    return OutboundRequest(to=["bob@customer.example"], from_addr=from_addr, subject="Offer",
                           text="Hello", options=options)  # fmt: skip


@pytest.mark.parametrize(
    ("options", "header"),
    [
        ({"mdn": True}, "support@centre.example"),
        ({"mdn": "true"}, "support@centre.example"),
        ({"mdn": "receipts@centre.example"}, "receipts@centre.example"),
        ({"mdn": "Receipts <receipts@centre.example>"}, "Receipts <receipts@centre.example>"),
        ({"mdn": False}, None),
        ({"mdn": "false"}, None),
        ({"mdn": None}, None),
        ({}, None),
    ],
)
def test_the_mdn_option_adds_the_header(
    kernel: TestKernel, options: dict[str, Any], header: str | None
) -> None:
    envelope = kernel.envelope(request(options))
    assert envelope.extra_headers.get("Disposition-Notification-To") == header


@pytest.mark.parametrize(
    ("options", "from_addr", "message"),
    [
        ({"mdn": "not an address"}, "support@centre.example", "not an address"),
        ({"mdn": "a@b.example, c@d.example"}, "support@centre.example", "exactly one"),
        ({"mdn": "nodomain@"}, "support@centre.example", "nodomain@"),
        ({"mdn": "a@b.example\r\nBcc: x@y.example"}, "support@centre.example", "line break"),
        ({"mdn": ["a@b.example"]}, "support@centre.example", "expected true or an address"),
        ({"mdn": True}, None, "needs a From"),
        ({"mdn": True}, "broken@", "From"),
    ],
)
def test_a_bad_receipt_address_fails_the_send_for_good(
    kernel: TestKernel, options: dict[str, Any], from_addr: str | None, message: str
) -> None:
    with pytest.raises(SendError) as info:
        kernel.envelope(request(options, from_addr))
    assert info.value.permanent
    assert message in str(info.value)


def test_through_the_outbox_the_header_is_sent_or_the_failure_recorded() -> None:
    with TestKernel(["mdn"]) as kernel:
        sent = kernel.send(OutboundRequest(
            to=["bob@customer.example"], from_addr="support@example.com", subject="Offer",
            text="Hello", options={"mdn": True}))  # fmt: skip
        failed = kernel.send(OutboundRequest(
            to=["bob@customer.example"], subject="Offer", text="Hello",
            options={"mdn": "receipts at example.com"}))  # fmt: skip
        assert sent.status == "Sent"
        assert failed.status == "Failed"
        assert "mdn" in failed.attached_data["_SendError"]
        assert result_of(kernel.store.get_outbox(failed.id)).attempts == 1  # permanent
    [wire] = kernel.sender.sent
    assert wire.message_id == sent.message_id
    assert b"Disposition-Notification-To: support@example.com\r\n" in wire.data
    assert wire.message["Disposition-Notification-To"] == "support@example.com"

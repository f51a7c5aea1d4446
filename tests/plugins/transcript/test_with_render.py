"""The sample standard response through both plugins (issue 12, item 1): the
library holds the product's sample text with its stylesheet, the request names it
and carries the chat; ``Contact.FirstName`` and ``Contact.LastName`` come from the
customer's ``userData`` in the transcript (``postroom_field_values``), the request's
own values winning; the transcript replaces the tag."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from postroom.api import OutboundRequest, RequestError
from postroom.testing import TestKernel
from postroom_transcript import plugin as transcript_plugin
from tests.plugins.transcript import samples
from tests.plugins.transcript.samples import START

RENDER = EntryPoint(name="render", value="postroom_render.plugin", group="postroom.plugins")
TRANSCRIPT = EntryPoint(name="transcript", value="postroom_transcript.plugin",
                        group="postroom.plugins")  # fmt: skip


@pytest.fixture
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "responses" / "chat-transcript"
    folder.mkdir(parents=True)
    (folder / "response.yaml").write_text(
        "subject: Your chat with us\nrequired: [Contact.FirstName, Contact.LastName]\n",
        encoding="utf-8",
    )
    body = samples.sample("seed-standard-response.txt") + samples.sample("seed-transcript.css")
    (folder / "body.html").write_text(body, encoding="utf-8")
    return folder.parent


def kernel_for(library: Path) -> TestKernel:
    site = f"plugins: [render, transcript]\nstandard-responses:\n  directory: {library}\n"
    return TestKernel([RENDER, TRANSCRIPT], site)


def request(xml: str | None = None, contact: dict[str, str] | None = None) -> OutboundRequest:
    spec: dict[str, object] = {"id": "chat-transcript"}
    if contact is not None:
        spec["fields"] = {"Contact": contact}
    return OutboundRequest(
        to=["juergen.mueller@customer.example"],
        from_addr="support@centre.example",
        options={
            "standard_response": spec,
            "transcript": {"xml": samples.xml() if xml is None else xml},
        },
    )


def html_of(kernel: TestKernel) -> str:
    [sent] = kernel.sender.sent
    part = sent.message.get_body(("html",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def test_contact_names_come_from_the_transcripts_user_data(library: Path) -> None:
    with kernel_for(library) as kernel:
        out = kernel.send(request())
        assert out.status == "Sent", out.attached_data
        html = html_of(kernel)
    assert html.startswith("Dear Jürgen Müller.")
    assert "<$" not in html and "Genesys_Chat_Transcript" not in html
    assert f"<td>{START}</td>" in html
    assert html.count('<style type="text/css">') == 1


def test_the_requests_own_contact_values_win(library: Path) -> None:
    with kernel_for(library) as kernel:
        kernel.send(request(contact={"FirstName": "Juergen"}))
        assert html_of(kernel).startswith("Dear Juergen Müller.")


def test_a_transcript_without_user_data_leaves_required_names_missing(library: Path) -> None:
    bare = samples.xml().split("<userData>")[0] + samples.xml().split("</userData>")[1]
    with kernel_for(library) as kernel:
        with pytest.raises(RequestError) as refused:
            kernel.send(request(xml=bare))
        assert "requires Contact.FirstName, Contact.LastName" in str(refused.value)
        assert kernel.outbox() == []


def test_the_transcript_offers_its_customers_user_data() -> None:
    offered = transcript_plugin.postroom_field_values(request())
    assert offered == {"Contact": {
        "EmailAddress": "juergen.mueller@customer.example", "FirstName": "Jürgen",
        "LastName": "Müller", "Subject": "Rechnung 2026-4711 & Gutschrift",
    }}  # fmt: skip
    assert transcript_plugin.postroom_field_values(request(xml="<not xml")) is None
    assert transcript_plugin.postroom_field_values(OutboundRequest(to=["a@x.example"])) is None

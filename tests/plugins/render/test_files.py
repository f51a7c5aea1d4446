"""A standard response's own files (its ``attachments/`` folder, issue 12 item 1):
sent after the request's own, byte for byte; over the site's limits they are refused
when the request is queued; the preview lists them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.api import OutboundRequest, RequestError, outbound_file
from postroom.testing import TestKernel
from tests.plugins.render.test_render import make_kernel, request, write_response

BROCHURE = bytes(range(256)) * 8  # every byte value


@pytest.fixture
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "responses"
    folder.mkdir()
    files = {"brochure.pdf": BROCHURE, "prices.csv": b"a;b\r\n1;2\r\n"}
    write_response(folder, "offer", text="Our offer, <$ Contact.FirstName $>.", attachments=files)
    return folder


@pytest.fixture
def kernel(library: Path) -> Iterator[TestKernel]:
    with make_kernel(library) as made:
        yield made


def files_of(message: Any) -> list[tuple[str, str, bytes]]:
    return [
        (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        for part in message.iter_attachments()
    ]


def test_the_responses_files_follow_the_requests_own(kernel: TestKernel) -> None:
    req = request("offer", attachments=[outbound_file("terms.txt", b"terms")])
    out = kernel.send(req)
    assert out.status == "Sent", out.attached_data
    [sent] = kernel.sender.sent
    assert files_of(sent.message) == [
        ("terms.txt", "text/plain", b"terms"),
        ("brochure.pdf", "application/pdf", BROCHURE),
        ("prices.csv", "text/csv", b"a;b\r\n1;2\r\n"),
    ]
    # the queued request keeps only its own file: a retry renders the response again
    [entry] = kernel.outbox()
    assert [f.filename for f in entry.request.attachments] == ["terms.txt"]


def test_the_preview_lists_every_file(kernel: TestKernel) -> None:
    preview = kernel.preview(request("offer"))
    assert preview.sendable
    shown = preview.as_json()["attachments"]
    assert shown == [
        {"filename": "brochure.pdf", "content_type": "application/pdf", "size": len(BROCHURE)},
        {"filename": "prices.csv", "content_type": "text/csv", "size": 10},
    ]
    assert kernel.outbox() == []


def test_files_over_the_sites_limit_are_refused_when_queued(library: Path) -> None:
    extra = "email-processing:\n  outbound-attachment-max-size: 1KB\n"
    with make_kernel(library, extra) as kernel:
        with pytest.raises(RequestError) as refused:
            kernel.send(request("offer"))
        assert refused.value.field == "options"
        assert "brochure.pdf" in str(refused.value)
        assert "outbound-attachment-max-size" in str(refused.value)
        assert kernel.outbox() == []


def test_a_file_removed_after_queueing_fails_the_message_with_the_reason(
    kernel: TestKernel, library: Path
) -> None:
    from postroom.api import SendError

    kernel.sender.fail_next(SendError("421 try again later"))
    first = kernel.send(request("offer"))
    assert first.status == "Queued"
    (library / "offer" / "attachments" / "prices.csv").unlink()
    (library / "offer" / "attachments" / "prices.csv").mkdir()  # unreadable as a file
    kernel.clock.advance(30)
    kernel.run_outbox()
    found = kernel.interaction(first.id)
    assert found is not None and found.status == "Failed"
    assert "prices.csv" in str(found.attached_data["_SendError"])


def test_a_request_without_the_option_gets_no_files(kernel: TestKernel) -> None:
    out = kernel.send(OutboundRequest(to=["a@x.example"], subject="s", text="t"))
    assert out.status == "Sent"
    [sent] = kernel.sender.sent
    assert files_of(sent.message) == []

"""Files on outbound mail (issue 12, item 4), forwards (item 2), ``bcc-address`` and
``outbound-msg-charset``: uploaded files and files of stored interactions reach the
recipient byte for byte, are kept apart from the request in the outbox (a send after
a restart still has them), and every refusal names its field with nothing queued."""

from __future__ import annotations

import base64
import email
import hashlib
import json
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from postroom import hookimpl
from postroom.model import Interaction, OutboundAttachment, OutboundRequest
from postroom.outbound_files import (
    FileError,
    FileLimits,
    check_limits,
    files_from_json,
    outbound_file,
)
from postroom.sendrequest import RequestError, request_from_json
from postroom.services.gateway import Gateway
from postroom.store.sql.values import request_to_json
from tests.conftest import run
from tests.kernel.test_cli import postroom
from tests.kernel.test_gateway import make_kernel
from tests.kernel.test_replies import ingest, sent, started
from tests.kernel.test_send_request import outbox_files
from tests.kernel.test_web import TOKEN, Server

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"  # every byte value
NOTES = "Größe: 42 €\r\nline two".encode("cp1252")  # 8-bit text, CRLF kept

#: a customer's mail with a PDF (base64), a text file (quoted-printable, cp1252),
#: an attached message, and a file named in RFC 2231
CUSTOMER = (
    b"From: Anna <anna@customer.example>\r\n"
    b"To: support@centre.example\r\n"
    b"Subject: Invoice 77\r\n"
    b"Message-ID: <inv-77@customer.example>\r\n"
    b"Date: Mon, 02 Mar 2026 10:00:00 +0100\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Please see the invoice.\r\n"
    b"--b1\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\r\n"
    b"\r\n" + base64.encodebytes(PDF).replace(b"\n", b"\r\n") + b"--b1\r\n"
    b"Content-Type: text/plain; charset=windows-1252\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b'Content-Disposition: attachment; filename="notes.txt"\r\n'
    b"\r\n"
    b"Gr=F6=DFe: 42 =80\r\nline two\r\n"
    b"--b1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b'Content-Disposition: attachment; filename="earlier.eml"\r\n'
    b"\r\n"
    b"From: x@customer.example\r\nSubject: earlier\r\n\r\nold text\r\n"
    b"--b1--\r\n"
)


@pytest.fixture
def site(quickstart: Path) -> Path:
    return quickstart


def start(config: Path, processing: str = "") -> Gateway:
    """A gateway on *config*, with *processing* added to its ``email-processing``."""
    if processing:
        text = config.read_text().replace("email-processing:\n", f"email-processing:\n{processing}")
        assert processing in text
        config.write_text(text)
    return started(config)


@pytest.fixture
def gateway(site: Path) -> Any:
    gateway = start(site)
    yield gateway
    run(gateway.stopService())


def files_of(message: EmailMessage) -> list[tuple[str | None, str, bytes]]:
    return [
        (part.get_filename(), part.get_content_type(), _content(part))
        for part in message.iter_attachments()
    ]


def _content(part: Any) -> bytes:
    if part.get_content_type() == "message/rfc822":
        return part.get_payload()[0].as_bytes(policy=policy.SMTP)
    return part.get_payload(decode=True)


def queued_count(gateway: Gateway) -> int:
    return sum(run(gateway.kernel.store.outbox_counts()).values())


# --------------------------------------------------------------- the request


def test_json_files_are_decoded_checked_and_typed() -> None:
    request = request_from_json(
        {
            "to": "a@x.example",
            "attachments": [
                {"filename": "a.pdf", "content": base64.b64encode(PDF).decode()},
                {"filename": "b.bin", "content_type": "Image/PNG", "content": "AAEC\r\nAw=="},
                {"interaction": "abc", "index": 2, "filename": "c.txt"},
            ],
        }
    )
    first, second, third = request.attachments
    assert (first.filename, first.content_type, first.data) == ("a.pdf", "application/pdf", PDF)
    assert first.sha256 == hashlib.sha256(PDF).hexdigest() and first.size == len(PDF)
    assert (second.content_type, second.data) == ("image/png", b"\x00\x01\x02\x03")
    assert third.by_reference and (third.interaction, third.index) == ("abc", 2)


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ({"filename": "../etc/passwd", "content": ""}, "slash"),
        ({"filename": "a\r\nb", "content": ""}, "control character"),
        ({"filename": "", "content": ""}, "['filename']: empty"),
        ({"filename": "x", "content": "a"}, "not valid base64"),
        ({"filename": "x", "content": "%%%"}, "base64"),
        ({"filename": "x", "content_type": "text/plain; charset=x", "content": ""}, "media type"),
        ({"filename": "x", "content_type": "multipart/mixed", "content": ""}, "media type"),
        ({"filename": "x"}, "[0]['content']: is required"),
        ({"interaction": "x"}, "[0]['index']: is required"),
        ({"interaction": "x", "index": -1}, "index"),
        ({"interaction": "x", "index": 0, "content": "AA=="}, "attachments"),
    ],
)
def test_a_bad_file_is_refused_naming_attachments(item: dict[str, Any], says: str) -> None:
    with pytest.raises(RequestError) as refused:
        request_from_json({"to": "a@x.example", "attachments": [item]})
    assert refused.value.field == "attachments"
    assert says in str(refused.value)


def test_forward_and_reply_at_once_are_refused() -> None:
    with pytest.raises(RequestError) as refused:
        request_from_json({"to": "a@x.example", "in_reply_to": "a", "forward_of": "b"})
    assert refused.value.field == "forward_of"


def test_the_stored_request_holds_no_bytes() -> None:
    request = OutboundRequest(to=["a@x.example"], attachments=[outbound_file("a.pdf", PDF)])
    text = request_to_json(request)
    assert "JVBER" not in text and len(text) < 1000
    assert json.loads(text)["attachments"][0]["sha256"] == hashlib.sha256(PDF).hexdigest()


def test_limits_name_the_file_at_fault() -> None:
    small = FileLimits(max_size=10, max_total=15, max_count=2)
    check_limits([outbound_file("a", b"x" * 10), outbound_file("b", b"y" * 5)], small)
    with pytest.raises(FileError, match=r"'big' is 11 bytes.*outbound-attachment-max-size"):
        check_limits([outbound_file("a", b""), outbound_file("big", b"x" * 11)], small)
    with pytest.raises(FileError, match="add up to 16 bytes"):
        check_limits([outbound_file("a", b"x" * 8), outbound_file("b", b"y" * 8)], small)
    with pytest.raises(FileError, match="3 files; the site allows 2"):
        check_limits([outbound_file(n, b"") for n in "abc"], small)


def test_files_from_json_is_linear_in_the_number_of_files() -> None:
    items = [{"filename": f"f{n}", "content": "AA=="} for n in range(100)]
    assert len(files_from_json(items)) == 100


# ------------------------------------------------------------- sent for real


def test_an_uploaded_file_is_sent_byte_for_byte_with_an_rfc2231_name(
    gateway: Gateway, site: Path
) -> None:
    request = OutboundRequest(
        to=["anna@customer.example"], subject="Your invoice", text="Attached.",
        attachments=[outbound_file("Rechnung März.pdf", PDF), outbound_file("notes.txt", NOTES)],
    )  # fmt: skip
    out = run(gateway.send(request))
    assert out.attached_data["_AttachmentFileNames"] == "Rechnung März.pdf; notes.txt"
    raw = next(p for p in outbox_files(site) if p.suffix == ".eml").read_bytes()
    assert b"filename*=utf-8''Rechnung%20M%C3%A4rz.pdf" in raw  # RFC 2231
    message = sent(site, out.message_id)
    assert files_of(message) == [
        ("Rechnung März.pdf", "application/pdf", PDF),
        ("notes.txt", "text/plain", NOTES),
    ]
    assert message.get_body(("plain",)).get_content().rstrip() == "Attached."


def test_files_of_a_stored_interaction_are_sent_as_they_came(
    gateway: Gateway, site: Path, tmp_path: Path
) -> None:
    parent = ingest(gateway.kernel, tmp_path, CUSTOMER)
    assert [a.filename for a in parent.attachments] == [
        "Rechnung März.pdf", "notes.txt", "earlier.eml",
    ]  # fmt: skip
    request = OutboundRequest(
        text="Here is your file back.",
        in_reply_to=parent.id,
        attachments=[
            OutboundAttachment(interaction=parent.id, index=1),
            OutboundAttachment(interaction=parent.id, index=0, filename="invoice.pdf"),
            OutboundAttachment(interaction=parent.id, index=2),
        ],
    )
    out = run(gateway.send(request))
    message = sent(site, out.message_id)
    found = files_of(message)
    assert found[0] == ("notes.txt", "text/plain", NOTES)
    assert found[1] == ("invoice.pdf", "application/pdf", PDF)
    assert found[2][:2] == ("earlier.eml", "message/rfc822")
    assert b"Subject: earlier" in found[2][2] and b"old text" in found[2][2]


def test_a_forward_carries_the_text_and_every_file(
    gateway: Gateway, site: Path, tmp_path: Path
) -> None:
    original = ingest(gateway.kernel, tmp_path, CUSTOMER)
    request = OutboundRequest(
        to=["billing@centre.example"], text="Please check this invoice.",
        forward_of=original.id, attachments=[outbound_file("note.txt", b"mine")],
    )  # fmt: skip
    out = run(gateway.send(request))
    assert out.subject == "Fwd: Invoice 77" and out.subtype == "OutboundNew"
    assert out.parent_id is None and out.attached_data["_ForwardOf"] == original.id
    message = sent(site, out.message_id)
    assert message["Subject"] == "Fwd: Invoice 77" and message["In-Reply-To"] is None
    body = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert body.startswith("Please check this invoice.\n\n---------- Forwarded message")
    assert "From: anna@customer.example" in body and "\nPlease see the invoice." in body
    assert [name for name, _t, _d in files_of(message)] == [
        "Rechnung März.pdf", "notes.txt", "earlier.eml", "note.txt",
    ]  # fmt: skip
    assert files_of(message)[0][2] == PDF


def test_forwarding_a_forward_does_not_stack_prefixes(gateway: Gateway, tmp_path: Path) -> None:
    raw = CUSTOMER.replace(b"Subject: Invoice 77", b"Subject: FW: Fwd: Re: Invoice 77")
    original = ingest(gateway.kernel, tmp_path, raw)
    out = run(gateway.send(OutboundRequest(to=["b@x.example"], forward_of=original.id)))
    assert out.subject == "Fwd: Re: Invoice 77"


@pytest.mark.parametrize(
    ("make", "field", "says"),
    [
        (lambda p: OutboundRequest(to=["b@x.example"], forward_of="nope"),
         "forward_of", "no interaction 'nope'"),
        (lambda p: OutboundRequest(to=["b@x.example"], attachments=[
            OutboundAttachment(interaction="nope", index=0)]),
         "attachments", "[0]: no interaction 'nope'"),
        (lambda p: OutboundRequest(to=["b@x.example"], attachments=[
            outbound_file("a", b""), OutboundAttachment(interaction=p.id, index=3)]),
         "attachments", "[1]: interaction"),
        (lambda p: OutboundRequest(to=["b@x.example"], attachments=[
            outbound_file("big.bin", b"x" * 2048)]),
         "attachments", "outbound-attachment-max-size"),
        (lambda p: OutboundRequest(to=["b@x.example"], forward_of=p.id),
         "forward_of", "file 0 of the forwarded mail"),
    ],
)  # fmt: skip
def test_a_refused_file_or_forward_queues_nothing(
    site: Path, tmp_path: Path, make: Any, field: str, says: str
) -> None:
    gateway = start(site, "  outbound-attachment-max-size: 1KB\n")
    try:
        parent = ingest(gateway.kernel, tmp_path, CUSTOMER)
        with pytest.raises(RequestError) as refused:
            run(gateway.send(make(parent)))
        assert refused.value.field == field and says in str(refused.value), refused.value
        assert queued_count(gateway) == 0
    finally:
        run(gateway.stopService())


def test_queued_files_survive_a_restart(site: Path) -> None:
    first = Gateway(make_kernel(site), mailboxes=False, once=True)
    # queued only: a kernel that opens the store and stores the request
    kernel = first.kernel
    run(kernel.open())
    from postroom.services.outbound import queue_send

    out = run(queue_send(kernel, OutboundRequest(
        to=["a@x.example"], subject="s", attachments=[outbound_file("a.pdf", PDF)])))  # fmt: skip
    run(kernel.close())
    assert not outbox_files(site)
    later = start(site)  # a new process on the same store sends it
    try:
        [eml] = [p for p in outbox_files(site) if p.suffix == ".eml"]
        message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
        assert files_of(message) == [("a.pdf", "application/pdf", PDF)]  # type: ignore[arg-type]
        assert message["Message-ID"] == out.message_id
    finally:
        run(later.stopService())


# ------------------------------------------------------------ site options


def test_bcc_address_is_in_the_envelope_only(site: Path) -> None:
    gateway = start(site, "  bcc-address: archive@centre.example\n")
    try:
        out = run(gateway.send(OutboundRequest(to=["a@x.example"], subject="s", text="t")))
    finally:
        run(gateway.stopService())
    [envelope] = [p for p in outbox_files(site) if p.name.endswith(".envelope.json")]
    assert json.loads(envelope.read_text())["rcpt_to"] == ["a@x.example", "archive@centre.example"]
    message = sent(site, out.message_id)
    assert "archive" not in message.as_string()


@pytest.mark.parametrize(
    ("text", "charset"),
    [("Grüße aus Köln", "iso-8859-1"), ("Preis: 42 €", "utf-8")],  # € is not in Latin-1
)
def test_outbound_msg_charset_is_used_when_it_can_write_the_text(
    site: Path, text: str, charset: str
) -> None:
    gateway = start(site, "  outbound-msg-charset: iso-8859-1\n")
    try:
        out = run(gateway.send(OutboundRequest(to=["a@x.example"], subject="s", text=text,
                                               html=f"<p>{text}</p>")))  # fmt: skip
    finally:
        run(gateway.stopService())
    message = sent(site, out.message_id)
    parts = [p for p in message.walk() if p.get_content_maintype() == "text"]
    assert [p.get_content_charset() for p in parts] == [charset, charset]
    assert parts[0].get_content().rstrip() == text


def test_an_unknown_charset_is_a_configuration_error(site: Path) -> None:
    from postroom.errors import ConfigErrors

    with pytest.raises(ConfigErrors, match=r"outbound-msg-charset.*expected one of: UTF-8"):
        start(site, "  outbound-msg-charset: klingon\n")


def interaction_of(gateway: Gateway, out: Interaction) -> Interaction:
    found = run(gateway.kernel.store.get_interaction(out.id))
    assert found is not None
    return found


# ------------------------------------------------------------ HTTP and CLI


@pytest.fixture
def api(quickstart: Path) -> Iterator[Server]:
    server = Server(quickstart)
    yield server
    server.close()


def form(request: dict[str, Any], *files: tuple[str, str, bytes, str | None]) -> tuple[bytes, str]:
    """A multipart/form-data body: the request, then (field, filename, data, type) files."""
    boundary = "postroom-test-7c1e"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="request"\r\n'
        f"Content-Type: application/json\r\n\r\n".encode()
        + json.dumps(request).encode()
    ]
    for field, filename, data, media in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        head += (
            f"filename*=utf-8''{quote(filename)}\r\n"
            if not filename.isascii()
            else (f'filename="{filename}"\r\n')
        )
        if media:
            head += f"Content-Type: {media}\r\n"
        parts.append(head.encode() + b"\r\n" + data)
    body = b"\r\n".join(parts) + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post_form(api: Server, body: bytes, content_type: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
    code, _, raw = api.request("POST", "/send", body, headers)
    return code, json.loads(raw)


def test_a_multipart_upload_is_sent_with_its_files(api: Server, quickstart: Path) -> None:
    body, ctype = form(
        {"to": "a@x.example", "subject": "Files", "text": "see attached"},
        ("attachment", "Rechnung März.pdf", PDF, None),
        ("attachment", "data.bin", b"\x00\r\n--postroom-test\r\n", "application/x-thing"),
    )
    code, out = post_form(api, body, ctype)
    assert code == 202, out
    message = sent(quickstart, out["message_id"])
    assert files_of(message) == [
        ("Rechnung März.pdf", "application/pdf", PDF),  # type guessed from the name
        ("data.bin", "application/x-thing", b"\x00\r\n--postroom-test\r\n"),
    ]


def test_json_base64_files_are_sent(api: Server, quickstart: Path) -> None:
    code, out = api.send({
        "to": "a@x.example", "subject": "s",
        "attachments": [{"filename": "a.pdf", "content": base64.b64encode(PDF).decode()}],
    })  # fmt: skip
    assert code == 202, out
    assert files_of(sent(quickstart, out["message_id"])) == [("a.pdf", "application/pdf", PDF)]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (form({"to": "a@x.example"}, ("attachment", "a/b", b"x", None))[0], "slash"),
        (form({"to": "a@x.example"}, ("other", "", b"x", None))[0].replace(
            b'; filename=""', b""), "neither the 'request' field nor a file"),
        (form({"to": "a@x.example"})[0][:-20], "closing boundary"),
        (form({"to": "a@x.example"})[0].replace(b'name="request"', b'name="x"'), "form part 0"),
        (form({"to": "a@x.example"}, *[("f", f"{n}.txt", b"", None) for n in range(101)])[0],
         "more than 101 parts"),
        (form({"to": "a@x.example"}, ("f", "x.txt", b"", "multipart/mixed"))[0], "media type"),
        (form({"to": "a@x.example", "bcc": "not an address"})[0], "bcc"),
    ],
)  # fmt: skip
def test_a_bad_form_is_a_400_and_queues_nothing(api: Server, body: bytes, says: str) -> None:
    ctype = "multipart/form-data; boundary=postroom-test-7c1e"
    code, out = post_form(api, body, ctype)
    assert code == 400 and says in out["error"], out
    assert api.queued() == 0


def test_a_form_without_boundary_is_a_400(api: Server) -> None:
    code, out = post_form(api, b"x", "multipart/form-data")
    assert code == 400 and "boundary" in out["error"]


def test_postroom_send_attaches_files_and_refuses_a_missing_one(
    quickstart: Path, tmp_path: Path
) -> None:
    pdf = tmp_path / "Angebot.pdf"
    pdf.write_bytes(PDF)
    done = postroom("send", "-c", str(quickstart), "--to", "a@x.example", "--subject", "s",
                    "--attach", str(pdf), "--now")  # fmt: skip
    assert done.returncode == 0, done.stderr
    [eml] = [p for p in outbox_files(quickstart) if p.suffix == ".eml"]
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert files_of(message) == [("Angebot.pdf", "application/pdf", PDF)]  # type: ignore[arg-type]
    missing = postroom("send", "-c", str(quickstart), "--to", "a@x.example",
                       "--attach", str(tmp_path / "nope.pdf"))  # fmt: skip
    assert missing.returncode == 2 and "--attach: cannot read" in missing.stderr
    bad = postroom("send", "-c", str(quickstart), "--to", "a@x.example",
                   "--attach-stored", "no-such-id:0")  # fmt: skip
    assert bad.returncode == 2
    assert "--attach: [0]: no interaction 'no-such-id' is stored" in bad.stderr
    forward = postroom("send", "-c", str(quickstart), "--to", "a@x.example",
                       "--forward-of", "no-such-id")  # fmt: skip
    assert forward.returncode == 2 and "--forward-of: no interaction" in forward.stderr
    assert len([p for p in outbox_files(quickstart) if p.suffix == ".eml"]) == 1


class AddsBrochure:
    """A renderer that adds a file of its own (as a standard response does)."""

    def __init__(self, size: int) -> None:
        self.size = size

    @hookimpl
    def postroom_render(self, request: OutboundRequest) -> None:
        request.attachments.append(outbound_file("brochure.pdf", b"B" * self.size))


def test_a_renderers_file_follows_the_queued_ones(site: Path) -> None:
    gateway = Gateway(make_kernel(site, plugins=[("brochure", AddsBrochure(100))]),
                      mailboxes=False)  # fmt: skip
    gateway.startService()
    try:
        request = OutboundRequest(to=["a@x.example"], subject="s", attachments=[
            outbound_file("mine.pdf", PDF)])  # fmt: skip
        out = run(gateway.send(request))
        assert [n for n, _t, _d in files_of(sent(site, out.message_id))] == [
            "mine.pdf", "brochure.pdf",
        ]  # fmt: skip
    finally:
        run(gateway.stopService())


def test_a_renderers_file_over_the_limits_fails_the_message_for_good(site: Path) -> None:
    limit = "email-processing:\n  outbound-attachment-max-size: 1KB\n"
    site.write_text(site.read_text().replace("email-processing:\n", limit))
    gateway = Gateway(make_kernel(site, plugins=[("brochure", AddsBrochure(2048))]),
                      mailboxes=False)  # fmt: skip
    gateway.startService()
    try:
        out = run(gateway.send(OutboundRequest(to=["a@x.example"], subject="s")))
        stored = run(gateway.kernel.store.get_interaction(out.id))
        assert stored.status == "Failed"
        assert "brochure.pdf" in stored.attached_data["_SendError"]
        assert "outbound-attachment-max-size" in stored.attached_data["_SendError"]
    finally:
        run(gateway.stopService())


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ({"attachments": [{"filename": "a.bin", "content": base64.b64encode(
            b"x" * 120_000).decode()}]}, "attachments", "outbound-attachment-max-size"),
        ({"attachments": [{"filename": "a.bin", "content": "not base64!"}]},
         "attachments", "base64"),
        ({"attachments": [{"interaction": "gone", "index": 0}]},
         "attachments", "no interaction 'gone' is stored"),
        ({"forward_of": "gone"}, "forward_of", "no interaction 'gone' is stored"),
    ],
)  # fmt: skip
def test_bad_files_and_forwards_are_a_400_over_http_and_queue_nothing(
    quickstart: Path, extra: dict[str, Any], field: str, says: str
) -> None:
    limit = "email-processing:\n  outbound-attachment-max-size: 100KB\n"
    quickstart.write_text(quickstart.read_text().replace("email-processing:\n", limit))
    api = Server(quickstart)
    try:
        code, out = api.send({"to": "a@x.example", "subject": "s", **extra})
        assert (code, out["field"]) == (400, field), out
        assert says in out["error"], out
        assert api.queued() == 0
    finally:
        api.close()


# -------------------------------------------------------------- hostile forms

FORM_TYPE = b"multipart/form-data; boundary=postroom-test-7c1e"


def _form_request(body: bytes) -> Any:
    from postroom.sendrequest import BUILTIN_FORBIDDEN_HEADERS
    from postroom.uploads import request_from_form

    return request_from_form(FORM_TYPE, body, BUILTIN_FORBIDDEN_HEADERS)


@pytest.mark.parametrize(
    "lines",
    [
        b"\r\n--postroom-test-7c1\r\n",  # almost the boundary, over and over
        b"\r\n--",
        b"\r",
    ],
)
def test_reading_a_form_is_linear_in_its_size(lines: bytes) -> None:
    from postroom.testing.linear import assert_linear

    def make(n: int) -> bytes:
        body, _ = form({"to": "a@x.example"}, ("f", "x.bin", lines * n, None))
        return body

    growth = assert_linear(make, _form_request, start=20_000)
    assert growth.n >= 20_000


def test_a_huge_part_header_is_a_400_not_a_crash() -> None:
    body = (b"--postroom-test-7c1e\r\nContent-Disposition: form-data; name=\"request\"; x=\""
            + b"a" * 100_000 + b"\"\r\n\r\n{}\r\n--postroom-test-7c1e--\r\n")  # fmt: skip
    with pytest.raises(RequestError) as refused:
        _form_request(body)
    assert "form cannot be read" in str(refused.value)


#: a customer's file whose name is a path with a control character, of an odd type
HOSTILE_NAME = (
    b"From: x@customer.example\r\nTo: support@centre.example\r\nSubject: odd\r\n"
    b"Message-ID: <odd-1@customer.example>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain\r\n\r\nsee file\r\n--b\r\n"
    b"Content-Type: application/x{odd}\r\nContent-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="../../etc/pass\\twd"\r\n\r\n'
    b"AAECAw==\r\n--b--\r\n"
)


def test_a_stored_file_with_a_hostile_name_goes_out_under_its_safe_name(
    gateway: Gateway, site: Path, tmp_path: Path
) -> None:
    parent = ingest(gateway.kernel, tmp_path, HOSTILE_NAME)
    [listed] = parent.attachments
    out = run(gateway.send(OutboundRequest(
        to=["a@x.example"], subject="s",
        attachments=[OutboundAttachment(interaction=parent.id, index=0)])))  # fmt: skip
    assert out.status in ("Queued", "Sent")
    [(name, media, data)] = files_of(sent(site, out.message_id))
    assert name == listed.safe_filename and "/" not in name and "\t" not in name
    assert (media, data) == ("application/octet-stream", b"\x00\x01\x02\x03")


def test_a_forward_of_more_files_than_allowed_is_refused_before_any_is_read(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A customer's mail with many parts, forwarded: refused on the count alone,
    without parsing the message once per file."""
    from postroom.pipeline import files as pipeline_files

    parts = b"".join(
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="f%d.bin"\r\n\r\nx\r\n' % n
        for n in range(30)
    )
    many = (b"From: x@customer.example\r\nTo: support@centre.example\r\nSubject: many\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            + parts + b"--b--\r\n")  # fmt: skip
    gateway = start(site)
    try:
        original = ingest(gateway.kernel, tmp_path, many)
        assert len(original.attachments) == 30
        reads: list[str] = []
        monkeypatch.setattr(pipeline_files, "stored_part", lambda *a: reads.append("read"))
        with pytest.raises(RequestError) as refused:
            run(gateway.send(OutboundRequest(to=["b@x.example"], forward_of=original.id)))
        assert refused.value.field == "forward_of"
        assert "30 files; the site allows 20" in str(refused.value)
        assert reads == [] and queued_count(gateway) == 0
    finally:
        run(gateway.stopService())

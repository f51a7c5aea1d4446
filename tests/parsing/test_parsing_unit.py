"""Unit cases for postroom.parsing: crafted messages, one behaviour each."""

from __future__ import annotations

import hashlib
import pickle
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from postroom.model import FetchedMessage, ParsedMessage, RawRef
from postroom.parsing import (
    UNKNOWN_SUBJECT,
    ParseLimits,
    attachment_file_names,
    parse_bytes,
    parse_message,
    wrapping_text,
)
from postroom.parsing import parser as parser_module

LIMITS = ParseLimits()
WRAP_LINES = (
    "Error encountered during preprocessing of this message",
    "Original Incoming Email is attached to this Email",
)


def raw_ref(tmp_path: Path, data: bytes, name: str = "msg.eml") -> RawRef:
    path = tmp_path / name
    path.write_bytes(data)
    return RawRef.from_path(path)


def mail(*headers: str, body: bytes = b"body\n", sep: bytes = b"\n") -> bytes:
    return sep.join(h.encode("utf-8") for h in headers) + sep + sep + body


def assert_wrapped(parsed: ParsedMessage, reason: str, *, size: int | None = None) -> None:
    assert parsed.wrapping_reason == reason
    assert parsed.is_wrapped
    assert parsed.text == f"{WRAP_LINES[0]}\n{reason}\n{WRAP_LINES[1]}"
    assert parsed.text == wrapping_text(reason)
    assert parsed.html is None
    [original] = parsed.attachments
    assert original.filename == "original.eml"
    assert original.content_type == "message/rfc822"
    assert original.is_message
    if size is not None:
        assert original.size == size == parsed.raw_size
    assert [p.content_type for p in parsed.parts] == [
        "multipart/mixed",
        "text/plain",
        "message/rfc822",
    ]
    assert attachment_file_names(parsed) == ["original.eml"]


# ------------------------------------------------------------------ basics


def test_simple_message_fields(tmp_path: Path) -> None:
    data = mail(
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.com>",
        'To: a@example.com, "Bee, B." <B@Example.com>',
        "Cc: Group: c@example.com, d@example.com;, undisclosed-recipients:;",
        "Reply-To: <reply@example.com>",
        "Subject: =?utf-8?B?R3LDvMOfZQ==?= =?utf-8?B?IGF1cyBCZXJsaW4=?=",
        "Message-ID: <abc.123@host.example>",
        "In-Reply-To: <prev@host.example> (sent by Joe)",
        "References: <one@h>\n <two@h>\n\t<prev@host.example>",
        "Date: Mon, 3 Feb 2025 10:00:00 +0100",
        body=b"Hello\nWorld\n",
    )
    ref = raw_ref(tmp_path, data)
    parsed = parse_message(ref, LIMITS)
    assert not parsed.is_wrapped
    assert parsed.subject == "Grüße aus Berlin"
    assert parsed.from_addr == "juergen@example.com"
    assert parsed.from_name == "Jürgen Müller"
    assert parsed.to == ["a@example.com", "B@Example.com"]
    assert parsed.cc == ["c@example.com", "d@example.com"]
    assert parsed.reply_to == ["reply@example.com"]
    assert parsed.message_id == "<abc.123@host.example>"
    assert parsed.in_reply_to == ["<prev@host.example>"]
    assert parsed.references == ["<one@h>", "<two@h>", "<prev@host.example>"]
    assert parsed.date == datetime(2025, 2, 3, 9, 0, tzinfo=UTC)
    assert parsed.date.utcoffset() == timedelta(hours=1)
    assert parsed.text == "Hello\nWorld\n"
    assert parsed.html is None
    assert parsed.attachments == []
    assert parsed.defects == []
    assert parsed.raw_size == len(data)
    assert parsed.raw_sha256 == hashlib.sha256(data).hexdigest()
    assert parsed.header("subject") == "Grüße aus Berlin"
    assert [name for name, _ in parsed.headers][:3] == ["From", "To", "Cc"]
    assert parsed.header("references") == "<one@h> <two@h> <prev@host.example>"
    [root] = parsed.parts
    assert (root.path, root.content_type, root.depth, root.text) == (
        "",
        "text/plain",
        0,
        "Hello\nWorld\n",
    )


def test_alternative_gives_text_and_html() -> None:
    data = mail(
        "From: a@example.com",
        "Subject: alt",
        'Content-Type: multipart/alternative; boundary="b"',
        body=(
            b"--b\nContent-Type: text/plain; charset=utf-8\n\nplain \xc3\xa9\n"
            b"--b\nContent-Type: text/html; charset=utf-8\n\n<p>html \xc3\xa9</p>\n"
            b"--b--\n"
        ),
    )
    parsed = parse_bytes(data, LIMITS)
    assert parsed.text == "plain é"
    assert parsed.html == "<p>html é</p>"
    assert parsed.attachments == []
    assert [(p.path, p.content_type, p.depth) for p in parsed.parts] == [
        ("", "multipart/alternative", 0),
        ("1", "text/plain", 1),
        ("2", "text/html", 1),
    ]


def test_html_only_message_has_no_text() -> None:
    parsed = parse_bytes(
        mail("From: a@example.com", "Content-Type: text/html", body=b"<b>hi</b>"), LIMITS
    )
    assert parsed.text is None
    assert parsed.html == "<b>hi</b>"


def test_inline_text_parts_in_mixed_are_joined_and_named_ones_are_attachments() -> None:
    data = mail(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="b"',
        body=(
            b"--b\nContent-Type: text/plain\n\nfirst\n"
            b"--b\nContent-Type: image/jpeg\nContent-Transfer-Encoding: base64\n\n/9j/4AAQ\n"
            b"--b\nContent-Type: text/plain\n\nsecond\n"
            b'--b\nContent-Type: text/plain; name="notes.txt"\n\nfile\n'
            b"--b\nContent-Type: text/plain\nContent-Disposition: attachment\n\nfile2\n"
            b"--b--\n"
        ),
    )
    parsed = parse_bytes(data, LIMITS)
    assert parsed.text == "first\nsecond"
    assert [(a.part_path, a.content_type, a.filename) for a in parsed.attachments] == [
        ("2", "image/jpeg", None),
        ("4", "text/plain", "notes.txt"),
        ("5", "text/plain", None),
    ]
    assert parsed.attachments[0].size == 6
    assert parsed.parts[4].text == "file"


# --------------------------------------------------------------- attachments


def test_attachment_names_rfc2047_rfc2231_utf8_latin1() -> None:
    data = (
        b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo\r\n"
        b'--XX\r\nContent-Type: application/pdf; name="=?utf-8?q?Rechnung_M=C3=A4rz.pdf?="\r\n'
        b"Content-Disposition: attachment\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjQK\r\n"
        b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n"
        b" filename*0*=utf-8''%E2%82%AC%20report;\r\n filename*1*=%20%C3%A9t%C3%A9.xlsx\r\n\r\n"
        b"abc\r\n"
        b"--XX\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*=iso-8859-1'fr'r%E9sum%E9.doc\r\n\r\nabc\r\n"
        b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        b'filename="caf\xe9.txt"\r\n\r\nabc\r\n'
        b'--XX\r\nContent-Type: image/png; name="\xe5\x9b\xbe.png"\r\n\r\nabc\r\n'
        b'--XX\r\nContent-Type: application/zip; name="=?iso-8859-1?Q?Gr=FC=DFe?=\r\n'
        b' =?iso-8859-1?Q?.zip?="\r\n\r\nabc\r\n'
        b"--XX--\r\n"
    )
    parsed = parse_bytes(data, LIMITS)
    assert parsed.text == "Hallo"
    assert attachment_file_names(parsed) == [
        "Rechnung März.pdf",
        "€ report été.xlsx",
        "résumé.doc",
        "café.txt",
        "图.png",
        "Grüße.zip",
    ]
    pdf = parsed.attachments[0]
    assert (pdf.content_type, pdf.size, pdf.disposition, pdf.part_path) == (
        "application/pdf",
        9,
        "attachment",
        "2",
    )
    assert "5: header Content-Disposition is not UTF-8, decoded as windows-1252" in parsed.defects


def test_attached_message_is_descended_with_imap_numbers() -> None:
    inner_multi = (
        b"From: inner@example.com\nSubject: inner\n"
        b'Content-Type: multipart/mixed; boundary="in"\n\n'
        b"--in\nContent-Type: text/plain\n\ninner text\n"
        b'--in\nContent-Type: application/pdf; name="x.pdf"\n\n%PDF\n'
        b"--in--\n"
    )
    inner_single = b"From: other@example.com\nSubject: single\n\njust text\n"
    data = mail(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="out"',
        body=(
            b"--out\nContent-Type: text/plain\n\nsee attached\n"
            b"--out\nContent-Type: message/rfc822\n"
            b'Content-Disposition: attachment; filename="fw.eml"\n\n' + inner_multi + b"\n"
            b"--out\nContent-Type: message/rfc822\n\n" + inner_single + b"--out--\n"
        ),
    )
    parsed = parse_bytes(data, LIMITS)
    assert [(p.path, p.depth, p.content_type) for p in parsed.parts] == [
        ("", 0, "multipart/mixed"),
        ("1", 1, "text/plain"),
        ("2", 1, "message/rfc822"),
        ("2", 2, "multipart/mixed"),
        ("2.1", 3, "text/plain"),
        ("2.2", 3, "application/pdf"),
        ("3", 1, "message/rfc822"),
        ("3.1", 2, "text/plain"),
    ]
    assert parsed.text == "see attached"
    assert [(a.part_path, a.filename, a.is_message) for a in parsed.attachments] == [
        ("2", "fw.eml", True),
        ("3", None, True),
    ]
    assert attachment_file_names(parsed) == ["fw.eml"]
    assert parsed.parts[3].header("subject") == "inner"
    assert parsed.parts[7].text == "just text"
    assert parsed.attachments[0].size > 100


def test_base64_encoded_attached_message_is_decoded() -> None:
    import base64

    inner = b"From: x@example.com\r\nSubject: encoded inner\r\n\r\ninner body\r\n"
    encoded = base64.encodebytes(inner)
    data = mail(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="b"',
        body=b"--b\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        + encoded
        + b"--b--\n",
    )
    parsed = parse_bytes(data, LIMITS)
    assert [(p.path, p.content_type) for p in parsed.parts] == [
        ("", "multipart/mixed"),
        ("1", "message/rfc822"),
        ("1.1", "text/plain"),
    ]
    assert parsed.parts[2].header("subject") == "encoded inner"
    assert parsed.parts[2].text == "inner body\n"
    assert "1: message/rfc822 part has Content-Transfer-Encoding base64; decoded" in parsed.defects


def test_report_parts_keep_their_text() -> None:
    data = mail(
        "From: MAILER-DAEMON@example.com",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"',
        body=(
            b"--r\nContent-Type: text/plain\n\nfailed\n"
            b"--r\nContent-Type: message/delivery-status\n\n"
            b"Reporting-MTA: dns; mx.example.com\n\n"
            b"Final-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n"
            b"Diagnostic-Code: smtp; 550 5.1.1\n  user unknown\n"
            b"--r\nContent-Type: text/rfc822-headers\n\nMessage-ID: <orig@example.com>\n"
            b"--r--\n"
        ),
    )
    parsed = parse_bytes(data, LIMITS)
    status = parsed.parts[2]
    assert status.content_type == "message/delivery-status"
    assert status.text == (
        "Reporting-MTA: dns; mx.example.com\n\n"
        "Final-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1\n  user unknown"
    )
    assert parsed.parts[3].text == "Message-ID: <orig@example.com>"
    assert parsed.text == "failed"


def test_a_multipart_without_parts_keeps_its_content_as_text() -> None:
    data = mail(
        "From: MAILER-DAEMON@example.com",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="never-used"',
        body=b"This message was undeliverable.\n\nx@example.org: 550 5.1.1 user unknown\n",
    )
    parsed = parse_bytes(data, LIMITS)
    [root] = parsed.parts
    assert root.content_type == "multipart/report"  # what was declared
    assert root.text == "This message was undeliverable.\n\nx@example.org: 550 5.1.1 user unknown\n"
    assert parsed.text == root.text  # the agent sees what a mail client would show
    assert "multipart/report without parts; kept as text" in " ".join(parsed.defects)


def test_part_text_is_bounded() -> None:
    data = mail("From: a@example.com", body=b"x" * 5000)
    parsed = parse_bytes(data, ParseLimits(max_part_text=100))
    assert parsed.parts[0].text == "x" * 100
    assert parsed.text == "x" * 5000


# ------------------------------------------------------------------ wrapping


def test_oversized_by_server_size_reads_only_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = mail("Subject: big one", "From: Big <big@example.com>", body=b"x" * 10_000)
    ref = raw_ref(tmp_path, data)
    monkeypatch.setattr(RawRef, "read", lambda self: pytest.fail("the body was read"))
    limits = ParseLimits(max_size=10_485_760, default_domain="example.org")
    parsed = parse_message(ref, limits, server_size=12_345_678)
    assert_wrapped(
        parsed,
        "message size 12345678 bytes exceeds maximum-msg-size 10485760 bytes",
        size=len(data),
    )
    assert parsed.subject == "big one"
    assert parsed.from_addr == "big@example.com"
    assert parsed.from_name == "Big"


def test_oversized_by_raw_size(tmp_path: Path) -> None:
    data = mail("From: not an address", body=b"y" * 2000)
    parsed = parse_message(raw_ref(tmp_path, data), ParseLimits(max_size=1000))
    reason = f"message size {len(data)} bytes exceeds maximum-msg-size 1000 bytes"
    assert_wrapped(parsed, reason, size=len(data))
    assert parsed.subject == UNKNOWN_SUBJECT
    assert parsed.from_addr == "unknown@localhost"
    assert parsed.from_name is None


def test_size_within_limit_is_parsed(tmp_path: Path) -> None:
    data = mail("From: a@example.com", "Subject: small")
    parsed = parse_message(raw_ref(tmp_path, data), ParseLimits(max_size=len(data)), len(data))
    assert not parsed.is_wrapped
    assert parsed.subject == "small"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "message is empty"),
        (b"\n\n  \n", "message is empty"),
        (b"\nSubject: late\n\nbody", "no header block found: the message begins with a blank line"),
        (
            b"Hello, this is just text\nwith no headers\n",
            "no header block found: the message does not begin with a header field",
        ),
        (
            bytes(range(256)) * 4,
            "no header block found: the message does not begin with a header field",
        ),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "no header block found: the message does not begin with a header field",
        ),
    ],
)
def test_no_header_block_is_wrapped(data: bytes, reason: str) -> None:
    parsed = parse_bytes(data, ParseLimits(default_domain="cc.example"))
    assert_wrapped(parsed, reason, size=len(data))
    assert parsed.subject == UNKNOWN_SUBJECT
    assert parsed.from_addr == "unknown@cc.example"
    assert parsed.headers == []


def test_nul_in_headers_is_wrapped_keeping_readable_headers() -> None:
    data = b"Subject: still readable\nFrom: a@example.com\nX-Bad: a\x00b\n\nbody\n"
    parsed = parse_bytes(data, LIMITS)
    assert_wrapped(parsed, "NUL bytes in the header block", size=len(data))
    assert parsed.subject == "still readable"
    assert parsed.from_addr == "a@example.com"
    assert parsed.header("x-bad") is None


def test_nul_in_body_is_not_a_problem() -> None:
    parsed = parse_bytes(mail("From: a@example.com", body=b"a\x00b"), LIMITS)
    assert not parsed.is_wrapped


def test_header_block_too_large_is_wrapped() -> None:
    data = b"Subject: s\n" + b"X-Filler: " + b"a" * 3000 + b"\n" + b"\nbody"
    parsed = parse_bytes(data, ParseLimits(max_header_bytes=1000))
    assert_wrapped(parsed, "header block larger than 1000 bytes")


def test_missing_separator_with_readable_headers_is_a_lesser_defect() -> None:
    data = b"From: a@example.com\nSubject: no blank line\nthis is the body\nmore body\n"
    parsed = parse_bytes(data, LIMITS)
    assert not parsed.is_wrapped
    assert parsed.subject == "no blank line"
    assert parsed.text == "this is the body\nmore body\n"
    assert "root: MissingHeaderBodySeparatorDefect" in parsed.defects


def test_headers_only_message_is_fine() -> None:
    parsed = parse_bytes(b"From: a@example.com\nSubject: only headers\n", LIMITS)
    assert not parsed.is_wrapped
    assert parsed.subject == "only headers"


def test_mbox_from_line_is_skipped() -> None:
    data = b"From someone@example.com Mon Jan  1 00:00:00 2024\nSubject: mbox\n\nbody\n"
    parsed = parse_bytes(data, LIMITS)
    assert not parsed.is_wrapped
    assert parsed.subject == "mbox"


def nested_multipart(levels: int) -> bytes:
    head = b"From: a@example.com\nSubject: deep\n"
    chain = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(levels)
    )
    return head + chain + b"Content-Type: text/plain\n\nleaf\n"


def nested_messages(levels: int) -> bytes:
    head = b"From: a@example.com\nSubject: deep\n"
    return head + b"Content-Type: message/rfc822\n\nSubject: x\n" * levels + b"\nleaf\n"


@pytest.mark.parametrize("build", [nested_multipart, nested_messages])
def test_ten_thousand_levels_are_wrapped_quickly(build: Callable[[int], bytes]) -> None:
    data = build(10_000)
    started = time.monotonic()
    parsed = parse_bytes(data, LIMITS)
    assert time.monotonic() - started < 5
    assert_wrapped(parsed, "MIME nesting deeper than 20 levels", size=len(data))
    assert parsed.subject == "deep"


@pytest.mark.parametrize("build", [nested_multipart, nested_messages])
def test_nesting_up_to_the_limit_is_parsed(build: Callable[[int], bytes]) -> None:
    parsed = parse_bytes(build(20), LIMITS)
    assert not parsed.is_wrapped
    assert max(p.depth for p in parsed.parts) == 20
    assert parse_bytes(build(21), LIMITS).wrapping_reason == "MIME nesting deeper than 20 levels"


def many_parts(count: int) -> bytes:
    return (
        b'From: a@example.com\nContent-Type: multipart/mixed; boundary="x"\n\n'
        + b"--x\nContent-Type: application/octet-stream\n\nhi\n" * count
        + b"--x--\n"
    )


def test_five_thousand_parts_are_wrapped() -> None:
    started = time.monotonic()
    parsed = parse_bytes(many_parts(5000), LIMITS)
    assert time.monotonic() - started < 5
    assert_wrapped(parsed, "more than 1000 MIME parts")


def test_parts_up_to_the_limit_are_parsed() -> None:
    parsed = parse_bytes(many_parts(999), LIMITS)
    assert not parsed.is_wrapped
    assert len(parsed.parts) == 1000
    assert len(parsed.attachments) == 999
    assert parse_bytes(many_parts(1000), LIMITS).wrapping_reason == "more than 1000 MIME parts"


def test_parser_exception_becomes_wrapping_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object, root: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(parser_module._Parse, "build", boom)
    parsed = parse_bytes(mail("From: a@example.com", "Subject: kept"), LIMITS)
    assert_wrapped(parsed, "parser error: ValueError: boom")
    assert parsed.subject == "kept"


def test_wrapping_message_without_subject_gets_unknown_subject() -> None:
    parsed = parse_bytes(nested_multipart(30).replace(b"Subject: deep\n", b""), LIMITS)
    assert parsed.is_wrapped
    assert parsed.subject == UNKNOWN_SUBJECT
    assert parsed.from_addr == "a@example.com"


# ----------------------------------------------------------------- charsets


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        ("utf8", "Grüße €".encode(), "Grüße €"),
        ("latin1", "Grüße".encode("latin-1"), "Grüße"),
        ("cp-1252", "Grüße €".encode("cp1252"), "Grüße €"),
        ("windows-1252", "“quotes”".encode("cp1252"), "“quotes”"),
        ("iso-8859-1", "€uro".encode("cp1252"), "€uro"),
        ("ks_c_5601-1987", "한국어 테스트".encode("cp949"), "한국어 테스트"),
        ("gb2312", "中文测试邮件".encode("gb18030"), "中文测试邮件"),
        ("iso-8859-8-i", "שלום".encode("iso-8859-8"), "שלום"),
        ("shift_jis", "日本語①".encode("cp932"), "日本語①"),
        ('"UTF-8"', "quoted é".encode(), "quoted é"),
    ],
)
def test_charset_aliases_just_work(charset: str, body: bytes, expected: str) -> None:
    data = mail("From: a@example.com", f"Content-Type: text/plain; charset={charset}", body=body)
    parsed = parse_bytes(data, LIMITS)
    assert parsed.text == expected
    assert parsed.defects == []


def test_seven_bit_charsets_are_decoded() -> None:
    jis = mail(
        "From: a@example.com",
        "Content-Type: text/plain; charset=ISO-2022-JP",
        body="こんにちは、世界".encode("iso2022_jp"),
    )
    assert parse_bytes(jis, LIMITS).text == "こんにちは、世界"
    utf7 = mail(
        "From: a@example.com",
        "Content-Type: text/plain; charset=utf-7",
        body="Hi ☺".encode("utf-7"),
    )
    assert parse_bytes(utf7, LIMITS).text == "Hi ☺"
    undeclared = mail("From: a@example.com", body="ユーザー".encode("iso2022_jp"))
    parsed = parse_bytes(undeclared, LIMITS)
    assert parsed.text == "ユーザー"
    assert parsed.defects == ["root: charset undeclared, decoded as iso-2022-jp"]
    raw_subject = b"From: a@example.com\nSubject: " + "テスト".encode("iso2022_jp") + b"\n\nx"
    assert parse_bytes(raw_subject, LIMITS).subject == "テスト"


def test_wrong_us_ascii_is_repaired_with_a_defect() -> None:
    data = mail(
        "From: a@example.com",
        "Content-Type: text/plain; charset=us-ascii",
        body="Sehr geehrte Damen und Herren, vielen Dank für Ihre Nachricht.".encode("cp1252"),
    )
    parsed = parse_bytes(data, LIMITS)
    assert parsed.text == "Sehr geehrte Damen und Herren, vielen Dank für Ihre Nachricht."
    assert parsed.defects == ["root: charset 'us-ascii' was wrong, decoded as windows-1252"]


def test_undeclared_utf8_is_decoded_with_a_defect() -> None:
    parsed = parse_bytes(mail("From: a@example.com", body="naïve café".encode()), LIMITS)
    assert parsed.text == "naïve café"
    assert parsed.defects == ["root: charset undeclared, decoded as utf-8"]


def test_unknown_charset_is_detected() -> None:
    data = mail(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="b"',
        body=(
            b"--b\nContent-Type: text/plain; charset=x-unknown\n\n"
            + "Привет, как дела? Это тестовое сообщение.".encode("koi8-r")
            + b"\n--b--\n"
        ),
    )
    parsed = parse_bytes(data, LIMITS)
    assert parsed.text == "Привет, как дела? Это тестовое сообщение."
    assert parsed.defects == ["1: unknown charset 'x-unknown', decoded as koi8-r"]


def test_latin1_label_over_utf8_bytes_is_repaired() -> None:
    data = mail(
        "From: a@example.com",
        "Content-Type: text/plain; charset=iso-8859-1",
        body="déjà vu".encode(),
    )
    parsed = parse_bytes(data, LIMITS)
    assert parsed.text == "déjà vu"
    assert parsed.defects == ["root: charset 'iso-8859-1' was wrong, decoded as utf-8"]


def test_declared_utf8_with_latin1_bytes_uses_the_messages_other_charset() -> None:
    data = mail(
        "From: a@example.com",
        "Subject: =?iso-8859-2?q?Dzi=EAkuj=EA?=",
        "Content-Type: text/plain; charset=utf-8",
        body="Dziękuję bardzo".encode("iso-8859-2"),
    )
    parsed = parse_bytes(data, LIMITS)
    assert parsed.subject == "Dziękuję"
    assert parsed.text == "Dziękuję bardzo"
    assert parsed.defects == ["root: charset 'utf-8' was wrong, decoded as iso-8859-2"]


def test_html_meta_charset_is_used_when_undeclared() -> None:
    body = '<html><head><meta charset="windows-1251"></head>Привет</html>'.encode("cp1251")
    parsed = parse_bytes(mail("From: a@example.com", "Content-Type: text/html", body=body), LIMITS)
    assert parsed.html == '<html><head><meta charset="windows-1251"></head>Привет</html>'


def test_raw_utf8_headers_are_legal_and_latin1_headers_are_repaired() -> None:
    data = "From: Jörg <j@example.com>\nSubject: Grüße\n\nbody".encode()
    parsed = parse_bytes(data, LIMITS)
    assert (parsed.subject, parsed.from_name, parsed.defects) == ("Grüße", "Jörg", [])
    data = "From: Jörg <j@example.com>\nSubject: Grüße aus Köln\n\nbody".encode("latin-1")
    parsed = parse_bytes(data, LIMITS)
    assert (parsed.subject, parsed.from_name) == ("Grüße aus Köln", "Jörg")
    assert "root: header Subject is not UTF-8, decoded as windows-1252" in parsed.defects


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("=?utf-8?q?Hello_World?=", "Hello World"),
        ("=?utf-8?q?this is some text?=", "this is some text"),  # blanks inside
        ("=?UTF-8?B?VGhpcyBpcyB0aGUgb3JpZ2luYWwgc3ViamVjdA?=", "This is the original subject"),
        ("[SPAM]=?utf-8?B?aGVsbG8=?=", "[SPAM] hello"),
        ("=?utf-8?B?w6k=?==?utf-8?B?w6k=?=", "éé"),
        ("=?utf-8?q?=C3?= =?utf-8?q?=A9t=C3=A9?=", "été"),  # a character split in two words
        ("=?unknown-8bit?q?caf=E9?=", "café"),
        ("=?utf-8*en?q?lang?=", "lang"),
        ("Re: =?utf-8?q?truncated", "Re: truncated"),
        ("=?x?q?Ok?= =?", "Ok =?"),
        ("plain =? text", "plain =? text"),
    ],
)
def test_malformed_encoded_word_subjects(raw: str, expected: str) -> None:
    parsed = parse_bytes(mail("From: a@example.com", f"Subject: {raw}"), LIMITS)
    assert parsed.subject == expected


# ----------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("value", "addr", "name"),
    [
        ("John Doe <john@example.com>", "john@example.com", "John Doe"),
        ("john@example.com (John Doe)", "john@example.com", None),
        ('"John <john@example.com>', "john@example.com", None),  # unclosed quote
        ("John Doe <john@example.com", "john@example.com", None),  # unclosed bracket
        ("<john@ example.com>", "john@example.com", None),
        ("John Doe john@example.com", "john@example.com", None),
        ('"Doe, John" <John.Doe@Example.COM>', "John.Doe@Example.COM", "Doe, John"),
        ("=?utf-8?q?M=C3=BCller?= <m@example.com>", "m@example.com", "Müller"),
        ('"=?utf-8?q?M=C3=BCller?=" <m@example.com>', "m@example.com", "Müller"),
        ("Moderator <moderator>", "moderator", "Moderator"),
    ],
)
def test_from_addresses_are_salvaged(value: str, addr: str, name: str | None) -> None:
    parsed = parse_bytes(mail(f"From: {value}"), LIMITS)
    assert parsed.from_addr == addr
    if name is not None:
        assert parsed.from_name == name


def test_from_without_any_address() -> None:
    parsed = parse_bytes(mail("From: Whomever", "Subject: s"), LIMITS)
    assert parsed.from_addr is None
    assert not parsed.is_wrapped


def test_recipient_lists_are_flattened_and_salvaged() -> None:
    parsed = parse_bytes(
        mail(
            "To: List 1: a1@test.com, a2@test.com; List 2: a3@test.com; a4@test.com",
            "To: second@example.com",
            "Cc: broken <<c1@example.com>>, c2@example.com, , ;",
        ),
        LIMITS,
    )
    assert parsed.to == [
        "a1@test.com",
        "a2@test.com",
        "a3@test.com",
        "a4@test.com",
        "second@example.com",
    ]
    assert parsed.cc == ["c1@example.com", "c2@example.com"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Message-ID: <abc@host>", "<abc@host>"),
        ("Message-ID: abc@host", "<abc@host>"),
        ("Message-ID:   <abc@host>   (comment)", "<abc@host>"),
        ("Message-ID: (comment) abc@host", "<abc@host>"),
        ("Message-ID: < abc@host >", "<abc@host>"),
        ("Message-ID: <abc\n @host>", "<abc@host>"),
        ("Message-ID: <>", None),
        ("Message-ID:", None),
    ],
)
def test_message_id_normalisation(header: str, expected: str | None) -> None:
    parsed = parse_bytes(mail("From: a@example.com", header), LIMITS)
    assert parsed.message_id == expected


def test_reply_ids_ignore_surrounding_text() -> None:
    parsed = parse_bytes(
        mail(
            "From: a@example.com",
            'In-Reply-To: Your message of "Mon, 1 Jan 2024" <x@y>',
            "References: a@b, c@d junk",
        ),
        LIMITS,
    )
    assert parsed.in_reply_to == ["<x@y>"]
    assert parsed.references == ["<a@b>", "<c@d>"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "Tue, 1 Jul 2003 10:52:37 +0200",
            datetime(2003, 7, 1, 10, 52, 37, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("1 Jul 2003 10:52:37 -0000", datetime(2003, 7, 1, 10, 52, 37, tzinfo=UTC)),
        ("Tue, 1 Jul 2003 (c) 10:52:37 GMT", datetime(2003, 7, 1, 10, 52, 37, tzinfo=UTC)),
        ("not a date", None),
    ],
)
def test_dates_are_aware(value: str, expected: datetime | None) -> None:
    parsed = parse_bytes(mail("From: a@example.com", f"Date: {value}"), LIMITS)
    assert parsed.date == expected
    if parsed.date is not None:
        assert parsed.date.tzinfo is not None


# ------------------------------------------------------------ header repairs


def test_content_type_without_semicolon_still_finds_the_boundary() -> None:
    data = mail(
        "From: a@example.com",
        'Content-Type: multipart/mixed\n\tboundary="bb"',
        body=b"--bb\nContent-Type: image/png\n\nPNG\n--bb--\n",
    )
    parsed = parse_bytes(data, LIMITS)
    assert [p.content_type for p in parsed.parts] == ["multipart/mixed", "image/png"]
    assert parsed.parts[0].param("boundary") == "bb"


def test_blank_before_colon_in_field_name_is_accepted() -> None:
    parsed = parse_bytes(b"Subject : spaced\nFrom : a@example.com\n\nbody\n", LIMITS)
    assert not parsed.is_wrapped
    assert (parsed.subject, parsed.from_addr) == ("spaced", "a@example.com")


def test_odd_to_header_does_not_break_the_message() -> None:
    # policy.default raises AttributeError for this value (a group after a list)
    data = mail(
        "From: a@example.com",
        "To: x@example.com, Group: y@example.com;",
        "Subject: still fine",
    )
    parsed = parse_bytes(data, LIMITS)
    assert not parsed.is_wrapped
    assert parsed.to == ["x@example.com", "y@example.com"]


def test_defects_are_listed_per_part() -> None:
    data = mail(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="b"',
        body=(
            b"--b\nContent-Type: text/plain\n\nhi\n"
            b"--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
            b"aGVsbG8\n"
        ),
    )
    parsed = parse_bytes(data, LIMITS)
    assert not parsed.is_wrapped
    assert "root: CloseBoundaryNotFoundDefect" in parsed.defects
    assert any(d.startswith("2: InvalidBase64PaddingDefect") for d in parsed.defects)
    assert parsed.attachments[0].size == 5


# -------------------------------------------------------------- robustness


def test_result_pickles() -> None:
    data = mail(
        "From: a@example.com",
        "Date: Mon, 3 Feb 2025 10:00:00 +0100",
        'Content-Type: multipart/mixed; boundary="b"',
        body=b"--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: image/gif\n\nGIF\n--b--\n",
    )
    for parsed in (parse_bytes(data, LIMITS), parse_bytes(b"\x00garbage", LIMITS)):
        again = pickle.loads(pickle.dumps(parsed))
        assert again == parsed
        assert isinstance(again, ParsedMessage)


def test_read_errors_are_not_bad_input(tmp_path: Path) -> None:
    ref = RawRef(path=str(tmp_path / "missing.eml"), size=10, sha256="0" * 64)
    with pytest.raises(OSError):
        parse_message(ref, LIMITS)


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        ParseLimits(max_size=-1)
    with pytest.raises(ValueError):
        ParseLimits(max_depth=0)
    with pytest.raises(ValueError):
        ParseLimits(max_parts=0)
    assert ParseLimits().default_domain == "localhost"
    FetchedMessage(mailbox="m", source_key="k", raw=RawRef("p", 0, ""))

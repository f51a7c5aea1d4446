"""Hostile header input: parsing time grows linearly, and the result is right.

Each input family of issue 8 that reaches the parser (and the traps of the
same kind found in the parsing package) gets a growth-rate test
(:func:`tests.linear.assert_linear`: time at 2N below three times the time at
N) and a check that the message is read, not wrapped, with the right fields.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from postroom.model import ParsedMessage
from postroom.parsing import ParseLimits, charsets, headers, parse_bytes
from postroom.parsing.headers import (
    MAX_STRUCTURED_PER_MESSAGE,
    Address,
    collapse,
    decode_words,
    parse_addresses,
    parse_content_type,
    parse_date,
    parse_message_ids,
)
from tests.linear import assert_linear, best_time

LIMITS = ParseLimits()
#: The largest size tried for a header value read outside a message.
HEADER_MAX = 1 << 19


def parse(data: bytes) -> ParsedMessage:
    return parse_bytes(data, LIMITS)


def message(*headers: bytes, body: bytes = b"body\r\n") -> bytes:
    return b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def multipart(part_headers: bytes, *, ctype: bytes = b"multipart/mixed; boundary=B") -> bytes:
    """A two-part message whose first part has *part_headers*."""
    return message(
        b"From: a@example.com",
        b"Subject: s",
        b"Content-Type: " + ctype,
        body=(
            b"--B\r\n" + part_headers + b"\r\n\r\nhello\r\n"
            b"--B\r\nContent-Type: application/pdf; name=x.pdf\r\n\r\nPDF\r\n--B--\r\n"
        ),
    )


def linear(make: Callable[[int], bytes], *, start: int = 1000) -> None:
    """:func:`assert_linear` of :func:`parse`, with sizes whose 2N input stays
    below the header cap (a larger one is wrapped, which measures nothing)."""
    largest = start
    while len(make(4 * largest)) < LIMITS.max_header_bytes:
        largest *= 2
    assert_linear(make, parse, start=start, max_size=largest)


# ------------------------------------------------------- runs of blanks


def long_subject(n: int) -> bytes:
    return message(b"From: a@example.com", b"Subject: a" + b" " * n + b" b")


def test_run_of_spaces_in_a_header_is_linear() -> None:
    linear(long_subject, start=4000)
    parsed = parse(long_subject(40_000))
    assert not parsed.is_wrapped
    assert parsed.subject == "a" + " " * 40_001 + "b"


def test_collapse_keeps_blanks_without_folds_and_joins_folds() -> None:
    assert collapse("a  \r\n \t b\r\n c") == "a b c"
    assert collapse("a  b") == "a  b"
    assert collapse(" a \n") == " a "


def spaced_params(n: int) -> bytes:
    return b"Content-Type: text/plain; charset=utf-8" + b" " * n + b" format=flowed"


def test_run_of_spaces_in_content_type_is_linear() -> None:
    linear(lambda n: message(b"Subject: s", spaced_params(n)), start=4000)
    parsed = parse(message(b"Subject: s", spaced_params(40_000)))
    assert parsed.parts[0].params == (("charset", "utf-8"), ("format", "flowed"))


def test_run_of_spaces_in_part_headers_is_linear() -> None:
    def make(n: int) -> bytes:
        return multipart(spaced_params(n) + b"\r\nX-Note: a" + b" " * n + b" b")

    linear(make, start=4000)
    parsed = parse(make(40_000))
    assert not parsed.is_wrapped
    assert parsed.text == "hello"
    part = parsed.parts[1]
    assert part.params == (("charset", "utf-8"), ("format", "flowed"))
    assert dict(part.headers)["X-Note"] == "a" + " " * 40_001 + "b"
    assert [a.filename for a in parsed.attachments] == ["x.pdf"]


def test_long_token_after_the_type_is_linear() -> None:
    # "text/plain 1111...": the missing-";" repair must not retry every split
    linear(lambda n: message(b"Content-Type: text/plain 1" + b"1" * n), start=4000)
    parsed = parse(message(b"Content-Type: text/plain 1" + b"1" * 40_000))
    assert not parsed.is_wrapped
    assert parsed.text == "body\n"


def test_part_header_block_is_bounded() -> None:
    limits = ParseLimits(max_header_bytes=64 * 1024)
    big = multipart(b"X-Note: " + b"x" * 70_000)
    parsed = parse_bytes(big, limits)
    assert parsed.wrapping_reason == "header block of a MIME part larger than 65536 bytes"
    assert parsed.subject == "s"  # the top-level headers still show
    assert not parse_bytes(multipart(b"X-Note: " + b"x" * 60_000), limits).is_wrapped


def test_header_block_of_an_attached_message_is_bounded() -> None:
    limits = ParseLimits(max_header_bytes=64 * 1024)
    inner = b"Subject: inner\r\nX-Note: " + b"x" * 70_000 + b"\r\n\r\ninner body\r\n"
    data = message(
        b"Subject: s",
        b"Content-Type: multipart/mixed; boundary=B",
        body=b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--B--\r\n",
    )
    parsed = parse_bytes(data, limits)
    assert parsed.wrapping_reason == "header block of a MIME part larger than 65536 bytes"


# ------------------------------------------------------------ many items


def references(n: int) -> bytes:
    ids = b" ".join(b"<id%d@example.com>" % i for i in range(n))
    return message(b"Subject: s", b"References: " + ids, b"In-Reply-To: " + ids)


def test_references_with_many_ids_are_linear() -> None:
    linear(references, start=2000)
    parsed = parse(references(20_000))
    assert len(parsed.references) == 20_000
    assert parsed.references[0] == "<id0@example.com>"
    assert parsed.references[-1] == "<id19999@example.com>"
    assert parsed.in_reply_to == parsed.references


def test_repeated_ids_are_kept_once() -> None:
    assert parse_message_ids("<a@x> <b@x> <a@x> b@x") == ["<a@x>", "<b@x>"]


def quote_pairs(n: int, *, fields: tuple[bytes, ...] = (b"To",)) -> bytes:
    value = b'"a' * (2 * n) + b", real@example.com"
    return message(b"From: a@example.com", b"Subject: s", *(f + b": " + value for f in fields))


def test_address_list_of_quote_pairs_is_linear() -> None:
    linear(quote_pairs, start=2000)
    parsed = parse(quote_pairs(30_000))
    assert not parsed.is_wrapped
    assert parsed.to == ["real@example.com"]


def test_three_address_fields_of_quote_pairs_are_linear() -> None:
    fields = (b"To", b"Cc", b"Reply-To")
    linear(lambda n: quote_pairs(n, fields=fields), start=2000)
    parsed = parse(quote_pairs(30_000, fields=fields))
    assert parsed.to == parsed.cc == parsed.reply_to == ["real@example.com"]


def many_recipients(n: int) -> bytes:
    listed = b", ".join(b"recipient%06d@example.com" % i for i in range(n))
    return message(b"From: a@example.com", b"Subject: s", b"To: " + listed, b"Cc: " + listed)


def test_many_recipients_are_linear() -> None:
    # each address was looked up in a list of those found before it
    linear(many_recipients, start=4000)
    parsed = parse(many_recipients(10_000))
    assert len(parsed.to) == 10_000
    assert parsed.to[0] == "recipient000000@example.com"
    assert parsed.to[-1] == "recipient009999@example.com"
    assert parsed.cc == parsed.to


def test_long_list_of_short_broken_items_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    # each "<a@" is an item the structured parser takes ~80 µs on: it reads a
    # bounded amount of text per message
    linear(lambda n: message(b"From: a@example.com", b"Cc: " + b"<a@" * n), start=1000)
    given: list[int] = []
    read_list = headers._read_list

    def counting(text: str) -> list[Address]:
        given.append(len(text))
        return read_list(text)

    monkeypatch.setattr(headers, "_read_list", counting)
    data = message(b"To: " + b"<a@" * 20_000 + b", b@example.com", b"Cc: " + b"<a@" * 20_000)
    assert parse(data).to == ["b@example.com"]
    assert sum(given) <= MAX_STRUCTURED_PER_MESSAGE


def test_long_address_list_reads_item_by_item() -> None:
    names = ", ".join(f'"Last{i}, First" <u{i}@example.com>' for i in range(500))
    found = parse_addresses(names + ", Team: t@example.com, s@example.com;, bare@example.com")
    assert [a.addr for a in found] == [
        *(f"u{i}@example.com" for i in range(500)),
        "t@example.com",
        "s@example.com",
        "bare@example.com",
    ]
    # display names come from the structured parser while its budget lasts
    assert found[0].name == "Last0, First"
    assert len(names) > MAX_STRUCTURED_PER_MESSAGE
    assert found[499].name is None


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        # an escaped quote after each quote: every one of them is unclosed
        (lambda n: '"' + '\\"' * n + " b@example.com", ["b@example.com"]),
        (lambda n: "x, " + '\\"' * n + " b@example.com", ["b@example.com"]),
        # a long run of address characters without a domain
        (lambda n: "a" * n + " @ b@example.com", ["b@example.com"]),
        # a long "source route" of @s: exponential with a nested repeat
        (lambda n: "x <" + "@" * n + "a@example.com>, b@example.com", ["b@example.com"]),
    ],
    ids=["escaped-quotes", "escaped-quotes-after", "long-token", "route-ats"],
)
def test_hostile_address_text_is_linear(make: Callable[[int], str], expected: list[str]) -> None:
    assert_linear(make, parse_addresses, start=1000, max_size=HEADER_MAX)
    assert [a.addr for a in parse_addresses(make(5000))] == expected


# ------------------------------------------------------------ 8-bit bytes


def eight_bit_headers(n: int) -> bytes:
    return message(b"Subject: s", *(b"X-Note-%d: caf\xe9 cr\xe8me" % i for i in range(n)))


def test_many_headers_in_8bit_bytes_are_linear() -> None:
    linear(eight_bit_headers, start=1000)
    parsed = parse(eight_bit_headers(20_000))
    assert not parsed.is_wrapped
    notes = [(k, v) for k, v in parsed.headers if k.startswith("X-Note-")]
    assert len(notes) == 20_000
    assert notes[0] == ("X-Note-0", "café crème")
    assert notes[-1] == ("X-Note-19999", "café crème")


def count_detections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the data :func:`charsets.detect` is called with, from now on."""
    calls: list[int] = []
    detect = charsets.detect

    def counting(data: bytes) -> str | None:
        calls.append(len(data))
        return detect(data)

    monkeypatch.setattr(charsets, "detect", counting)
    return calls


def test_charset_detections_are_bounded_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_detections(monkeypatch)
    parsed = parse(eight_bit_headers(1000))
    assert len(calls) <= charsets.MAX_DETECTIONS
    assert dict(parsed.headers)["X-Note-999"] == "café crème"


def test_8bit_header_texts_are_decoded_like_before() -> None:
    # under the budget each field is repaired on its own, as always
    cyrillic = "Привет, как дела? Всё хорошо.".encode("cp1251")
    parsed = parse(message(b"Subject: caf\xe9", b"X-Cyrillic: " + cyrillic))
    assert parsed.subject == "café"
    assert dict(parsed.headers)["X-Cyrillic"] == charsets.repair(cyrillic)[0]


# --------------------------------------------------------- encoded-words


def test_many_invalid_encoded_words_are_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    # each word's bytes are not UTF-8: each needed a charset detection
    def make(n: int) -> bytes:
        return message(b"Subject: " + b"=?utf-8?q?caf=E9?= x " * n)

    linear(make, start=500)
    calls = count_detections(monkeypatch)
    assert parse(make(5000)).subject == ("café x " * 5000).strip()
    assert len(calls) <= charsets.MAX_DETECTIONS


def test_adjacent_encoded_words_are_joined_once() -> None:
    # adjacent words in one charset are joined as bytes before decoding: once,
    # not by adding each word's bytes to those of the words before it
    text = "café!" * 250
    word = "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?= "
    assert_linear(lambda n: word * n, decode_words, start=1600, max_size=8192)
    assert decode_words(word * 1000) == text * 1000
    assert parse(message(b"Subject: =?utf-8?q?caf=C3?= =?utf-8?q?=A9?=")).subject == "café"


def test_encoded_words_in_many_unknown_charsets_are_linear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def make(n: int) -> bytes:
        return message(b"Subject: " + b" ".join(b"=?x-cs%d?q?caf=E9?=" % i for i in range(n)))

    linear(make, start=500)
    calls = count_detections(monkeypatch)
    assert parse(make(5000)).subject == "café" * 5000
    assert len(calls) <= charsets.MAX_DETECTIONS


# ---------------------------------------------------- Content-Type params


@pytest.mark.parametrize(
    "param",
    [b'; boundary="B"', b"; name*=utf-8''x", b"; name*0*=x", b";", b" a=b", b' a="b"'],
    ids=["repeated", "rfc2231", "sections", "semicolons", "no-semicolon", "no-semicolon-quoted"],
)
def test_content_type_with_thousands_of_parameters_is_linear(param: bytes) -> None:
    def make(n: int) -> bytes:
        return multipart(
            b"Content-Type: text/plain", ctype=b"multipart/mixed; boundary=B" + param * n
        )

    linear(make, start=500)
    parsed = parse(make(10_000))
    assert not parsed.is_wrapped
    assert [p.content_type for p in parsed.parts] == [
        "multipart/mixed",
        "text/plain",
        "application/pdf",
    ]
    assert parsed.text == "hello"
    # The old reading grew about as n^1.6, too slowly for the growth rule to
    # see, but was 25-250 times slower here than for one long parameter.
    value = b"p" * (len(param) * 10_000 - 6)
    ordinary = make(0).replace(b"boundary=B", b'boundary=B; x="' + value + b'"', 1)
    assert len(ordinary) == len(make(10_000))
    assert best_time(parse, make(10_000)) < 10 * best_time(parse, ordinary)


def test_content_type_with_semicolons_in_a_quoted_value_is_linear() -> None:
    # the email package's own parameter reading counts quotes from the start
    # once per ";" inside quotes
    def make(n: int) -> bytes:
        ctype = b'multipart/mixed; a="' + b";" * n + b'"; boundary=B'
        return multipart(b"Content-Type: text/plain", ctype=ctype)

    linear(make, start=2000)
    parsed = parse(make(100_000))
    assert [p.content_type for p in parsed.parts] == [
        "multipart/mixed",
        "text/plain",
        "application/pdf",
    ]


def test_content_type_with_many_trailing_comments_is_linear() -> None:
    def make(n: int) -> str:
        return "text/plain; charset=utf-8" + " (c)" * n

    assert_linear(make, parse_content_type, start=1000, max_size=HEADER_MAX)
    assert parse_content_type(make(10_000)).params == (("charset", "utf-8"),)
    parsed = parse(message(b"Content-Type: " + make(10_000).encode()))
    assert parsed.parts[0].params == (("charset", "utf-8"),)


def test_parameters_repeated_without_semicolons_are_bounded() -> None:
    parsed = parse_content_type("text/plain; a=1" + " a=2" * 50_000 + " b=3")
    assert parsed.params == (("a", "1"),)


# ----------------------------------------------------------------- dates


def test_date_with_a_run_of_blanks_is_linear() -> None:
    # "\s*[-\s]\s*" between the day and the month split a run every way
    def make(n: int) -> bytes:
        return message(b"Date: 1" + b" " * n + b"x")

    linear(make, start=2000)
    assert parse(make(10_000)).date is None
    assert parse_date("Mon, 3 -  Feb - 2025 10:00 +0100") is not None


# ------------------------------------------------ 8-bit bytes, not errors


def test_boundary_with_an_8bit_byte_splits_the_parts() -> None:
    data = multipart(b"Content-Type: text/plain", ctype=b'multipart/mixed; boundary="B\xe9"')
    data = data.replace(b"--B\r\n", b"--B\xe9\r\n").replace(b"--B--", b"--B\xe9--")
    parsed = parse(data)
    assert not parsed.is_wrapped
    assert [p.content_type for p in parsed.parts] == [
        "multipart/mixed",
        "text/plain",
        "application/pdf",
    ]
    assert parsed.text == "hello"
    assert parsed.parts[0].params == (("boundary", "Bé"),)


@pytest.mark.parametrize(
    "ctype",
    [
        b"multipart/mixed; boundary*=utf-8''B%C3%A9",
        b'multipart/mixed; boundary="=?utf-8?q?B=C3=A9?="',
    ],
    ids=["rfc2231", "encoded-word"],
)
def test_boundary_decoded_to_non_ascii_is_not_an_error(ctype: bytes) -> None:
    # the email package finds no such delimiter line: the content is kept as text
    data = multipart(b"Content-Type: text/plain", ctype=ctype)
    data = data.replace(b"--B\r\n", b"--B\xc3\xa9\r\n").replace(b"--B--", b"--B\xc3\xa9--")
    parsed = parse(data)
    assert not parsed.is_wrapped
    assert parsed.text is not None and "hello" in parsed.text


def bounce(fields: bytes, *, ctype: bytes = b"message/delivery-status") -> bytes:
    return message(
        b"From: MAILER-DAEMON@mx.example.org",
        b"To: sender@example.com",
        b"Subject: Undelivered Mail Returned to Sender",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B",
        body=(
            b"--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
            b"--B\r\nContent-Type: " + ctype + b"\r\n\r\n" + fields + b"\r\n--B--\r\n"
        ),
    )


@pytest.mark.parametrize(
    "group",
    [
        b"Final-Recipient: rfc822; bad@example.net\r\nRem\xf6te-MTA: dns; mx.example.net\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n",
        b"Rem\xf6te-MTA: dns; mx.example.net\r\nFinal-Recipient: rfc822; bad@example.net\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n",
    ],
    ids=["inside", "first"],
)
def test_delivery_status_field_name_with_an_8bit_byte(group: bytes) -> None:
    parsed = parse(bounce(b"Reporting-MTA: dns; mx.example.org\r\n\r\n" + group))
    assert not parsed.is_wrapped
    status = parsed.parts[2]
    assert status.content_type == "message/delivery-status"
    assert status.text is not None
    for line in (
        "Reporting-MTA: dns; mx.example.org",
        "Final-Recipient: rfc822; bad@example.net",
        "Remöte-MTA: dns; mx.example.net",
        "Action: failed",
        "Status: 5.1.1",
    ):
        assert line in status.text


def test_headers_part_with_an_8bit_field_name() -> None:
    headers = b"From: sender@example.com\r\nSubj\xe9ct: hello\r\nMessage-ID: <m1@example.com>\r\n"
    parsed = parse(bounce(headers, ctype=b"text/rfc822-headers"))
    assert not parsed.is_wrapped
    text = parsed.parts[2].text
    assert text is not None
    assert "Message-ID: <m1@example.com>" in text
    assert "Subjéct: hello" in text


def test_many_delivery_status_groups_are_linear() -> None:
    def make(n: int) -> bytes:
        groups = b"\r\n".join(
            b"Final-Recipient: rfc822; u%d@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n" % i
            for i in range(n)
        )
        return bounce(b"Reporting-MTA: dns; mx.example.org\r\n\r\n" + groups)

    assert_linear(make, parse, start=1000)
    text = parse(make(1000)).parts[2].text
    assert text is not None
    assert "Final-Recipient: rfc822; u999@example.net" in text

"""Large bodies: decoded from the raw in pieces, to the very result the email package gives.

Every comparison parses a message twice: every body through the email package
(``LARGE_BODY`` out of reach), and every non-empty body left out of the
skeleton and decoded in pieces of a few bytes (so that every seam between
pieces is crossed); the results must be equal, from bytes and from a file.
Then the memory a large message takes, as a ratio to its size.
"""

from __future__ import annotations

import base64
import collections
import gc
import quopri
import random
import re
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from postroom.model import ParsedMessage, RawRef
from postroom.parsing import ParseLimits, bodies, charsets, parse_bytes, parse_message
from postroom.parsing import parser as parser_module
from postroom.parsing.scan import LeafBody, scan_structure

LIMITS = ParseLimits()
CORPUS = (Path(__file__).parents[2] / ".." / "shared" / "corpus").resolve()
MiB = 1 << 20

Parse = Callable[[bytes], ParsedMessage]


@pytest.fixture
def both_ways(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Parse]:
    """Parses a message both ways, asserts the results are equal, returns one.

    ``both_ways.streamed`` counts the bodies the piecewise path decoded.
    """
    streamed: collections.Counter[str] = collections.Counter()
    decode = parser_module.transfer_decoded

    def counting(raw: Any, cte: str) -> bodies.Decoded:
        streamed["bodies"] += 1
        return decode(raw, cte)

    monkeypatch.setattr(parser_module, "transfer_decoded", counting)
    monkeypatch.setattr(bodies, "PIECE", 5)
    monkeypatch.setattr(charsets, "_PIECE", 7)

    def parse(data: bytes, limits: ParseLimits = LIMITS) -> ParsedMessage:
        monkeypatch.setattr(parser_module, "LARGE_BODY", 1 << 62)
        whole = parse_bytes(data, limits)
        monkeypatch.setattr(parser_module, "LARGE_BODY", 1)
        pieces = parse_bytes(data, limits)
        path = tmp_path / "message.eml"
        path.write_bytes(data)
        raw = RawRef.from_path(path)
        from_file = parse_message(raw, limits)
        assert pieces == whole
        assert from_file == attrs.evolve(whole, raw_sha256=raw.sha256)
        return whole

    parse.streamed = streamed  # type: ignore[attr-defined]
    yield parse


def message(*headers: str, body: bytes) -> bytes:
    return "\r\n".join(headers).encode("utf-8") + b"\r\n\r\n" + body


def multipart(*parts: bytes, boundary: str = "b", subtype: str = "mixed") -> bytes:
    inner = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return message(
        "From: a@example.com",
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"',
        body=b"preamble\r\n" + inner + b"--" + boundary.encode() + b"--\r\nepilogue\r\n",
    )


def part(*headers: str, body: bytes) -> bytes:
    return message(*headers, body=body)


# ------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    "cte, body",
    [
        ("base64", base64.encodebytes(bytes(range(256)) * 3)),
        ("base64", b"QUJD\r\nREVG\r\nR0g"),  # padding missing: InvalidBase64PaddingDefect
        ("base64", b"QUJD\r\nRE*VG\r\nR0g="),  # a junk character
        ("base64", b"QUJD\r\nREVG\r\nR"),  # one letter too many: given back encoded
        ("base64", b"QU=JD\r\nREVG"),  # padding in the middle
        ("base64", b"=QUJD"),
        ("base64", b""),
        ("base64 (comment)", b"QUJD"),  # not the email package's "base64": left as it is
        ("quoted-printable", b"caf=C3=A9 =\r\nsoft break=\nbare=\rCR =3D =XY =\r\n=\r\nend="),
        ("quoted-printable", quopri.encodestring("déjà vu ".encode() * 40)),
        ("x-uuencode", b"begin 644 f\r\n#86)C\r\n`\r\nend\r\n"),
        ("7bit", b"line one\r\nline two\rbare CR\nbare LF\r\n"),
    ],
)
def test_transfer_encodings_decode_as_the_email_package_does(
    both_ways: Parse, cte: str, body: bytes
) -> None:
    for ctype in ("application/octet-stream", "text/plain; charset=utf-8"):
        data = multipart(
            part("Content-Type: text/plain", body=b"intro"),
            part(f"Content-Type: {ctype}", f"Content-Transfer-Encoding: {cte}", body=body),
        )
        parsed = both_ways(data)
        assert not parsed.is_wrapped
    assert both_ways.streamed["bodies"] > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "charset, body",
    [
        (None, b"plain ASCII\r\nover lines\r\n"),
        (None, "undeclared caf\xe9 cr\xe8me\r\n".encode("latin-1")),
        (None, b"\x1b$B$3$s$K$A$O\x1b(B\r\n"),  # raw ISO-2022-JP escapes
        ("us-ascii", "caf\xe9\r\n".encode("cp1252")),
        ("utf-8", "caf\xe9 \u20ac \U0001f600\r\nline\r\n".encode()),
        ("utf-8", b"broken \xc3 utf-8 \xe2\x82\r\n"),
        ("iso-8859-1", "d\xe9j\xe0 vu\r\n".encode("latin-1")),
        ("iso-8859-1", "in fact UTF-8: d\xe9j\xe0\r\n".encode()),  # Western label over UTF-8
        ("windows-1252", b"\x81 undefined in cp1252\r\n"),
        ("shift_jis", "日本語のテキスト\r\n".encode("cp932")),
        ("gb2312", "中文文本\r\n".encode("gb18030")),
        ("koi8-r", "Русский текст\r\n".encode("koi8_r")),
        ("utf-16", "wide text\r\n".encode("utf-16")),
        ("iso-2022-jp", "日本語\r\n".encode("iso2022_jp")),
        ("x-unknown", "caf\xe9\r\n".encode("latin-1")),
        ("no-such-charset", b"text\r\n"),
    ],
)
def test_charsets_decode_as_decode_bytes_does(
    both_ways: Parse, charset: str | None, body: bytes
) -> None:
    declared = f"; charset={charset}" if charset else ""
    for ctype in ("text/plain", "text/html"):
        parsed = both_ways(
            message("From: a@example.com", f"Content-Type: {ctype}{declared}", body=body)
        )
        assert (parsed.text if ctype == "text/plain" else parsed.html) is not None
    both_ways(
        message(
            "From: a@example.com", "Content-Type: text/html", body=b'<meta charset="koi8-r">' + body
        )
    )


def test_boundary_lines_inside_bodies(both_ways: Parse) -> None:
    """Lines that look like boundaries, or are ones the scan could miss."""
    bare_cr = message(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="b"',
        body=b"--b\r\nContent-Type: text/plain\r\n\r\nfirst\r--b\r\nContent-Type: text/html\r\n\r\n"
        b"<p>second</p>\r\n--b--\r\n",
    )
    assert both_ways(bare_cr).html is not None
    both_ways(
        multipart(
            part(
                "Content-Type: text/plain", body=b"-- \r\nsignature\r\n--bb\r\n--b-\r\n--b--x\r\n"
            ),
            part(
                'Content-Type: multipart/alternative; boundary="b-inner"',
                body=b"--b-inner\r\nContent-Type: text/plain\r\n\r\ninner\r\n--b\r\nlate\r\n",
            ),
            boundary="b",
        )
    )
    both_ways(
        multipart(
            part("Content-Type: text/plain", body=b""),  # empty: the boundary follows at once
            part("Content-Type: text/plain", body=b"\r\n"),
            part(
                "Content-Type: text/plain",
                body=b"no blank line before",
            ).replace(b"\r\n\r\n", b"\r\n"),
        )
    )


def test_attached_messages_and_reports_keep_the_email_package(both_ways: Parse) -> None:
    inner = message("From: b@example.com", "Subject: inner", body=b"inner body " * 50)
    both_ways(
        multipart(
            part("Content-Type: text/plain", body=b"see attached"),
            part("Content-Type: message/rfc822", body=inner),
            part(
                "Content-Type: message/rfc822",
                "Content-Transfer-Encoding: base64",
                body=base64.encodebytes(inner),
            ),
            part(
                "Content-Type: message/delivery-status",
                body=b"Reporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; x@y\r\n",
            ),
            subtype="report",
        )
    )
    both_ways(
        message("From: a@example.com", "Content-Type: multipart/mixed", body=b"no boundary\r\n")
    )
    both_ways(
        message("From: a@example.com", "Subject :  spaced", body=b"closed-up header names\r\n")
    )


def _random_body(rng: random.Random) -> bytes:
    pieces = [
        b"text ",
        b"\r\n",
        b"\n",
        b"\r",
        b"=",
        b"=\r\n",
        b"--",
        b"--b1",
        b"--b1--",
        b"\xe9",
        "é€".encode(),
        b"\x1b$B",
        b"QUJD",
        b"\x00",
        b" \t",
    ]
    return b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 40)))


def _random_leaf(rng: random.Random) -> bytes:
    ctype = rng.choice(["text/plain", "text/html", "application/octet-stream", "image/png"])
    charset = rng.choice(
        ["", "; charset=utf-8", "; charset=us-ascii", "; charset=iso-8859-1", "; charset=shift_jis"]
    )
    cte = rng.choice([None, "7bit", "8bit", "base64", "quoted-printable", "binary"])
    body = _random_body(rng)
    if cte == "base64" and rng.random() < 0.7:
        body = base64.encodebytes(body)
        if rng.random() < 0.3:
            body = body[: rng.randrange(len(body) + 1)]
    headers = [f"Content-Type: {ctype}{charset}"]
    if cte is not None:
        headers.append(f"Content-Transfer-Encoding: {cte}")
    return part(*headers, body=body)


def _random_message(rng: random.Random, depth: int = 0) -> bytes:
    if depth > 2 or rng.random() < 0.3:
        return _random_leaf(rng)
    boundary = rng.choice(["b1", "b2", "b1-", "b"]) + str(depth)
    children = [_random_message(rng, depth + 1) for _ in range(rng.randrange(1, 4))]
    close = rng.random() < 0.9
    body = b"".join(
        b"--" + boundary.encode() + rng.choice([b"\r\n", b"\n"]) + c + b"\r\n" for c in children
    )
    if close:
        body += b"--" + boundary.encode() + b"--\r\n"
    subtype = rng.choice(["mixed", "alternative", "related"])
    return part(f'Content-Type: multipart/{subtype}; boundary="{boundary}"', body=body)


def test_random_messages(both_ways: Parse) -> None:
    rng = random.Random(20261206)
    for _ in range(300):
        both_ways(b"From: a@example.com\r\nSubject: random\r\n" + _random_message(rng))
    assert both_ways.streamed["bodies"] > 300  # type: ignore[attr-defined]


def test_corpus_parses_the_same_with_every_body_in_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not CORPUS.is_dir():
        pytest.fail(f"shared corpus not found at {CORPUS} (expected ../shared/corpus)")
    monkeypatch.setattr(bodies, "PIECE", 64)
    monkeypatch.setattr(charsets, "_PIECE", 64)
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".json")
    assert len(files) > 800
    different = []
    for path in files:
        data = path.read_bytes()
        monkeypatch.setattr(parser_module, "LARGE_BODY", 1 << 62)
        whole = parse_bytes(data, LIMITS)
        monkeypatch.setattr(parser_module, "LARGE_BODY", 1)
        if parse_bytes(data, LIMITS) != whole:
            different.append(str(path.relative_to(CORPUS)))
    assert not different, different


def test_piecewise_charset_checks_agree_with_whole_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """decode_bytes's strict checks and its UTF-8 count, done in pieces for a
    large body, give what decoding it whole gives."""
    monkeypatch.setattr(charsets, "_PIECE", 3)
    samples = [
        b"plain ascii text",
        "caf\xe9 \u20ac \U0001f600 utf-8".encode(),
        "caf\xe9 latin-1 \xe8\xe0".encode("latin-1"),
        "日本語のテキスト".encode("cp932"),
        "中文文本".encode("gb18030"),
        b"broken \xc3 utf-8 \xe2\x82 and more \xc3\xa9",
        b"\x81\x8d\x8f\x90\x9d",
    ]
    codecs_ = ["utf-8", "cp1252", "latin-1", "cp932", "gb18030", "koi8_r", "ascii", "utf-16"]
    for data in samples:
        for codec in codecs_:
            try:
                whole: str | None = data.decode(codec)
            except UnicodeDecodeError:
                whole = None
            assert charsets._strict(data, codec) == whole, (data, codec)
        valid = len(re.findall(rb"[\xc2-\xf4][\x80-\xbf]+", data))
        broken = data.decode("utf-8", "replace").count("\ufffd")
        assert charsets._mostly_utf8(data) == (valid > 0 and broken * 10 <= valid), data


# ------------------------------------------------------------- the scan


def test_scan_reports_leaf_bodies_without_the_line_break_before_a_boundary() -> None:
    data = multipart(
        part("Content-Type: text/plain", body=b"one\r\n"),
        part("Content-Type: message/rfc822", body=message("Subject: x", body=b"attached")),
        part("Content-Type: image/png", body=b"two"),
    )
    leaves: list[LeafBody] = []
    assert scan_structure(data, 10, 100, leaves, max_header_bytes=1 << 20) is None
    assert [data[leaf.start : leaf.end] for leaf in leaves] == [b"one\r\n", b"two"]
    root: list[LeafBody] = []
    single = message("Subject: s", body=b"all of it\r\n")
    assert scan_structure(single, 10, 100, root, max_header_bytes=1 << 20) is None
    assert [single[leaf.start : leaf.end] for leaf in root] == [b"all of it\r\n"]


# ------------------------------------------------------------- memory


LINE = b"Dear support, the order did not arrive; please send it again, thanks.\r\n"


def large_text(size: int) -> tuple[bytes, int]:
    """A text/plain message of about *size* bytes, and its body's size."""
    line = LINE
    head = b"From: a@example.com\r\nSubject: big\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    count = (size - len(head)) // len(line)
    return head + line * count, len(line) * count


def large_attachment(size: int) -> tuple[bytes, int]:
    """A message with a base64 attachment of about *size* bytes, and its decoded size."""
    data = random.Random(7).randbytes(size * 3 // 4 - 1024)
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    attachment = part(
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        body=encoded,
    )
    return multipart(part("Content-Type: text/plain", body=b"attached"), attachment), len(data)


def traced_peak(run: Callable[[], Any]) -> tuple[Any, int]:
    """*run*'s result, and the most memory Python held at once while it ran."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = run()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("make", [large_text, large_attachment])
def test_a_large_message_is_parsed_in_a_small_multiple_of_its_size(
    tmp_path: Path, make: Callable[[int], tuple[bytes, int]]
) -> None:
    """20 MB through parse_message: the raw is read whole once (the structure
    checks) and let go before the bodies are decoded, so about its size; the
    email package took 10 to 17 times."""
    path = tmp_path / "large.eml"
    data, body_size = make(20 * MiB)
    path.write_bytes(data)
    del data
    raw = RawRef.from_path(path)
    parsed, peak = traced_peak(lambda: parse_message(raw, LIMITS))
    assert not parsed.is_wrapped and not parsed.defects
    if make is large_text:
        assert parsed.text is not None and len(parsed.text) == body_size // len(LINE) * (
            len(LINE) - 1
        )
        assert parsed.text.endswith("thanks.\n") and "\r" not in parsed.text[:1000]
    else:
        assert parsed.text == "attached"
        assert [a.size for a in parsed.attachments] == [body_size]
    assert peak < 1.5 * raw.size, f"peak {peak / MiB:.1f} MiB for {raw.size / MiB:.1f} MiB"


def test_a_long_header_line_is_wrapped_without_reading_the_message(tmp_path: Path) -> None:
    path = tmp_path / "header.eml"
    path.write_bytes(b"Subject: kept\r\nX-Long: " + b"x" * (20 * MiB) + b"\r\n\r\nbody\r\n")
    raw = RawRef.from_path(path)
    parsed, peak = traced_peak(lambda: parse_message(raw, LIMITS))
    assert parsed.wrapping_reason == f"header block larger than {LIMITS.max_header_bytes} bytes"
    assert parsed.subject == "kept" and parsed.header("X-Long") is None
    assert parse_bytes(path.read_bytes(), LIMITS) == attrs.evolve(parsed, raw_sha256="")
    assert peak < 4 * LIMITS.max_header_bytes

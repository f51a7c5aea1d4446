"""Attachment names a sender chose, and the safe names offered beside them."""

from __future__ import annotations

import json
import random
import re
import unicodedata
from pathlib import Path

import pytest

from postroom.model import Attachment, ParsedMessage, RawRef
from postroom.parsing import ParseLimits, parse_bytes, parse_message
from postroom.safe_names import MAX_BYTES, safe_filename, unique_safe_names
from tests.conftest import ROOT
from tests.linear import assert_linear

SCHEMA = json.loads((ROOT / "kernel" / "postroom" / "schemas" / "interaction.json").read_text())
SAFE = re.compile(
    SCHEMA["properties"]["attachments"]["items"]["properties"]["safe_filename"]["pattern"]
)
RESERVED = re.compile(r"(CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|COM\d|LPT\d)", re.IGNORECASE)
BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def assert_safe(name: str) -> None:
    assert SAFE.fullmatch(name), name
    assert 0 < len(name.encode()) <= MAX_BYTES
    assert not RESERVED.fullmatch(name.split(".", 1)[0].rstrip(" ")), name
    assert not BIDI & set(name), name
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn") for c in name)
    assert name == unicodedata.normalize("NFKC", name)
    assert name not in (".", "..")


@pytest.mark.parametrize(
    ("original", "content_type", "safe"),
    [
        ("report.pdf", "application/pdf", "report.pdf"),
        ("Prüfbericht März.pdf", "application/pdf", "Prüfbericht März.pdf"),
        ("../../etc/passwd", "text/plain", "_.._etc_passwd"),
        ("..\\..\\Windows\\win.ini", "text/plain", "_.._Windows_win.ini"),
        ("/etc/passwd", "text/plain", "_etc_passwd"),
        ("invoice\u202efdp.exe", "application/pdf", "invoicefdp.exe"),
        ("\u2067photo\u2069\u200b.jpg", "image/jpeg", "photo.jpg"),
        ("CON", "text/plain", "_CON"),
        ("nul.txt", "text/plain", "_nul.txt"),
        ("com1 .log", "text/plain", "_com1 .log"),
        ("LPT\u00b9.txt", "text/plain", "_LPT1.txt"),  # superscript one: NFKC makes it 1
        ("CONTRACT.pdf", "application/pdf", "CONTRACT.pdf"),
        ("a<b>c:d\"e|f?g*h.txt", "text/plain", "a_b_c_d_e_f_g_h.txt"),
        ("\uff0e\uff0e\uff0fsecret", "text/plain", "_secret"),  # fullwidth ../
        (".bashrc", "text/plain", "bashrc"),
        ("...", "application/pdf", "attachment.pdf"),
        ("-rf", "text/plain", "_rf"),
        ("name.  . ", "text/plain", "name"),
        ("tab\there\u2028and\u0085there.txt", "text/plain", "tab here and there.txt"),
        ("", "application/pdf", "attachment.pdf"),
        (None, "text/plain", "attachment.txt"),
        (None, "application/x-unknown-thing", "attachment"),
        ("\u200b\u200d", "image/png", "attachment.png"),
        ("\udcff\udcfe.bin", "application/octet-stream", "bin"),  # lone surrogates dropped
    ],
)  # fmt: skip
def test_hostile_names_get_a_safe_name(original: str | None, content_type: str, safe: str) -> None:
    attachment = Attachment(original, content_type, 10)
    assert attachment.filename == original  # kept as sent
    assert attachment.safe_filename == safe
    assert_safe(safe)


def test_an_attached_message_without_a_name_is_an_eml() -> None:
    assert Attachment(None, "message/rfc822", 10, is_message=True).safe_filename == (
        "attachment.eml"
    )
    assert Attachment(None, "message/global", 10, is_message=True).safe_filename == (
        "attachment.eml"
    )


def test_a_very_long_name_is_cut_keeping_its_extension() -> None:
    long = "ä" * 3000 + ".pdf"
    name = safe_filename(long, "application/pdf")
    assert name.endswith(".pdf") and name.startswith("ää")
    assert len(name.encode()) <= MAX_BYTES  # never half a character
    assert_safe(name)
    assert safe_filename("x" * 3000, "text/plain") == "x" * MAX_BYTES
    odd = safe_filename("y" * 300 + "." + "z" * 40, "text/plain")  # no extension that long
    assert odd == ("y" * 300 + "." + "z" * 40)[:MAX_BYTES]


def test_names_are_unique_within_a_message_ignoring_case() -> None:
    message = ParsedMessage(
        attachments=[
            Attachment("report.pdf", "application/pdf", 1),
            Attachment("REPORT.PDF", "application/pdf", 1),
            Attachment("report (2).pdf", "application/pdf", 1),
            Attachment(None, "message/rfc822", 1, is_message=True),
            Attachment(None, "message/rfc822", 1, is_message=True),
            Attachment("ä" * 200 + ".txt", "text/plain", 1),
            Attachment("ä" * 200 + ".txt", "text/plain", 1),
        ]
    )
    names = [a.safe_filename for a in message.attachments]
    assert names[:5] == [
        "report.pdf",
        "REPORT (2).PDF",
        "report (2) (2).pdf",
        "attachment.eml",
        "attachment (2).eml",
    ]
    assert names[6].endswith(" (2).txt") and names[5] != names[6]
    assert len({n.casefold() for n in names}) == len(names)
    for name in names:
        assert_safe(name)
    # the originals are untouched, and making names unique twice changes nothing
    assert message.attachments[1].filename == "REPORT.PDF"
    assert unique_safe_names(message.attachments) == message.attachments


def test_random_hostile_names_always_give_safe_names() -> None:
    """A derandomised sweep over an alphabet of everything that has caused trouble."""
    alphabet = list('aZ09 ._-~/\\:*?"<>|\t\r\n\x00\x7f\x85\u00a0\u2028\u2029\ufeff')
    alphabet += [*sorted(BIDI), "\u200b", "\u0301", "\uff0f", "\uff0e", "ä", "€", "\U0001f600"]
    alphabet += ["CON", "nul", "COM1", "LPT9", "..", ".pdf", "\udcff", "\ue000", "\ufdfa"]
    rng = random.Random(20240601)
    for _ in range(3000):
        original = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        safe = safe_filename(original, rng.choice(["text/plain", "", "message/rfc822"]))
        assert_safe(safe)
        assert safe_filename(safe) in (safe, "_" + safe), (original, safe)  # stable


LIMITS = ParseLimits(default_domain="example.com")


def test_the_parser_offers_safe_names_and_keeps_the_originals() -> None:
    raw = (
        b"From: a@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: text/plain\r\n"
        b'Content-Disposition: attachment; filename="../../etc/passwd"\r\n\r\nroot\r\n'
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEfdp.exe\r\n\r\n"
        b"%PDF\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="invoicefdp.exe"\r\n\r\n%PDF\r\n'
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=" + b"A" * 400 + b".bin\r\n\r\nx\r\n"
        b"--b\r\nContent-Type: image/png\r\nContent-Disposition: attachment\r\n\r\nPNG\r\n"
        b"--b--\r\n"
    )
    parsed = parse_bytes(raw, LIMITS)
    assert parsed.wrapping_reason is None
    got = [(a.filename, a.safe_filename) for a in parsed.attachments]
    assert got[:4] == [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("invoicefdp.exe", "invoicefdp (2).exe"),
        ("A" * 400 + ".bin", "A" * (MAX_BYTES - 4) + ".bin"),
    ]
    assert got[4] == (None, "attachment.png")


def test_a_wrapped_message_offers_a_safe_name_too(tmp_path: Path) -> None:
    eml = tmp_path / "big.eml"
    eml.write_bytes(b"Subject: x\r\n\r\n" + b"body\r\n" * 100)
    parsed = parse_message(RawRef.from_path(eml), ParseLimits(max_size=100))
    assert parsed.wrapping_reason is not None
    assert [(a.filename, a.safe_filename) for a in parsed.attachments] == [
        ("original.eml", "original.eml")
    ]


def test_many_parts_named_alike_take_linear_time() -> None:
    scan = Attachment("scan.pdf", "application/pdf", 1)

    def make(n: int) -> list[Attachment]:
        return [scan] * n

    assert_linear(make, unique_safe_names, start=4000)
    names = [a.safe_filename for a in unique_safe_names(make(1000))]
    assert names[:3] == ["scan.pdf", "scan (2).pdf", "scan (3).pdf"] and len(set(names)) == 1000


def test_a_long_hostile_name_takes_linear_time() -> None:
    def make(n: int) -> str:
        return ("\u202e\u200b/.. CON\u0301\uff0f" * n)[:n]

    growth = assert_linear(make, safe_filename, start=160_000)
    assert_safe(safe_filename(make(growth.n)))

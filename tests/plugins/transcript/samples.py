"""The shared transcript samples (``../shared/samples/transcript``), read where they
are, and the facts about them the tests state by hand.

Times: ``startAt`` is 14:03:07 UTC and the customer's ``timeZoneOffset`` is +60
minutes, so the chat starts at 15:03:07 in the customer's zone and each event is
``timeShift`` seconds later (event 7: 3605 s -> 16:03:12).
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

SAMPLES = (ROOT / ".." / "shared" / "samples" / "transcript").resolve()
START = "2026/11/20, 03:03:07 PM"
DURATION = "1 h 1 min 43 s"
SUBJECT = "Rechnung 2026-4711 & Gutschrift"

#: (class, name, time, text) of each event the customer sees, in order (event 3,
#: newParty, is shown by its notice, event 4; event 8 is internal)
SHOWN = [
    ("you", "Jürgen Müller", "2026/11/20, 03:03:09 PM",
     "Hallo, meine Rechnung enthält einen Posten doppelt."),
    ("system", "Anna Weber", "2026/11/20, 03:03:16 PM", "Anna Weber joined the chat"),
    ("them", "Anna Weber", "2026/11/20, 03:03:38 PM",
     "Guten Tag Herr Müller, ich sehe es mir an. <b>Einen Moment</b> bitte."),
    ("you", "Jürgen Müller", "2026/11/20, 03:03:54 PM",
     "Danke!\nDie Positionen 3 und 7 sind gleich."),
    ("them", "Anna Weber", "2026/11/20, 04:03:12 PM",
     "Die Gutschrift über 19,99 € ist veranlasst."),
    ("system", "Jürgen Müller", "2026/11/20, 04:04:49 PM", "Jürgen Müller left the chat"),
    ("system", "Anna Weber", "2026/11/20, 04:04:50 PM", "Anna Weber left the chat"),
]  # fmt: skip
INTERNAL_TEXT = "internal note: credit approved by supervisor"
INTERNAL_TIME = "04:03:17 PM"  # event 8, 3610 s


def sample(name: str) -> str:
    path = SAMPLES / name
    if not path.is_file():
        pytest.fail(f"sample not found at {path} (expected ../shared/samples/transcript)")
    return path.read_text(encoding="utf-8")


def xml() -> str:
    return sample("chat-transcript.xml")


def template() -> str:
    """The HTML part as the product's guide assembles it: the sample standard response
    with the stylesheet's ``<style>`` block appended, its field codes filled in as the
    standard-response plugin would before this one runs."""
    text = sample("seed-standard-response.txt") + sample("seed-transcript.css")
    text = re.sub(r"<\$\s*Contact\.FirstName.*?\$>", "Jürgen Müller", text)
    return re.sub(r"<\$\s*Interaction\.DateCreated\s*\$>", "2026-11-20", text)


def with_files(source: str) -> str:
    """The sample with two transferred files (notices with ``file-name`` and
    ``file-size`` items), one of them internal."""
    files = (
        '<notice userId="00A7F1C0D2E30001" timeShift="60" visibility="ALL" eventId="6a">'
        '<noticeText noticeType="USER_CUSTOM">File uploaded</noticeText><userData>'
        '<item key="file-name" type="string">rechnung-4711.pdf</item>'
        '<item key="file-size" type="string">48213</item></userData></notice>\n'
        '<notice userId="00A7F1C0D2E30002" timeShift="3611" visibility="INT" eventId="8a">'
        '<noticeText noticeType="USER_CUSTOM">File uploaded</noticeText><userData>'
        '<item key="file-name" type="string">approval.txt</item>'
        '<item key="file-size" type="string">12</item></userData></notice>\n'
    )
    return source.replace('<message userId="00A7F1C0D2E30002" timeShift="3605"', files
                          + '<message userId="00A7F1C0D2E30002" timeShift="3605"')  # fmt: skip

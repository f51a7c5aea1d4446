"""Pieces of the rendering: parties and sides, zones, durations, sizes, HTML read as text."""

from __future__ import annotations

import pytest

from postroom_transcript.javadate import JavaDateFormat
from postroom_transcript.render import duration_text, html_to_text, size_text, to_text
from postroom_transcript.transcript import parse

CHAT = """<chatTranscript startAt="2026-03-01T23:30:00Z" sessionId="s">
<newParty userId="c" timeShift="0" visibility="ALL" eventId="1">
<userInfo userNick="Cleo" userType="CLIENT" {offset}/></newParty>
<newParty userId="b" timeShift="1" visibility="ALL" eventId="2">
<userInfo userNick="Helper Bot" userType="EXTERNAL" timeZoneOffset="0"/></newParty>
<message userId="b" timeShift="5" visibility="ALL" eventId="3">
<msgText>Hi &amp; welcome</msgText></message>
<message userId="nobody" timeShift="6" visibility="ALL" eventId="4"><msgText>?</msgText></message>
<pushUrl userId="b" timeShift="7" visibility="ALL" eventId="5"/>
</chatTranscript>"""


def test_without_a_customer_offset_times_are_utc_and_bots_speak_as_them() -> None:
    transcript = parse(CHAT.format(offset=""))
    assert to_text(transcript, JavaDateFormat("dd HH:mm:ss z"), False).splitlines() == [
        "[01 23:30:05 GMT+00:00] Helper Bot: Hi & welcome",
        "[01 23:30:06 GMT+00:00] : ?",  # a party the chat never introduced: no name
    ]


def test_a_negative_offset_can_move_the_date() -> None:
    transcript = parse(CHAT.format(offset='timeZoneOffset="-480"'))
    assert transcript.local(5).strftime("%Y-%m-%d %H:%M:%S") == "2026-03-01 15:30:05"
    later = parse(CHAT.format(offset='timeZoneOffset="+90"'))
    assert (
        JavaDateFormat("yyyy-MM-dd HH:mm XXX").format(later.local(5)) == "2026-03-02 01:00 +01:30"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (59, "59 s"),
        (60, "1 min 0 s"),
        (3600, "1 h 0 min 0 s"),
        (3703, "1 h 1 min 43 s"),
    ],
)
def test_durations(seconds: int, text: str) -> None:
    assert duration_text(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, "size unknown"), (0, "0 bytes"), (1023, "1023 bytes"), (1024, "1.0 KB"),
     (5 * 1024 * 1024, "5.0 MB")],
)  # fmt: skip
def test_sizes(size: int | None, text: str) -> None:
    assert size_text(size) == text


def test_html_read_as_text() -> None:
    markup = (
        "<html><head><title>x</title></head><body><p>Dear   Cleo,\n  thanks.</p>"
        "<div>A&amp;B&nbsp;C<br>next</div><style>p { color: red }</style></body></html>"
    )
    assert html_to_text(markup) == "Dear Cleo, thanks.\nA&B C\nnext"

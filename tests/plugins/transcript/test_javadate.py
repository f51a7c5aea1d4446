"""Java ``SimpleDateFormat`` patterns, letter by letter, against what Java prints.

Every expected string is worked out by hand from the moment below (a Friday,
day 324 of 2026, in a zone one hour east of UTC), never by the code under test.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from postroom_transcript.javadate import FALLBACK_PATTERN, JavaDateFormat, PatternError
from postroom_transcript.render import pattern_of

PLUS_ONE = timezone(timedelta(hours=1))
#: Friday 2026-11-20 15:03:09.045 at UTC+01:00
MOMENT = datetime(2026, 11, 20, 15, 3, 9, 45_000, tzinfo=PLUS_ONE)

CASES = [
    # y: two letters truncate, any other count is the full year, zero-padded
    ("y", "2026"), ("yy", "26"), ("yyy", "2026"), ("yyyy", "2026"), ("yyyyy", "02026"),
    # M / L: numbers up to two letters, short name with three, full with four
    ("M", "11"), ("MM", "11"), ("MMM", "Nov"), ("MMMM", "November"),
    ("L", "11"), ("LLL", "Nov"), ("LLLL", "November"),
    ("d", "20"), ("dd", "20"), ("ddd", "020"),
    ("E", "Fri"), ("EEE", "Fri"), ("EEEE", "Friday"), ("EEEEE", "Friday"),
    # u: the day number of the week, Monday 1 (Babel's u would be the year)
    ("u", "5"), ("uu", "05"),
    # a: always the short marker (Java's aaa is still PM)
    ("a", "PM"), ("aaa", "PM"), ("aaaa", "PM"),
    ("H", "15"), ("HH", "15"), ("k", "15"), ("K", "3"), ("KK", "03"), ("h", "3"), ("hh", "03"),
    ("m", "3"), ("mm", "03"), ("s", "9"), ("ss", "09"),
    # S: milliseconds, zero-padded to the count (Babel's S would be a fraction)
    ("S", "45"), ("SS", "45"), ("SSS", "045"), ("SSSS", "0045"),
    ("D", "324"), ("DDDD", "0324"), ("F", "3"), ("G", "AD"), ("GGGG", "AD"),
    # en_US weeks: Sunday first, one day is enough for week 1 (it began 2025-12-28)
    ("w", "47"), ("ww", "47"), ("W", "3"), ("Y", "2026"), ("YY", "26"),
    ("z", "GMT+01:00"), ("zzzz", "GMT+01:00"), ("Z", "+0100"),
    ("X", "+01"), ("XX", "+0100"), ("XXX", "+01:00"),
    # quotes: '' is one quote, in and out of quoted text; non-ASCII letters are literal
    ("'o''clock' h", "o'clock 3"), ("h 'Uhr'", "3 Uhr"), ("''", "'"), ("''''", "''"),
    ("HH'h'mm", "15h03"), ("HH:mm ä", "15:03 ä"), ("'yyyy'", "yyyy"), ("", ""),
    (FALLBACK_PATTERN, "2026-11-20T15:03:09"),
    ("EEE, d MMM yyyy HH:mm:ss Z", "Fri, 20 Nov 2026 15:03:09 +0100"),
    ("yyyy.MM.dd G 'at' HH:mm:ss z", "2026.11.20 AD at 15:03:09 GMT+01:00"),
    ("yyMMddHHmmssZ", "261120150309+0100"),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "expected"), CASES)
def test_each_letter_means_what_it_means_in_java(pattern: str, expected: str) -> None:
    assert JavaDateFormat(pattern, "en_US").format(MOMENT) == expected


def test_the_sample_pattern_across_a_line_break() -> None:
    written = "yyy/MM/dd, hh:mm:ss  \naaa"  # as in seed-standard-response.txt
    pattern = pattern_of(written, in_html=True)
    assert pattern == "yyy/MM/dd, hh:mm:ss aaa"
    assert JavaDateFormat(pattern).format(MOMENT) == "2026/11/20, 03:03:09 PM"
    assert pattern_of("yyy/MM/dd,\r\n  hh:mm", in_html=False) == "yyy/MM/dd, hh:mm"
    assert pattern_of("h&#39;h&#39; a", in_html=True) == "h'h' a"


@pytest.mark.parametrize(
    ("hour", "k", "K", "h", "a"),
    [(0, "24", "0", "12", "AM"), (12, "12", "0", "12", "PM"), (23, "23", "11", "11", "PM")],
)
def test_the_hour_letters_at_their_edges(hour: int, k: str, K: str, h: str, a: str) -> None:
    moment = MOMENT.replace(hour=hour)
    assert JavaDateFormat("k K h a").format(moment) == f"{k} {K} {h} {a}"


@pytest.mark.parametrize(
    ("minutes", "z", "Z", "X", "XX", "XXX"),
    [
        (-300, "GMT-05:00", "-0500", "-05", "-0500", "-05:00"),
        (0, "GMT+00:00", "+0000", "Z", "Z", "Z"),
        (330, "GMT+05:30", "+0530", "+05", "+0530", "+05:30"),
    ],
)
def test_zones(minutes: int, z: str, Z: str, X: str, XX: str, XXX: str) -> None:
    moment = MOMENT.astimezone(timezone(timedelta(minutes=minutes)))
    assert JavaDateFormat("z|Z|X|XX|XXX").format(moment) == f"{z}|{Z}|{X}|{XX}|{XXX}"


def test_week_years_follow_the_locale() -> None:
    new_years_eve = datetime(2026, 12, 31, 12, 0, tzinfo=PLUS_ONE)  # a Thursday
    # en_US: 2027's week 1 starts Sunday 2026-12-27 (it has a day of 2027)
    assert JavaDateFormat("yyyy YYYY-'W'ww", "en_US").format(new_years_eve) == "2026 2027-W01"
    # de_DE: Monday first, four days needed: that week is 2026's 53rd
    assert JavaDateFormat("yyyy YYYY-'W'ww", "de_DE").format(new_years_eve) == "2026 2026-W53"
    # en_US: Sunday 2026-11-01 starts week 1 of November; de_DE: it is week 0 (one day)
    assert JavaDateFormat("W", "de_DE").format(MOMENT.replace(day=1)) == "0"
    assert JavaDateFormat("W", "en_US").format(MOMENT.replace(day=1)) == "1"


def test_names_come_from_the_locale() -> None:
    assert (
        JavaDateFormat("EEEE, d. MMMM yyyy", "de_DE").format(MOMENT) == "Freitag, 20. November 2026"
    )
    assert JavaDateFormat("EEE d MMM", "fr_FR").format(MOMENT) == "ven. 20 nov."


@pytest.mark.parametrize(
    "pattern",
    [
        "yyyy-MM-ddTHH:mm",  # T unquoted
        "yyyy b",  # not a Java letter (CLDR's day period)
        "e", "c", "Q", "q", "x", "O", "V", "v", "A", "B", "g", "j", "J", "I", "l", "n", "o",
        "p", "r", "t", "U", "C", "N", "P", "R", "T",
        "XXXX",  # ISO 8601 zone with four letters
        "'unterminated",
        "yyyy 'it''s",
        "h 'o''clock",
    ],
)  # fmt: skip
def test_what_java_rejects_is_rejected(pattern: str) -> None:
    with pytest.raises(PatternError):
        JavaDateFormat(pattern)

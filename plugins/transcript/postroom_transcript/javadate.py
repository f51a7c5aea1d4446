"""Java ``SimpleDateFormat`` patterns, formatted as Java formats them.

Templates written for the commercial product give their timestamp pattern in
Java's syntax. Babel's CLDR patterns look alike but differ letter by letter (Java
``u`` is the day number of the week, Babel's the extended year; Java ``S`` is
milliseconds, Babel's a fraction of a second; Java ``aaa`` is ``PM``), and Babel
prints letters Java rejects. So each Java letter is compiled to what Java means,
with Babel's locale data only for the names (months, days, eras, AM/PM) and the
week rules, and a pattern Java would reject raises :class:`PatternError`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import attrs
from babel import Locale

#: every letter Java's SimpleDateFormat knows (java.text.SimpleDateFormat, "Date and Time Patterns")
JAVA_LETTERS = frozenset("GyYMLwWDdFEuaHkKhmsSzZX")
#: the pattern used when a template's pattern is not valid (specification, section 6)
FALLBACK_PATTERN = "yyyy-MM-dd'T'HH:mm:ss"


class PatternError(ValueError):
    """A pattern Java's ``SimpleDateFormat`` refuses (``IllegalArgumentException``)."""


@attrs.frozen
class Field:
    letter: str
    count: int


Token = str | Field


def compile_pattern(pattern: str) -> list[Token]:
    """The pattern's literal texts and fields, or :class:`PatternError` where Java
    throws: an unquoted ASCII letter it does not know, an unterminated quote, or
    ``X`` repeated more than three times."""
    tokens: list[Token] = []
    literal: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "'":
            if i + 1 < n and pattern[i + 1] == "'":  # '' is one quote, in or out of quotes
                literal.append("'")
                i += 2
                continue
            end = i + 1
            while True:
                if end >= n:
                    raise PatternError(f"unterminated quote in {pattern!r}")
                if pattern[end] == "'":
                    if end + 1 < n and pattern[end + 1] == "'":
                        literal.append("'")
                        end += 2
                        continue
                    break
                literal.append(pattern[end])
                end += 1
            i = end + 1
            continue
        if c.isascii() and c.isalpha():
            if c not in JAVA_LETTERS:
                raise PatternError(f"illegal pattern character {c!r} in {pattern!r}")
            count = 1
            while i + count < n and pattern[i + count] == c:
                count += 1
            if c == "X" and count > 3:
                raise PatternError(f"invalid ISO 8601 format: length={count} in {pattern!r}")
            if literal:
                tokens.append("".join(literal))
                literal = []
            tokens.append(Field(c, count))
            i += count
            continue
        literal.append(c)
        i += 1
    if literal:
        tokens.append("".join(literal))
    return tokens


def _pad(value: int, count: int) -> str:
    """Java's zeroPaddingNumber: at least *count* digits."""
    sign = "-" if value < 0 else ""
    return sign + str(abs(value)).rjust(count, "0")


def _java_dow(day: date) -> int:
    """Java's DAY_OF_WEEK: Sunday 1 ... Saturday 7."""
    return (day.weekday() + 1) % 7 + 1


@attrs.frozen
class _Weeks:
    """Java's GregorianCalendar week rules for a locale."""

    first_day: int  # Java numbering, Sunday 1
    minimal_days: int

    def _week1_start(self, year: int) -> date:
        jan1 = date(year, 1, 1)
        offset = (_java_dow(jan1) - self.first_day) % 7
        start = jan1 - timedelta(days=offset)
        return start if 7 - offset >= self.minimal_days else start + timedelta(days=7)

    def week_of_year(self, day: date) -> tuple[int, int]:
        """(week year, week of year)."""
        year = day.year
        start = self._week1_start(year)
        if day < start:
            year -= 1
            start = self._week1_start(year)
        elif day >= self._week1_start(year + 1):
            year += 1
            start = self._week1_start(year)
        return year, (day - start).days // 7 + 1

    def week_of_month(self, day: date) -> int:
        """Java's Calendar.getWeekNumber over the month (week 0 possible)."""
        start_dow = (_java_dow(day) - self.first_day - day.day + 1) % 7
        week = (day.day + start_dow - 1) // 7
        if 7 - start_dow >= self.minimal_days:
            week += 1
        return week


def _offset(moment: datetime) -> int:
    delta = moment.utcoffset()
    return int(delta.total_seconds() // 60) if delta is not None else 0


def _hours_minutes(minutes: int) -> tuple[str, int, int]:
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return sign, minutes // 60, minutes % 60


def _zone_general(minutes: int) -> str:
    """Java's name of a custom zone ``GMT+hh:mm`` (an offset has no other name)."""
    sign, h, m = _hours_minutes(minutes)
    return f"GMT{sign}{h:02d}:{m:02d}"


def _zone_iso(minutes: int, count: int) -> str:
    if minutes == 0:
        return "Z"
    sign, h, m = _hours_minutes(minutes)
    return f"{sign}{h:02d}" + ("" if count == 1 else f"{m:02d}" if count == 2 else f":{m:02d}")


class JavaDateFormat:
    """A compiled Java pattern that formats aware datetimes in a Babel locale."""

    def __init__(self, pattern: str, locale: str | Locale = "en") -> None:
        """Raises :class:`PatternError` for a pattern Java rejects, and Babel's
        ``UnknownLocaleError`` for an unknown locale."""
        self.pattern = pattern
        self.tokens = compile_pattern(pattern)
        self.locale = locale if isinstance(locale, Locale) else Locale.parse(locale)
        self.weeks = _Weeks(
            first_day=(self.locale.first_week_day + 1) % 7 + 1,
            minimal_days=self.locale.min_week_days,
        )

    def format(self, moment: datetime) -> str:
        return "".join(
            t if isinstance(t, str) else self._field(t.letter, t.count, moment) for t in self.tokens
        )

    def _names(self, kind: str, context: str, count: int) -> dict[int, str]:
        table = getattr(self.locale, kind)[context]
        return dict(table["wide" if count >= 4 else "abbreviated"])

    def _field(self, letter: str, count: int, moment: datetime) -> str:
        loc = self.locale
        if letter in "yY":
            year = moment.year if letter == "y" else self.weeks.week_of_year(moment.date())[0]
            return _pad(year % 100, 2) if count == 2 else _pad(year, count)
        if letter in "ML":
            if count >= 3:
                context = "format" if letter == "M" else "stand-alone"
                return self._names("months", context, count)[moment.month]
            return _pad(moment.month, count)
        if letter == "E":
            return self._names("days", "format", count)[moment.weekday()]
        if letter == "G":
            return str(loc.eras["abbreviated"][1 if moment.year > 0 else 0])
        if letter == "a":
            return str(loc.day_periods["format"]["abbreviated"]["am" if moment.hour < 12 else "pm"])
        if letter == "z":
            return _zone_general(_offset(moment))
        if letter == "Z":
            sign, h, m = _hours_minutes(_offset(moment))
            return f"{sign}{h:02d}{m:02d}"
        if letter == "X":
            return _zone_iso(_offset(moment), count)
        numbers: dict[str, Callable[[datetime], int]] = {
            "d": lambda t: t.day,
            "D": lambda t: t.timetuple().tm_yday,
            "F": lambda t: (t.day - 1) // 7 + 1,
            "u": lambda t: t.isoweekday(),
            "w": lambda t: self.weeks.week_of_year(t.date())[1],
            "W": lambda t: self.weeks.week_of_month(t.date()),
            "H": lambda t: t.hour,
            "k": lambda t: t.hour or 24,
            "K": lambda t: t.hour % 12,
            "h": lambda t: t.hour % 12 or 12,
            "m": lambda t: t.minute,
            "s": lambda t: t.second,
            "S": lambda t: t.microsecond // 1000,
        }
        return _pad(numbers[letter](moment), count)

"""Reading header values the way real mail writes them.

The ``email`` package's ``policy.default`` is strict where mail is not: it
leaves RFC 2047 encoded-words inside quoted strings and parameter values
undecoded, gives up on parameters that are folded or carry RFC 2231
continuations in odd ways, and occasionally raises on an address list. These
helpers take an unfolded-or-not header value (a ``str`` whose 8-bit bytes have
already been decoded, see :func:`raw_header_text`) and never raise on bad
input; they are pure functions so the kernel's plugins can use them on report
fields too.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from typing import NamedTuple

from postroom.parsing.charsets import repair, resolve_charset

_LINEBREAK = re.compile(r"\r\n|\n|\r")
_FOLD_IN_WORD = re.compile(r"(?:\r\n|\n|\r)[ \t]*")
_SURROGATES = re.compile("[\udc80-\udcff]+")

# An RFC 2047 encoded-word, tolerant of what clients produce: folds and
# spaces inside the encoded text, a language suffix on the charset. The text
# may not contain "?", which bounds the cost of failed matches.
_EW = re.compile(r"=\?([^?\s\"()<>=]{1,64})\?([bBqQ])\?([^?]{0,2000})\?=")
_EW_TAIL = re.compile(r"=\?([^?\s\"()<>=]{1,64})\?([bBqQ])\?([^?\s]{1,2000})$")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_AFTER_PUNCT = frozenset("])}>:;,.!?")

#: The most text given to the ``email`` package's structured address parser
#: at once. Its cost grows quadratically with the length of hostile text (30,000
#: ``"a`` took 21 s): a longer value is cut into its items
#: (:func:`_split_items`), each parsed on its own, and an item longer than this
#: is salvaged instead.
_MAX_STRUCTURED = 1024
#: The address text one message may give the structured parser in all (see
#: :class:`AddressBudget`): even short hostile items cost it 10-30 µs a
#: character, while a real message's address fields are a few kilobytes.
MAX_STRUCTURED_PER_MESSAGE = 16 * 1024


def unfold(value: str) -> str:
    """RFC 5322 unfolding: remove the line breaks, keep the whitespace."""
    return _LINEBREAK.sub("", value)


def collapse(value: str) -> str:
    """Unfold and turn each fold, with the blanks around it, into one space.

    Split at the line breaks and strip the pieces, rather than one pattern
    with blanks on both sides of the break: that pattern is retried from each
    blank of a long run of blanks, quadratic in the run.
    """
    lines = _LINEBREAK.split(value)
    if len(lines) == 1:
        return value
    last = len(lines) - 1
    return " ".join(
        line.strip(" \t") if 0 < i < last else line.rstrip(" \t") if i == 0 else line.lstrip(" \t")
        for i, line in enumerate(lines)
    )


def raw_header_text(value: str, hints: Sequence[str] = ()) -> tuple[str, str | None]:
    """Decode a raw header value as the ``email`` package stores it.

    8-bit bytes arrive as surrogate escapes. UTF-8 is legal (RFC 6532); anything
    else is repaired like an undeclared body (*hints*: charsets the message
    declares elsewhere). Returns ``(text, codec)`` where *codec* names the
    repair, or None when none was needed. Raw ISO-2022-JP (7-bit escape
    sequences, older Japanese clients) is decoded too.
    """
    if _SURROGATES.search(value):
        data = value.encode("ascii", "surrogateescape")
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            text, codec = repair(data, hints)
            return text, codec
    if "\x1b$" in value or "\x1b(" in value:
        try:
            return value.encode("ascii").decode("iso2022_jp_ext"), None
        except (UnicodeError, LookupError):
            pass
    return value, None


# ------------------------------------------------------------------ RFC 2047


def _decode_q(text: str) -> bytes:
    data = text.replace("_", " ").encode("utf-8", "surrogateescape")
    return _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data)


def decode_base64(text: str | bytes) -> bytes:
    """Lenient base64: junk characters ignored, padding repaired."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text)
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned)
    except (binascii.Error, ValueError):
        return b""


def _decode_charset(data: bytes, charset: str) -> str:
    codec = resolve_charset(charset)
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
    if data.isascii():
        return data.decode("ascii")
    return repair(data)[0]


def _word_bytes(charset: str, encoding: str, text: str) -> tuple[str, bytes]:
    text = _FOLD_IN_WORD.sub("", text)
    charset = charset.split("*", 1)[0].lower()
    data = decode_base64(text) if encoding in "bB" else _decode_q(text)
    return charset, data


def _decode(value: str, *, unstructured: bool) -> str:
    """Decode the encoded-words of *value* (still folded or not).

    Whitespace between two encoded-words is dropped (RFC 2047 section 6.2);
    adjacent words in the same charset are joined as bytes before decoding, so a
    character split across two words survives. In *unstructured* text a word
    glued to a preceding closing punctuation (``[SPAM]=?utf-8?...``) gets a
    space, as gateways that prepend tags mean it.
    """
    if "=?" not in value:
        return value
    items: list[tuple[str, str, bytes]] = []  # (kind, text or charset, bytes)
    pos = 0
    for match in _EW.finditer(value):
        if match.start() > pos:
            items.append(("text", value[pos : match.start()], b""))
        charset, data = _word_bytes(*match.groups())
        items.append(("word", charset, data))
        pos = match.end()
    rest = value[pos:]
    tail = _EW_TAIL.search(rest)
    if tail is not None:
        if tail.start() > 0:
            items.append(("text", rest[: tail.start()], b""))
        charset, data = _word_bytes(*tail.groups())
        items.append(("word", charset, data))
    elif rest:
        items.append(("text", rest, b""))
    # drop blanks between words, merge same-charset neighbours (their bytes
    # collected in a list and joined once: adding bytes to bytes per word would
    # be quadratic in a long run of words)
    merged: list[tuple[str, str, list[bytes]]] = []
    for index, (kind, text, data) in enumerate(items):
        if (
            kind == "text"
            and not text.strip()
            and 0 < index < len(items) - 1
            and items[index - 1][0] == "word"
            and items[index + 1][0] == "word"
        ):
            continue
        if kind == "word" and merged and merged[-1][0] == "word" and merged[-1][1] == text:
            merged[-1][2].append(data)
            continue
        merged.append((kind, text, [data]))
    out: list[str] = []
    previous = ""
    for kind, text, chunks in merged:
        if kind == "text":
            out.append(text)
            previous = "text"
            continue
        if unstructured and previous == "text" and out and out[-1] and out[-1][-1] in _AFTER_PUNCT:
            out.append(" ")
        out.append(_decode_charset(b"".join(chunks), text))
        previous = "word"
    return "".join(out)


def decode_words(value: str) -> str:
    """An unstructured header value as a client shows it: encoded-words
    decoded (also malformed ones), folds collapsed, ends stripped."""
    return collapse(_decode(value, unstructured=True)).strip()


def decode_phrase(value: str) -> str:
    """Encoded-words decoded in a display name or parameter value, nothing else."""
    return _decode(value, unstructured=False)


# ------------------------------------------------------------------ comments


def strip_comments(value: str) -> str:
    """Remove RFC 5322 comments outside quoted strings (nested, escaped).

    An unclosed comment runs to the end of the value.
    """
    if "(" not in value:
        return value
    out: list[str] = []
    depth = 0
    quoted = False
    chars = iter(value)
    for char in chars:
        if depth:
            if char == "\\":
                next(chars, "")
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if not depth:
                    out.append(" ")
            continue
        if quoted:
            out.append(char)
            if char == "\\":
                out.append(next(chars, ""))
            elif char == '"':
                quoted = False
            continue
        if char == '"':
            quoted = True
        elif char == "(":
            depth = 1
            continue
        out.append(char)
    return "".join(out)


# ------------------------------------------------------------------ addresses


class Address(NamedTuple):
    name: str | None
    addr: str


class AddressBudget:
    """How much more address text the structured parser may read for one
    message, in characters; text beyond it is salvaged (addresses kept,
    display names and odd forms such as quoted local parts lost)."""

    def __init__(self, chars: int = MAX_STRUCTURED_PER_MESSAGE) -> None:
        self.left = chars

    def take(self, text: str) -> bool:
        """Whether *text* may go to the structured parser (and count it)."""
        if len(text) > min(self.left, _MAX_STRUCTURED):
            return False
        self.left -= len(text)
        return True


_ANGLE = re.compile(r"<([^<>]*)>")
# A bare x@y, tried only where a run of its characters starts (from inside a
# run it fails the same way, and trying there is quadratic in the run).
_BARE = re.compile(r"(?<![^\s<>()\[\]\",;:@])[^\s<>()\[\]\",;:@]++@[^\s<>()\[\]\",;:@]++")
_ROUTE = re.compile(r"^(?:@[^:,]*+,?)++:")
# One item of an address list: quoted strings, <...> and other characters up
# to a "," or ";" (or a "<" or '"' that is never closed).
_ITEM = re.compile(r'(?:"(?:[^"\\]|\\.)*+"|<[^<>]*+>|[^,;"<]++)*+', re.DOTALL)
_ITEM_AFTER_OPEN_QUOTE = re.compile(r"(?:<[^<>]*+>|[^,;\"<]++)*+", re.DOTALL)
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*+"', re.DOTALL)


def _split_items(text: str) -> list[str]:
    """The items of an address list: split at ``,`` and ``;`` outside quoted
    strings and angle brackets; a ``"`` or ``<`` that is never closed splits
    too.

    A quoted string that fails to close has been scanned to the end of the
    text, and then so would every later one (they are inside it, or behind an
    escape it consumed): after the first, quotes are not tried again. Trying
    each would be quadratic (``"\\"\\"\\"...``).
    """
    items: list[str] = []
    pattern = _ITEM
    size = len(text)
    pos = 0
    while pos <= size:
        match = pattern.match(text, pos)
        assert match is not None  # the pattern matches the empty string
        items.append(match.group())
        pos = match.end()
        if pos < size and text[pos] == '"':
            pattern = _ITEM_AFTER_OPEN_QUOTE
        pos += 1
    return items


def _blank_quoted(text: str) -> str:
    """*text* with each quoted string replaced by a blank (an unclosed one is
    kept, and so is everything after it: see :func:`_split_items`)."""
    out: list[str] = []
    pos = 0
    while (start := text.find('"', pos)) >= 0:
        match = _QUOTED.match(text, start)
        if match is None:
            break
        out.append(text[pos:start])
        out.append(" ")
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def _clean_addr(text: str) -> str:
    text = strip_comments(text)
    text = re.sub(r"\s+", "", text)
    text = _ROUTE.sub("", text)
    return text.strip(".'\"")


def _salvage(text: str) -> list[Address]:
    """Addresses recovered from text the structured parser could not read:
    per item (split at ``,`` and ``;``), the last ``<...@...>``, else every
    bare ``x@y`` outside quoted strings and comments."""
    found: list[Address] = []
    for item in _split_items(text):
        if "@" not in item:
            continue
        bracketed = [b for b in _ANGLE.findall(item) if "@" in b]
        if bracketed:
            candidates = [_clean_addr(bracketed[-1])]
        else:
            outside = _blank_quoted(strip_comments(item))
            candidates = [m.group(0).strip(".'\"<>") for m in _BARE.finditer(outside)]
        for addr in candidates:
            if "@" in addr and not addr.startswith("@") and not addr.endswith("@"):
                found.append(Address(None, addr))
    return found


def _display_name(name: str) -> str | None:
    if "=?" in name:
        name = decode_phrase(name)
    name = collapse(name).strip()
    return name or None


def parse_addresses(value: str, budget: AddressBudget | None = None) -> list[Address]:
    """The mailboxes of an address header, groups flattened, in order.

    Display names are decoded; ``addr`` is ``local@domain`` as written (case
    kept, comments and source routes dropped). A bare local part counts only
    when written in angle brackets (``Moderator <moderator>``); a lone word is
    a name without an address and is skipped. Text the structured parser cannot
    read still gives every ``x@y`` it contains.

    Linear in the length of *value*: a value longer than ``_MAX_STRUCTURED``
    (or than what is left of the *budget*, shared by the calls for one message)
    is read item by item: a group's name then reads as a broken item, its first
    address salvaged from it.
    """
    text = unfold(value).strip()
    if not text:
        return []
    if budget is None:
        budget = AddressBudget()
    if budget.take(text):
        return _dedupe(_read_list(text))
    found: list[Address] = []
    for item in _split_items(text):
        if "@" not in item and "<" not in item:
            continue  # no address: a bare word is a name, a bare local part needs <>
        found.extend(_read_list(item) if budget.take(item) else _salvage(item))
    return _dedupe(found)


def _read_list(text: str) -> list[Address]:
    """:func:`parse_addresses` of a short *text*, through the structured parser."""
    try:
        header = policy.default.header_factory("to", text)
        parsed = list(header.addresses)
        broken = any(type(d).__name__ == "InvalidHeaderDefect" for d in header.defects)
    except Exception:
        return _salvage(text)
    result: list[Address] = []
    for item in parsed:
        try:
            username, domain, spec = item.username, item.domain, item.addr_spec
            name = item.display_name
        except Exception:
            broken = True
            continue
        if not username:
            continue
        if domain:
            if any(c.isspace() for c in spec):
                broken = True
                continue
            result.append(Address(_display_name(name), spec))
        elif re.search(r"<\s*" + re.escape(username) + r"\s*>", text):
            result.append(Address(_display_name(name), username))
        elif "@" in text:
            broken = True
    if "@" in text and (broken or not result):
        # the salvage keeps the written order; names come from the parser
        names = {a.addr.lower(): a for a in result}
        salvaged = [names.pop(a.addr.lower(), a) for a in _salvage(text)]
        result = salvaged + [a for a in result if a.addr.lower() in names]
    return result


def _dedupe(addresses: list[Address]) -> list[Address]:
    seen: set[str] = set()
    out: list[Address] = []
    for address in addresses:
        key = address.addr.lower()
        if key not in seen:
            seen.add(key)
            out.append(address)
    return out


# ---------------------------------------------------------------- message ids


_BRACKETED = re.compile(r"<([^<>]*)>")


def normalize_message_id(value: str) -> str | None:
    """One id as ``<id>``: brackets added, blanks inside removed; None if empty."""
    inner = value.strip()
    if inner.startswith("<"):
        inner = inner[1:]
    if inner.endswith(">"):
        inner = inner[:-1]
    inner = re.sub(r"\s+", "", inner)
    return f"<{inner}>" if inner else None


def parse_message_ids(value: str, *, single: bool = False) -> list[str]:
    """The ids in a Message-ID, In-Reply-To or References value, as ``<id>``.

    Bracketed ids win when there are any (text around them, as in
    ``In-Reply-To: Your message of ... <id>``, is ignored). Without brackets
    the value is split on blanks and commas; for a list only tokens with an
    ``@`` count, while a *single* id (Message-ID) takes its first token.
    """
    text = unfold(value)
    bracketed = _BRACKETED.findall(text)
    if bracketed:
        candidates = bracketed
    else:
        tokens = [t for t in re.split(r"[\s,]+", strip_comments(text).strip()) if t]
        candidates = tokens[:1] if single else [t for t in tokens if "@" in t]
    ids: dict[str, None] = {}  # ordered and without repeats, at no cost per id
    for candidate in candidates:
        normal = normalize_message_id(candidate)
        if normal is not None:
            ids.setdefault(normal, None)
    return list(ids)


# ---------------------------------------------------------------------- dates


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
# Separators are blanks with at most one dash among them, written so that a
# long run of blanks is crossed once (``\s*[-\s]\s*`` splits it every way).
_LOOSE_DATE = re.compile(
    r"(\d{1,2})(?:\s++(?:-\s*+)?|-\s*+)([A-Za-z]{3})[A-Za-z]*+\.?(?:\s++(?:-\s*+)?|-\s*+)(\d{2,4})"
    r"\s++(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?(?:\.\d++)?\s*+([+-]\d{2}:?\d{2}|[A-Za-z]{1,5})?"
)


_POSIX_ZONE = re.compile(r"\b([A-Z]{3})[0-9][A-Z]{3}\b")


def _zone(text: str | None) -> timezone:
    if text and text[0] in "+-":
        digits = text[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4]))
        if offset >= timedelta(hours=24):
            return UTC
        return timezone(-offset if text[0] == "-" else offset)
    if text:
        parsed = email.utils.parsedate_tz(f"1 Jan 2000 00:00:00 {text}")
        if parsed and parsed[9] is not None:
            return timezone(timedelta(seconds=parsed[9]))
    return UTC


def parse_date(value: str) -> datetime | None:
    """A Date value as an aware datetime (UTC when the zone is unknown), or None.

    Comments are ignored; for a Received-style value the date after the last
    ``;`` is read.
    """
    text = collapse(strip_comments(value)).strip()
    if ";" in text:
        text = text.rsplit(";", 1)[1].strip()
    text = _POSIX_ZONE.sub(r"\1", text)  # "EST5EDT" reads as "EST"
    if not text:
        return None
    result: datetime | None
    try:
        result = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        result = None
    if result is None:
        match = _LOOSE_DATE.search(text)
        if match is None:
            return None
        day, month_name, year, hour, minute, second, zone = match.groups()
        month = _MONTHS.get(month_name.lower())
        if month is None:
            return None
        year_number = int(year)
        if year_number < 100:
            year_number += 2000 if year_number < 50 else 1900
        try:
            result = datetime(
                year_number,
                month,
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                tzinfo=_zone(zone),
            )
        except (ValueError, OverflowError):
            return None
    if result.tzinfo is None:
        result = result.replace(tzinfo=UTC)
    return result


# ----------------------------------------------------- Content-Type parameters


class ContentType(NamedTuple):
    """A parsed Content-Type (or Content-Disposition: *maintype* is then the
    disposition and *subtype* None). *maintype* is None when the value has no
    type at all (``/plain``, ``;charset=...``)."""

    maintype: str | None
    subtype: str | None
    params: tuple[tuple[str, str], ...]

    @property
    def value(self) -> str | None:
        if self.maintype is None:
            return None
        return f"{self.maintype}/{self.subtype}" if self.subtype else self.maintype

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None


_MAX_PARAMS = 100
_MAX_SECTION = 9999
_SECTION = re.compile(r"^(.+?)\*(\d+)(\*?)$")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
# Blanks followed by "name=" (a parameter whose ";" is missing). Only the start
# of a run of blanks is tried and the repeats are possessive: otherwise the
# pattern is retried from every blank of a long run (quadratic), and the name's
# repeats overlap ("1111..." is tried at every split between them).
_MISSING_SEP = re.compile(r"(?<![ \t])[ \t]++(?=[A-Za-z0-9_.-]++\*?[0-9]*+\*?[ \t]*+=)")
_LEADING_CHARSET = re.compile(r"^([A-Za-z0-9_.:+-]{1,40})'(?:([A-Za-z0-9-]{0,20})')?")


# A parameter segment: quoted strings (an unclosed one runs to the end) and
# other characters up to a ";". Patterns, not a loop per character: a
# Content-Type is read several times per part and may be long.
_SEGMENT = re.compile(r'(?:"(?:[^"\\]|\\.)*+(?:"|\\?\Z)|[^";])*+', re.DOTALL)
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*+)(\\?)"?', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _split_segments(text: str) -> list[str]:
    """Split on ``;`` outside quoted strings (at most ``_MAX_PARAMS`` + 1
    segments; the rest is dropped)."""
    segments: list[str] = []
    pos = 0
    while True:
        match = _SEGMENT.match(text, pos)
        assert match is not None  # the pattern matches the empty string
        segments.append(match.group())
        pos = match.end()
        if pos >= len(text) or len(segments) > _MAX_PARAMS:
            return segments
        pos += 1  # the ";"


def _unquote(text: str) -> tuple[str, int]:
    """The content of the quoted string starting at text[0] == '"' and the
    offset after it; an unclosed one runs to the end (quoted-pairs unescaped)."""
    match = _QUOTED_STRING.match(text)
    assert match is not None  # text starts with '"'
    return _QUOTED_PAIR.sub(r"\1", match.group(1)) + match.group(2), match.end()


def _value(raw: str) -> tuple[str, bool, str]:
    """A parameter's value, whether it was quoted, and what follows it when
    another ``name=value`` comes without its ``;`` (folded onto a new line)."""
    raw = raw.lstrip(" \t")
    if raw.startswith('"'):
        value, end = _unquote(raw)
        rest = raw[end:]
        return value, True, rest if "=" in rest else ""
    parts = _MISSING_SEP.split(raw, maxsplit=1)
    raw = parts[0].strip()
    rest = parts[1] if len(parts) == 2 else ""
    end = len(raw)  # trailing comments cut off by moving the end (no copy per comment)
    while end and raw[end - 1] == ")":  # trailing comment: "us-ascii (Plain text)"
        start = raw.rfind("(", 0, end)
        if start <= 0 or not raw[start - 1].isspace():
            break
        end = start
        while end and raw[end - 1].isspace():
            end -= 1
    raw = raw[:end]
    if raw.startswith("("):
        raw = strip_comments(raw).strip()
    return raw, False, rest


def _percent_decode(text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)


def _assemble(sections: dict[int, tuple[str, bool]]) -> str:
    """Join RFC 2231 sections: percent-decoded runs in the first section's
    charset, plain sections as written (tolerating a repeated ``charset'``
    prefix on later sections, as some clients write it)."""
    charset: str | None = None
    pieces: list[tuple[bool, str | bytes]] = []
    for number in sorted(sections):
        text, extended = sections[number]
        if extended:
            prefix = _LEADING_CHARSET.match(text)
            if prefix is not None and (
                number == min(sections) or resolve_charset(prefix.group(1)) is not None
            ):
                if charset is None and prefix.group(1):
                    charset = prefix.group(1)
                text = text[prefix.end() :]
            elif number == min(sections) and text.count("'") >= 2:
                head, _, text = text.partition("'")
                _, _, text = text.partition("'")
                charset = head or None
            data = _percent_decode(text)
            if pieces and pieces[-1][0]:
                last = pieces[-1][1]
                assert isinstance(last, bytes)
                pieces[-1] = (True, last + data)
            else:
                pieces.append((True, data))
        else:
            pieces.append((False, text))
    out: list[str] = []
    for _, piece in pieces:
        if isinstance(piece, bytes):
            out.append(_decode_charset(piece, charset or "utf-8"))
        else:
            out.append(piece)
    return "".join(out)


_MISSING_SEMICOLON = re.compile(
    r"^(\s*+[^\s;/=\"]++\s*+/\s*+[^\s;=\"]++)(\s++)(?=[A-Za-z0-9_.-]++\*?\d*+\*?\s*+=)"
)


def repair_content_type(value: str) -> str:
    """Insert the ``;`` missing before the first parameter of a Content-Type
    (``multipart/mixed boundary="b"``, as some mailers fold it)."""
    if ";" in value:
        return value
    return _MISSING_SEMICOLON.sub(r"\1;\2", value, count=1)


def parse_content_type(value: str) -> ContentType:
    """Parse a Content-Type or Content-Disposition value leniently.

    Handles folding anywhere, comments, RFC 2231 (``name*=charset'lang'...``,
    continuations ``name*0*=``, sections out of order or with gaps),
    RFC 2047 encoded-words in parameter values (forbidden, universal), quoted
    and unquoted values with ``:`` or ``=`` in them, and ``name=`` without a
    value (dropped). Parameter names are lower-cased; when both ``name`` and
    ``name*`` are given the RFC 2231 one wins.
    """
    text = unfold(value)
    segments = _split_segments(text)
    first = _MISSING_SEP.split(segments[0], maxsplit=1)
    if len(first) == 2:  # "type/sub name=value": the ";" is missing
        segments[0:1] = first
    head = collapse(strip_comments(segments[0])).strip()
    maintype: str | None
    subtype: str | None
    if "/" in head:
        main, _, sub = head.partition("/")
        maintype = main.strip().lower() or None
        subtype = sub.strip().lower() or None
        if maintype is None:
            subtype = None
    else:
        maintype = head.lower() or None
        subtype = None
    simple: dict[str, str] = {}
    extended_whole: dict[str, str] = {}
    sectioned: dict[str, dict[int, tuple[str, bool]]] = {}
    order: dict[str, None] = {}  # the names in order of appearance
    pending = list(reversed(segments[1 : _MAX_PARAMS + 1]))
    attempts = 0  # parameters read, repeated names included: what the work grows with
    while pending and len(order) < _MAX_PARAMS and attempts < _MAX_PARAMS:
        attempts += 1
        segment = pending.pop()
        name_part, sep, raw_value = segment.partition("=")
        if not sep:
            continue
        name = strip_comments(name_part).strip().lower()
        if not name or name.startswith("*") or any(c.isspace() for c in name):
            continue
        text_value, quoted, rest = _value(raw_value)
        if rest:
            pending.append(rest)
        if not text_value and not quoted:
            continue
        section = _SECTION.match(name)
        if section is not None:
            base, number, star = section.group(1), int(section.group(2)), section.group(3)
            if number > _MAX_SECTION:
                continue
            sectioned.setdefault(base, {}).setdefault(number, (text_value, bool(star)))
            key = base
        elif name.endswith("*") and len(name) > 1:
            key = name[:-1]
            extended_whole.setdefault(key, text_value)
        else:
            key = name
            simple.setdefault(key, text_value)
        order.setdefault(key, None)
    params: list[tuple[str, str]] = []
    for key in order:
        if key in extended_whole:
            result = _assemble({0: (extended_whole[key], True)})
        elif key in sectioned:
            result = _assemble(sectioned[key])
            if "=?" in result and not any(ext for _, ext in sectioned[key].values()):
                result = decode_phrase(result)
        else:
            result = simple[key]
            if "=?" in result:
                result = decode_phrase(result)
        params.append((key, result))
    return ContentType(maintype, subtype, tuple(params))

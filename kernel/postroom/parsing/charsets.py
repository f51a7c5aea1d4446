"""Turning bytes of an unknown or lying charset into text.

Mail declares charsets badly: undeclared 8-bit text, ``x-unknown``,
``unknown-8bit``, names Python does not know (``cp-1252``, ``iso-8859-8-i``),
and declarations that are simply wrong (``us-ascii`` over Windows-1252 bytes,
``iso-8859-1`` over UTF-8). :func:`decode_bytes` decodes with the declared
charset when it works and otherwise repairs, telling the caller what it did so
the repair can be listed as a parse defect.

Declared names are resolved the way mail clients and browsers do (the WHATWG
encoding rules): ``iso-8859-1`` and ``us-ascii`` labels mean Windows-1252,
``gb2312`` means GB18030, ``ks_c_5601-1987`` and ``euc-kr`` mean CP949,
``shift_jis`` means CP932 (the Microsoft supersets real mail is written in).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import attrs
import charset_normalizer

#: Labels Python does not know, or knows as a narrower charset than mail uses.
_ALIASES: dict[str, str] = {
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "iso_8859-1:1987": "cp1252",
    "iso-ir-100": "cp1252",
    "ibm819": "cp1252",
    "cp819": "cp1252",
    "csisolatin1": "cp1252",
    "cp-1252": "cp1252",
    "win-1252": "cp1252",
    "windows1252": "cp1252",
    "x-cp1252": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "gb2312": "gb18030",
    "gb_2312": "gb18030",
    "gb_2312-80": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "cp936": "gb18030",
    "csgb2312": "gb18030",
    "chinese": "gb18030",
    "big5": "big5hkscs",
    "big-5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "csbig5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ks_c_5601-1989": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "korean": "cp949",
    "euc-kr": "cp949",
    "cseuckr": "cp949",
    "windows-949": "cp949",
    "x-windows-949": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "csshiftjis": "cp932",
    "windows-31j": "cp932",
    "x-euc-jp": "euc_jp",
    "iso-2022-jp": "iso2022_jp_ext",
    "csiso2022jp": "iso2022_jp_ext",
    "cp50220": "iso2022_jp_ext",
    "cp50221": "iso2022_jp_ext",
    "cp50222": "iso2022_jp_ext",
    "iso-8859-8-i": "iso8859_8",
    "iso-8859-8-e": "iso8859_8",
    "iso-8859-6-i": "iso8859_6",
    "iso-8859-6-e": "iso8859_6",
    "logical": "iso8859_8",
    "visual": "iso8859_8",
    "unicode-1-1-utf-8": "utf-8",
    "unicode-2-0-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "x-mac-roman": "mac_roman",
    "x-mac": "mac_roman",
    "mac": "mac_roman",
    "x-mac-cyrillic": "mac_cyrillic",
    "koi8": "koi8_r",
}

#: Labels that mean "no idea": decode as if nothing had been declared.
_UNKNOWN = frozenset(
    {
        "x-unknown",
        "unknown",
        "unknown-8bit",
        "x-unknown-8bit",
        "8bit",
        "8-bit",
        "default",
        "charset",
        "none",
        "null",
        "binary",
        "x-binary",
        "x-user-defined",
    }
)

#: Text codecs Python knows that must never be used on mail.
_REFUSED = frozenset(
    {"undefined", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "mbcs", "oem"}
)

#: Fallbacks tried, silently, when the resolved codec fails: these labels are
#: routinely used for text written in a superset.
_SUPERSETS: dict[str, tuple[str, ...]] = {
    "cp1252": ("latin-1",),
    "iso2022_jp_ext": ("iso2022_jp_2", "iso2022_jp_2004", "iso2022_jp_3", "cp932"),
    "euc_jp": ("euc_jis_2004", "cp932"),
    "big5hkscs": ("cp950",),
    "cp949": ("johab",),
}

#: Codecs charset-normalizer may choose from: what mail is actually written in.
#: Restricting the choice keeps short texts from being "detected" as UTF-16 or
#: as an exotic code page.
_DETECTABLE = [
    "cp1252",
    "iso8859_15",
    "cp1250",
    "iso8859_2",
    "cp1251",
    "koi8_r",
    "koi8_u",
    "cp1253",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "cp874",
    "cp932",
    "euc_jp",
    "iso2022_jp",
    "gb18030",
    "big5",
    "cp949",
    "mac_roman",
]

#: Python codec names shown as the IANA labels people know.
_DISPLAY = {
    "cp1252": "windows-1252",
    "cp1250": "windows-1250",
    "cp1251": "windows-1251",
    "cp1253": "windows-1253",
    "cp1254": "windows-1254",
    "cp1255": "windows-1255",
    "cp1256": "windows-1256",
    "cp1257": "windows-1257",
    "cp874": "windows-874",
    "utf_8": "utf-8",
    "utf-8": "utf-8",
    "latin-1": "iso-8859-1",
    "iso8859_15": "iso-8859-15",
    "iso8859_2": "iso-8859-2",
    "koi8_r": "koi8-r",
    "koi8_u": "koi8-u",
    "cp932": "shift_jis",
    "euc_jp": "euc-jp",
    "iso2022_jp": "iso-2022-jp",
    "gb18030": "gb18030",
    "big5": "big5",
    "cp949": "euc-kr",
    "mac_roman": "macintosh",
}

#: The codec :func:`repair` names when it fell back to UTF-8 with replacement.
LOSSY_UTF8 = "utf-8 with replacement characters"

#: Codecs whose text is written in ASCII bytes (escape sequences, UTF-7):
#: ASCII-only data under these labels must still be decoded with them.
_SEVEN_BIT = re.compile(r"iso2022|utf[-_]?7|hz|utf[-_]?(16|32)")

_WESTERN = frozenset({"cp1252", "ascii", "latin-1", "iso8859_15"})
_MAX_DETECT = 256 * 1024
_UTF8_SEQ = re.compile(rb"[\xc2-\xf4][\x80-\xbf]+")
_ASCII = bytes(range(128))
_PIECE = 1 << 20


def display_name(codec: str) -> str:
    """The IANA-style label for a Python codec name (for defect texts)."""
    if codec == LOSSY_UTF8:
        return codec
    if codec in _DISPLAY:
        return _DISPLAY[codec]
    return re.sub(r"^iso-?8859-(\d+)$", r"iso-8859-\1", codec.replace("_", "-"))


def resolve_charset(label: str | None) -> str | None:
    """The Python codec for a declared charset label, or None when unknown.

    ``us-ascii`` resolves to ``ascii`` (not Windows-1252) so that 8-bit bytes
    under it are noticed and repaired with a note.
    """
    if not label:
        return None
    name = label.strip().strip("\"'").strip().lower()
    if not name or name in _UNKNOWN or len(name) > 40:
        return None
    if name in _ALIASES:
        return _ALIASES[name]
    for candidate in (name, name.replace("_", "-"), re.sub(r"[-_ ]", "", name)):
        if candidate in _ALIASES:
            return _ALIASES[candidate]
        try:
            info = codecs.lookup(candidate)
        except (LookupError, ValueError):
            continue
        codec = info.name
        if codec in _REFUSED or not getattr(info, "_is_text_encoding", True):
            return None
        if codec == "iso8859-1":
            return "cp1252"
        return codec
    return None


def _strict(data: bytes | bytearray, codec: str) -> str | None:
    if len(data) > _PIECE and _keeps_ascii(codec):
        return _strict_pieces(data, codec)
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _strict_pieces(data: bytes | bytearray, codec: str) -> str | None:
    """``data.decode(codec)`` a piece at a time, the text grown in place: a
    failing decode of a large body gives up having made only a piece (decoding
    it whole, CPython makes room for two texts first)."""
    decoder = codecs.getincrementaldecoder(codec)("strict")
    view = memoryview(data)
    text = ""
    try:
        for start in range(0, len(view), _PIECE):
            text += decoder.decode(view[start : start + _PIECE])
        text += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    return text


def _mostly_utf8(data: bytes | bytearray) -> bool:
    """UTF-8 with a few broken bytes (a truncated or spliced text)?

    Counted a piece at a time: a large body is neither listed match by match
    nor decoded whole just to count.
    """
    valid = sum(1 for _ in _UTF8_SEQ.finditer(data))
    if not valid:
        return False
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    view = memoryview(data)
    broken = 0
    for start in range(0, len(view), _PIECE):
        broken += decoder.decode(view[start : start + _PIECE]).count("\ufffd")
    broken += decoder.decode(b"", final=True).count("\ufffd")
    return broken * 10 <= valid


def detect(data: bytes | bytearray) -> str | None:
    """charset-normalizer's choice among mail charsets, preferring Windows-1252
    on a tie (short Western texts are ambiguous between many code pages)."""
    sample = data[:_MAX_DETECT]
    results = charset_normalizer.from_bytes(sample, cp_isolation=_DETECTABLE)
    best = results.best()
    if best is None:
        return None
    for match in results:
        if (
            match.percent_chaos <= best.percent_chaos + 1.0
            and match.percent_coherence >= best.percent_coherence - 5.0
            and "cp1252" in match.could_be_from_charset
        ):
            return "cp1252"
    return str(best.encoding)


#: Charset detections one message may cost (real mail needs a few at most).
MAX_DETECTIONS = 32


@attrs.define
class _Budget:
    left: int
    last: str | None = None


_BUDGET: ContextVar[_Budget | None] = ContextVar("postroom_detection_budget", default=None)


@contextmanager
def detection_budget(limit: int = MAX_DETECTIONS) -> Iterator[None]:
    """Bound the charset detections made while one message is read.

    Each detection costs a fixed ~0.3 ms besides its length, and a message can
    hold any number of undecodable pieces (120,000 header fields in 8-bit bytes
    took 41 s, one detection each). Within this scope :func:`repair` detects at
    most *limit* times; after that it reuses the charset detected last (UTF-8
    with replacements if none was). Nested scopes share the outer budget; with
    no scope (a plugin decoding one field) detection is not bounded.
    """
    if _BUDGET.get() is not None:
        yield
        return
    token = _BUDGET.set(_Budget(limit))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _detect_within_budget(data: bytes | bytearray) -> str | None:
    budget = _BUDGET.get()
    if budget is not None:
        if budget.left <= 0:
            return budget.last
        budget.left -= 1
    try:
        codec = detect(data)
    except Exception:  # detection is a heuristic: never let it fail a message
        codec = None
    if budget is not None and codec:
        budget.last = codec
    return codec


def repair(data: bytes | bytearray, hints: Sequence[str] = ()) -> tuple[str, str]:
    """Decode bytes whose charset is unknown or wrong: ``(text, codec used)``.

    Order: UTF-8 (strict, then with a few broken bytes), the other charsets the
    same message declares (*hints*, already resolved), charset-normalizer
    (within the :func:`detection_budget`), finally UTF-8 with replacement
    characters (codec :data:`LOSSY_UTF8`).
    """
    text = _strict(data, "utf-8")
    if text is not None:
        return text, "utf-8"
    if _mostly_utf8(data):
        return data.decode("utf-8", "replace"), LOSSY_UTF8
    for hint in hints:
        if hint in ("ascii", "utf-8"):
            continue
        text = _strict(data, hint)
        if text is not None:
            return text, hint
    codec = _detect_within_budget(data)
    if codec:
        text = _strict(data, codec)
        if text is None:
            text = data.decode(codec, "replace")
        return text, codec
    return data.decode("utf-8", "replace"), LOSSY_UTF8


def decode_bytes(
    data: bytes | bytearray, declared: str | None, hints: Sequence[str] = ()
) -> tuple[str, str | None]:
    """Decode *data* declared as *declared*: ``(text, note)``.

    *note* is None when the declaration was good, else a short description of
    the repair (``"charset 'us-ascii' was wrong, decoded as windows-1252"``).
    """
    codec = resolve_charset(declared)
    label = (declared or "").strip().strip("\"'")
    if data.isascii() and not (codec and _SEVEN_BIT.match(codec)):
        if (codec is None or codec == "ascii") and (b"\x1b$" in data or b"\x1b(" in data):
            for jis in ("iso2022_jp_ext", "iso2022_jp_2"):  # escape sequences: raw ISO-2022-JP
                text = _strict(data, jis)
                if text is not None:
                    what = f"charset '{label}' was wrong" if label else "charset undeclared"
                    return text, f"{what}, decoded as iso-2022-jp"
        return data.decode("ascii"), None
    if codec is not None and codec != "ascii":
        text = _strict(data, codec)
        if text is not None:
            if codec in _WESTERN and _UTF8_SEQ.search(data) and _strict(data, "utf-8"):
                return data.decode("utf-8"), f"charset '{label}' was wrong, decoded as utf-8"
            return text, None
        for superset in _SUPERSETS.get(codec, ()):
            text = _strict(data, superset)
            if text is not None:
                return text, None
    text, used = repair(data, hints)
    shown = display_name(used)
    if used == LOSSY_UTF8 and codec == "utf-8":
        note = f"charset '{label}' has undecodable bytes, replaced"
    elif not label:
        note = f"charset undeclared, decoded as {shown}"
    elif codec is None:
        note = f"unknown charset '{label}', decoded as {shown}"
    else:
        note = f"charset '{label}' was wrong, decoded as {shown}"
    return text, note


def _keeps_ascii(codec: str) -> bool:
    """Does *codec* read ASCII bytes as those characters (so that an ASCII
    body reads the same with it as with ``ascii``, and stateful codecs are out)?"""
    if _SEVEN_BIT.match(codec):
        return False
    try:
        return _ASCII.decode(codec) == _ASCII.decode("ascii")
    except (UnicodeDecodeError, LookupError):
        return False


def _has_jis_escape(data: bytes) -> bool:
    return b"\x1b$" in data or b"\x1b(" in data


def decode_pieces(pieces: Iterable[bytes], declared: str | None) -> tuple[str, int] | None:
    """``(text, size in bytes)`` of the concatenated *pieces*, CRLF read as LF,
    when :func:`decode_bytes` would decode them without a repair; else None.

    For bodies too large to hold twice: the text grows in place, one piece at
    a time, and the bytes are never whole. It decodes as :func:`decode_bytes`
    does when the declared charset reads the body as it is: ASCII as ASCII,
    otherwise the declared codec, strictly. None (the caller then decodes the
    whole with :func:`decode_bytes`) when that is not enough to know: the
    declared codec fails; nothing or ``us-ascii`` is declared over 8-bit bytes,
    or over ISO-2022-JP escapes; a Western label is over UTF-8 sequences; the
    codec does not keep ASCII as it is (ISO-2022, UTF-7, UTF-16...).
    """
    codec = resolve_charset(declared)
    if codec is None or codec == "ascii":
        name = "ascii"
    elif _keeps_ascii(codec):
        name = codec
    else:
        return None
    western = name in _WESTERN
    try:
        decoder = codecs.getincrementaldecoder(name)("strict")
    except LookupError:
        return None
    text = ""
    held = ""  # a CR at the end of a piece: its LF may start the next one
    size = 0
    last = b""
    try:
        for piece in pieces:
            size += len(piece)
            seam = last + piece[:3]
            last = piece[-3:]
            if name == "ascii" and (_has_jis_escape(piece) or _has_jis_escape(seam)):
                return None
            utf8 = western and not piece.isascii()
            if utf8 and (_UTF8_SEQ.search(piece) or _UTF8_SEQ.search(seam)):
                return None
            chunk = held + decoder.decode(piece)
            held = "\r" if chunk.endswith("\r") else ""
            text += (chunk[:-1] if held else chunk).replace("\r\n", "\n")
        text += (held + decoder.decode(b"", final=True)).replace("\r\n", "\n")
    except UnicodeDecodeError:
        return None
    return text, size

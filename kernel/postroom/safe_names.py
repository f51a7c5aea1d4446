"""Safe file names for attachments: what a consumer may use on a file system.

An attachment's name is whatever the sender wrote: ``../../etc/passwd``, a
name whose U+202E (right-to-left override) shows ``invoice‮fdp.exe`` as
``invoiceexe.pdf``, ``CON``, three thousand characters, or nothing.
:attr:`postroom.model.Attachment.filename` keeps it as sent (for display);
``safe_filename`` beside it is made from it here, and is what anything that
touches a file system must use:

* NFKC-normalised (a fullwidth solidus becomes ``/``, then ``_``), format,
  private-use, unassigned and surrogate characters removed (the bidi controls
  U+202A-U+202E and U+2066-U+2069, U+200E/U+200F, zero-width characters, a
  BOM); controls and line or paragraph separators become spaces;
* path separators and what Windows refuses (``< > : " / \\ | ? *``) become ``_``;
* blanks collapsed to one space; leading dots and blanks (hidden files,
  ``..``) and trailing dots and blanks (Windows drops them) removed; a
  leading ``-`` (read as an option by many tools) becomes ``_``;
* Windows' reserved device names (``CON``, ``PRN``, ``AUX``, ``NUL``,
  ``COM0``-``COM9``, ``LPT0``-``LPT9``, also with an extension) get a ``_`` in front;
* at most :data:`MAX_BYTES` bytes of UTF-8, the extension kept;
* nothing left: ``attachment`` with the content type's extension (``.eml``
  for an attached message);
* unique within one message, ignoring case: ``report.pdf``, ``report (2).pdf``.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from postroom.model import Attachment

#: Longest safe name in UTF-8 bytes: common file systems allow 255 (ext4, NTFS
#: in UTF-16 units), encrypted ones about 140; room is left for a suffix.
MAX_BYTES = 140
#: Longest extension kept apart when a name is shortened.
MAX_EXTENSION = 16
FALLBACK = "attachment"

_WINDOWS_FORBIDDEN = str.maketrans(dict.fromkeys('<>:"/\\|?*', "_"))
_BLANKS = re.compile(r"\s+")
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{n}" for port in ("COM", "LPT") for n in range(10)]
)
_DROPPED = frozenset({"Cf", "Co", "Cn", "Cs"})
_BLANKED = frozenset({"Cc", "Zl", "Zp", "Zs"})
# the standard library's own table only: the same answer on every machine
_TYPES = mimetypes.MimeTypes()


def safe_filename(name: str | None, content_type: str = "", *, is_message: bool = False) -> str:
    """A file name safe to create in any directory, made from *name*."""
    text = _characters(_characters(name or ""))  # a dropped character may let others compose
    text = text.translate(_WINDOWS_FORBIDDEN)
    text = _BLANKS.sub(" ", text).lstrip(". ").rstrip(". ")
    if text.startswith("-"):
        text = "_" + text[1:]
    if not text:
        text = FALLBACK + _extension_for(content_type, is_message)
    if text.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        text = "_" + text
    return _shorten(text, MAX_BYTES)


def _characters(text: str) -> str:
    """NFKC, then without format and the like, blanks for controls and separators."""
    text = unicodedata.normalize("NFKC", text)
    table: dict[int, str | None] = {}
    for char in set(text):  # each distinct character looked up once
        category = unicodedata.category(char)
        if category in _DROPPED:
            table[ord(char)] = None
        elif category in _BLANKED:
            table[ord(char)] = " "
    return text.translate(table)


def _extension_for(content_type: str, is_message: bool) -> str:
    if is_message or content_type.lower() == "message/rfc822":
        return ".eml"
    return _TYPES.guess_extension(content_type.lower().strip()) or ""


def _split(name: str) -> tuple[str, str]:
    """``("report", ".pdf")``; no extension when the dot starts the name or the
    part after it is long or has blanks."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > MAX_EXTENSION - 1 or " " in extension:
        return name, ""
    return stem, "." + extension


def _shorten(name: str, limit: int, suffix: str = "") -> str:
    """*name* with *suffix* before its extension, cut to *limit* UTF-8 bytes."""
    stem, extension = _split(name)
    room = limit - len((suffix + extension).encode())
    data = stem.encode()
    if len(data) > room:
        stem = data[:room].decode(errors="ignore").rstrip(". ")  # never half a character
    return stem + suffix + extension


def unique_safe_names(attachments: Sequence[Attachment]) -> list[Attachment]:
    """*attachments* with safe names unique within the message, ignoring case
    (case-insensitive file systems would make two of one); the first of a kind
    keeps its name, the next get `` (2)``, `` (3)``..."""
    taken: set[str] = set()
    #: the last number given to each name: ten thousand parts named alike
    #: take linear time, not a search from (2) for each
    last: dict[str, int] = {}
    result = []
    for attachment in attachments:
        name = attachment.safe_filename
        if name.casefold() in taken:
            key = name.casefold()
            number = last.get(key, 1)
            while name.casefold() in taken:
                number += 1
                name = _shorten(attachment.safe_filename, MAX_BYTES, f" ({number})")
            last[key] = number
        taken.add(name.casefold())
        if name != attachment.safe_filename:
            attachment = attrs.evolve(attachment, safe_filename=name)
        result.append(attachment)
    return result

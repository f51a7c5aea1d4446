"""``policy.default``, minus its habit of raising on odd headers."""

from __future__ import annotations

import re
from email.policy import EmailPolicy
from functools import lru_cache
from typing import Any

from postroom.parsing.headers import parse_content_type, repair_content_type

#: Headers the parser reads again and again (``get_content_type`` alone builds
#: the Content-Type object several times per part): their objects are cached.
_CACHED = frozenset({"content-type", "content-transfer-encoding", "content-disposition"})
#: The longest value given to the structured header parser: its cost grows
#: quadratically with the length of hostile text (thousands of repeated
#: parameters took minutes), and a real value is rarely this long.
_MAX_STRUCTURED = 1024
_LINEBREAK = re.compile(r"\r\n|\r|\n")
_SURROGATE = re.compile("[\udc80-\udcff]")


class TolerantPolicy(EmailPolicy):
    """``email.policy.default`` whose header objects fall back to plain text.

    Building a structured header can raise on input real mail contains (for
    example an ``AttributeError`` for a group inside some ``To`` values). The
    message would then fail as a whole, inside the parser (which reads
    Content-Type and Content-Transfer-Encoding) or later; instead the header
    reads as its unfolded raw text, like the ``compat32`` policy gives it.

    The raw text is also what a value longer than ``_MAX_STRUCTURED`` reads
    as (bounding the structured parser's cost), and a value with 8-bit bytes:
    a header object would turn them into U+FFFD, so a boundary with an 8-bit
    byte would never match its delimiter lines (and could not be written back
    as bytes). Such a Content-Type is read by postroom's own linear parser
    instead (:func:`_content_type_text`). The parse stage reads every header
    value from the raw text itself; only the ``email`` package's own reading
    of the content type, boundary and transfer encoding goes through here.

    A Content-Type whose first parameter lacks its ``;``
    (``multipart/mixed boundary=x``) is repaired before anything reads it, so
    the parser finds the boundary.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if len(value) > _MAX_STRUCTURED or _SURROGATE.search(value):
            return _raw(name, value)
        if name.lower() in _CACHED:
            return _fetch(self, name, value)
        return _fetch_uncached(self, name, value)


def _raw(name: str, value: str) -> str:
    """The value unfolded (the ``email`` package's own unfolding); a
    Content-Type as :func:`_content_type_text` gives it."""
    text = _LINEBREAK.sub("", value)
    return _content_type_text(text) if name.lower() == "content-type" else text


@lru_cache(maxsize=8)  # the email package reads a part's type several times in a row
def _content_type_text(value: str) -> str:
    """A long or 8-bit Content-Type, as read by :func:`parse_content_type`
    (linear, lenient), rewritten to the type and the two parameters the
    ``email`` package uses (boundary, charset).

    Its own parameter reading copies the rest of the value once per
    parameter and counts quotes from the start once per ``;`` in a quoted
    string: quadratic over a long raw value, linear over this one. A value
    that needs quoting within quotes (never a valid boundary or charset) is
    left out.
    """
    parsed = parse_content_type(value)
    text = parsed.value or ""
    for param in ("boundary", "charset"):
        found = parsed.param(param)
        if found is not None and not any(c in found for c in '";\\'):
            text += f'; {param}="{found}"'
    return text


def _fetch_uncached(policy: TolerantPolicy, name: str, value: str) -> Any:
    if name.lower() == "content-type":
        value = repair_content_type(value)
    try:
        return EmailPolicy.header_fetch_parse(policy, name, value)
    except Exception:
        return "".join(value.splitlines())


@lru_cache(maxsize=2048)
def _fetch(policy: TolerantPolicy, name: str, value: str) -> Any:
    return _fetch_uncached(policy, name, value)


TOLERANT = TolerantPolicy()

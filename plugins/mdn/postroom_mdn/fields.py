"""A tolerant reader of report field blocks (``Name: value`` lines).

The ``email`` package would read a disposition part as a header block, but it
stops at the first line that is not a header and keeps the folds; mail
clients write blank lines inside the block, indent it, or add junk lines. This
reader keeps every field it can recognise, in order, with its value unfolded
(RFC 5322: line breaks before whitespace removed, nothing else changed) and
trimmed at both ends. Plain text, no MIME: the caller picked the part.
"""

from __future__ import annotations

import re

#: ``Name: value``: a field name is printable ASCII without a colon or blank;
#: blanks before the colon are obsolete syntax (RFC 5322 4.5) but seen in the wild
_FIELD = re.compile(r"([!-9;-~]+)[ \t]*:(.*)")
_LINES = re.compile(r"\r\n|\n|\r")


def parse_fields(text: str) -> list[tuple[str, str]]:
    """The fields of *text* in order, as ``(name as written, unfolded value)``.

    A line starting with a blank continues the previous field; after a blank
    line or a line that is not a field there is no previous field, and an
    indented field line starts a field of its own. Junk lines are skipped.
    """
    fields: list[tuple[str, list[str]]] = []
    open_field = False
    for line in _LINES.split(text):
        if not line.strip():
            open_field = False
            continue
        if line[0] in " \t" and open_field:
            fields[-1][1].append(line)
            continue
        match = _FIELD.fullmatch(line.strip(" \t"))
        if match is None:
            open_field = False
            continue
        fields.append((match.group(1), [match.group(2)]))
        open_field = True
    return [(name, "".join(pieces).strip(" \t")) for name, pieces in fields]


def first(fields: list[tuple[str, str]], name: str) -> str | None:
    """The value of the first field called *name* (case-insensitive), or None."""
    wanted = name.lower()
    return next((value for key, value in fields if key.lower() == wanted), None)

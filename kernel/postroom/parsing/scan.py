"""Cheap checks on the raw bytes before the ``email`` package sees them.

The ``email`` parser accepts anything and recurses once per MIME level (and
checks every line against every enclosing boundary), so a message nested
10,000 levels deep would exhaust the stack or the CPU before any limit could
be checked on its result. :func:`scan_structure` walks the lines once, the way
the ``email`` feed parser splits them, keeping a stack of open boundaries and
counting entities and nesting without recursion; it stops as soon as a limit
is passed, and can report where each leaf's body lies (so the parser can keep
large bodies away from the ``email`` package). :func:`check_header_block`
decides whether there is a header block at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from typing import IO, NamedTuple

from postroom.parsing._policy import TOLERANT

#: A real header field line: a field name, optional blanks, a colon.
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
#: What the email feed parser accepts as a header line (its ``headerRE``).
_FEED_HEADER = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
#: A field name followed by blanks before its colon (RFC 5322 obsolete syntax).
_SPACED_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+([ \t]+):")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n|\r\r")


class HeaderBlock(NamedTuple):
    """The top-level header block and the reason it is unusable.

    ``data`` is the block as the parser should read it: field names written
    with blanks before the colon (``Subject :``, obsolete syntax the email
    package does not accept) are closed up. ``end`` is where the block ends in
    the original bytes.
    """

    data: bytes
    problem: str | None
    end: int = 0


def _lines(data: bytes, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(offset, line without its end)`` split like the email feed parser does."""
    pos = start
    size = len(data)
    while pos < size:
        match = _LINE_END.search(data, pos)
        if match is None:
            yield pos, data[pos:]
            return
        yield pos, data[pos : match.start()]
        pos = match.end()


def check_header_block(data: bytes, max_header_bytes: int) -> HeaderBlock:
    """Find the header block the way the email package will, and judge it.

    Problems (each makes the message unparsable): the message is empty; it
    starts with a blank line or with a line that is not a header field (no
    header block: binary garbage, a bare body; an mbox ``From`` line is skipped
    first); the block has NUL bytes; the block is larger than
    *max_header_bytes*. A missing blank line after readable headers is not a
    problem here (the ``email`` package records a defect).
    """
    if not data or data.isspace():  # not data.strip(): no copy of a large message
        return HeaderBlock(b"", "message is empty")
    end = 0
    first = True
    fixes: list[tuple[int, int]] = []  # (start, end) of blanks to remove
    for offset, line in _lines(data):
        if offset > max_header_bytes:
            return HeaderBlock(
                data[:offset], f"header block larger than {max_header_bytes} bytes", offset
            )
        if first and line.startswith(b"From "):  # mbox envelope line
            first = False
            end = offset + len(line)
            continue
        if first:
            if not line.strip():
                return HeaderBlock(
                    b"", "no header block found: the message begins with a blank line"
                )
            if not _FIELD.match(line):
                return HeaderBlock(
                    b"", "no header block found: the message does not begin with a header field"
                )
            first = False
        if not line:
            break
        spaced = _SPACED_FIELD.match(line)
        if spaced is not None:
            fixes.append((offset + spaced.start(1), offset + spaced.end(1)))
        elif not _FEED_HEADER.match(line):
            break
        end = offset + len(line)
    else:
        end = len(data)
    block = data[:end]
    if fixes:
        pieces = []
        last = 0
        for start, stop in fixes:
            pieces.append(data[last:start])
            last = stop
        pieces.append(data[last:end])
        block = b"".join(pieces)
    if end > max_header_bytes:
        return HeaderBlock(block, f"header block larger than {max_header_bytes} bytes", end)
    if b"\x00" in block:
        return HeaderBlock(block, "NUL bytes in the header block", end)
    return HeaderBlock(block, None, end)


def read_head(fh: IO[bytes], limit: int) -> bytes:
    """At most *limit* bytes from *fh*: the header block up to its blank line,
    or up to the last complete line when the block is longer than that."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = fh.read(min(65536, limit - len(buf)))
        if not chunk:
            return bytes(buf)
        buf += chunk
        match = _HEAD_END.search(buf)
        if match is not None:
            return bytes(buf[: match.end()])
    cut = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
    return bytes(buf[: cut + 1]) if cut >= 0 else bytes(buf)


class _Frame(NamedTuple):
    boundary: bytes
    depth: int
    digest: bool
    encapsulated: bool


class LeafBody(NamedTuple):
    """The body of a leaf entity (neither ``multipart/*`` nor ``message/*``)
    outside any attached message: ``data[start:end]`` is the payload the
    ``email`` package will give it (for a body part, without the line break
    before the boundary line that ends it, which RFC 2046 gives the boundary).
    """

    start: int
    end: int


def _without_last_eol(data: bytes, start: int, end: int) -> int:
    """*end*, moved back over one line break ending ``data[start:end]``."""
    if end - start >= 2 and data[end - 2 : end] == b"\r\n":
        return end - 2
    if end > start and data[end - 1 : end] in (b"\r", b"\n"):
        return end - 1
    return end


def _entity_type(content_type: str | None, digest_parent: bool) -> tuple[str, bytes | None]:
    """``(content type, boundary)`` exactly as the email package will see them."""
    if content_type is None:
        return ("message/rfc822" if digest_parent else "text/plain"), None
    msg = EmailMessage(policy=TOLERANT)
    if digest_parent:
        msg.set_default_type("message/rfc822")
    msg.set_raw("Content-Type", content_type)
    try:
        ctype = msg.get_content_type()
        boundary = msg.get_boundary() if ctype.startswith("multipart/") else None
    except Exception:  # the real parse will decide; a leaf is the safe reading
        return "text/plain", None
    if boundary is None:
        return ctype, None
    try:  # 8-bit bytes arrive as surrogate escapes and go back to bytes
        return ctype, boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        # Decoded from RFC 2231 or RFC 2047 into characters no line can hold:
        # the email package never finds such a boundary, so neither do we.
        return ctype, None


def scan_structure(
    data: bytes,
    max_depth: int,
    max_parts: int,
    leaves: list[LeafBody] | None = None,
    *,
    max_header_bytes: int,
) -> str | None:
    """The reason the MIME tree of *data* passes the limits, or None.

    An entity is the root, each body part of a multipart and each message
    nested in a ``message/*`` part (except ``message/delivery-status``, whose
    field groups the email package does not treat as messages). The root has
    depth 0; a part or nested message is one deeper than its container. As in
    the email package, a line matching any enclosing boundary ends every
    entity inside it, and a boundary already in use by an outer multipart
    belongs to the outer one. Each entity's header block is bounded by
    *max_header_bytes* like the message's own (the root's is normally checked
    first by :func:`check_header_block`).

    When *leaves* is given and no limit is passed, the body of every leaf
    outside an attached message is appended to it (:class:`LeafBody`).
    """
    frames: list[_Frame] = []
    active: dict[bytes, int] = {}
    parts = 1
    depth = 0
    digest_parent = False
    in_headers = True
    entity_lines = 0
    content_type: list[bytes] | None = None
    collecting = False
    encapsulated = False  # inside a message/* entity
    body: int | None = None  # where the open leaf's body starts, if it is reported
    header_start = 0  # where the current entity's header block began
    size = len(data)
    pos = 0

    def leaf_ends(end: int, part: bool) -> None:
        if leaves is not None and body is not None:
            if part:  # the line break before the boundary line is the boundary's
                end = _without_last_eol(data, body, end)
            leaves.append(LeafBody(body, end))

    while pos < size:
        if not in_headers:
            if not active:
                leaf_ends(size, part=False)
                return None  # a leaf with no enclosing boundary: the rest is its body
            if not data.startswith(b"--", pos):
                found = data.find(b"\n--", pos)
                if found < 0:
                    leaf_ends(size, part=True)
                    return None
                pos = found + 1
        line_start = pos
        match = _LINE_END.search(data, pos)
        end = match.start() if match else size
        line = data[pos:end]
        pos = match.end() if match else size
        if line.startswith(b"--") and active:
            stripped = line.rstrip(b" \t")
            index = active.get(stripped[2:])
            close = False
            if index is None and stripped.endswith(b"--"):
                index = active.get(stripped[2:-2])
                close = index is not None
            if index is not None:
                if in_headers and entity_lines == 0 and frames and index == len(frames) - 1:
                    continue  # repeated boundary lines: the email package skips them
                leaf_ends(line_start, part=True)
                body = None
                encapsulated = frames[index].encapsulated
                for inner in frames[index + 1 :]:
                    if active.get(inner.boundary) is not None and active[inner.boundary] > index:
                        del active[inner.boundary]
                del frames[index + 1 :]
                if close:
                    closed = frames.pop()
                    if active.get(closed.boundary) == index:
                        del active[closed.boundary]
                    in_headers = False
                    continue
                parts += 1
                if parts > max_parts:
                    return f"more than {max_parts} MIME parts"
                depth = frames[index].depth + 1
                if depth > max_depth:
                    return f"MIME nesting deeper than {max_depth} levels"
                digest_parent = frames[index].digest
                in_headers = True
                header_start = pos
                entity_lines = 0
                content_type = None
                collecting = False
                continue
        if not in_headers:
            continue
        entity_lines += 1
        if line and _FEED_HEADER.match(line):
            if end - header_start > max_header_bytes:
                return f"header block of a MIME part larger than {max_header_bytes} bytes"
            if line[:1] in b" \t":
                if collecting and content_type is not None:
                    content_type.append(line)
            else:
                collecting = line[:13].lower() == b"content-type:" and content_type is None
                if collecting:
                    content_type = [line[13:]]
            continue
        # end of the header block (blank line, or a body line without one)
        in_headers = False
        value = (
            b"".join(content_type).decode("ascii", "surrogateescape").strip()
            if content_type is not None
            else None
        )
        ctype, boundary = _entity_type(value, digest_parent)
        if line:
            pos = line_start  # a body line without a blank line before it: read it again
        if boundary is not None:
            frames.append(_Frame(boundary, depth, ctype == "multipart/digest", encapsulated))
            active.setdefault(boundary, len(frames) - 1)
        elif not (ctype.startswith(("message/", "multipart/")) or encapsulated):
            body = pos  # a leaf's body starts here
        elif ctype.startswith("message/") and ctype != "message/delivery-status":
            parts += 1
            depth += 1
            if parts > max_parts:
                return f"more than {max_parts} MIME parts"
            if depth > max_depth:
                return f"MIME nesting deeper than {max_depth} levels"
            digest_parent = False
            encapsulated = True
            in_headers = True
            header_start = pos
            entity_lines = 0
            content_type = None
            collecting = False
    if not in_headers and active:
        leaf_ends(size, part=True)
    return None

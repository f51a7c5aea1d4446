"""Large leaf bodies, decoded in pieces straight from the raw message.

The ``email`` package holds a body many times over while it parses and decodes
it (its lines, the joined payload, that payload's bytes, the decoded bytes, the
text, the text with CRLF replaced): a 50 MB text body cost about 17 times its
size. So the parser hands the ``email`` package a *skeleton* of the message in
which every large leaf body is a short token (:func:`skeleton`), and decodes
those bodies here, from the raw bytes in :data:`PIECE`-sized pieces, to exactly
what ``Message.get_payload(decode=True)`` and then
:func:`~postroom.parsing.charsets.decode_bytes` give:

* :func:`transfer_decoded` undoes the Content-Transfer-Encoding (its pieces
  can be read as often as needed; the base64 defects are the email package's);
* :func:`decode_text` builds the text by appending in place, when the declared
  charset decodes the body as it is. When it does not, or none is declared and
  the body is not ASCII, the body's bytes are gathered and given to
  :func:`~postroom.parsing.charsets.decode_bytes` whole, because its repairs
  look at all of them.
"""

from __future__ import annotations

import binascii
import email.errors
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from email._encoded_words import decode_b
from email.message import Message
from typing import IO, Protocol

from postroom.parsing._policy import TOLERANT
from postroom.parsing.charsets import decode_bytes, decode_pieces
from postroom.parsing.scan import LeafBody

#: How much of a body is read, decoded and appended at a time.
PIECE = 1 << 20

Pieces = Callable[[], Iterator[bytes]]

_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]*")
_LINE_END = re.compile(rb"\r\n|\r|\n")


class BodySource(Protocol):
    """The raw message, for reading a body's bytes again."""

    def pieces(self, start: int, end: int) -> Iterator[bytes]:
        """``data[start:end]`` of the scanned bytes, in pieces of at most :data:`PIECE`."""
        ...


class BytesSource:
    """Bodies of a message held in memory. *shift* is added to the scanned
    offsets (the parser closes up blanks in the header block it scanned)."""

    def __init__(self, data: bytes, shift: int = 0) -> None:
        self._view = memoryview(data)
        self._shift = shift

    def pieces(self, start: int, end: int) -> Iterator[bytes]:
        for at in range(start + self._shift, end + self._shift, PIECE):
            yield bytes(self._view[at : min(at + PIECE, end + self._shift)])


class FileSource:
    """Bodies of a message in a file, read again for each body."""

    def __init__(self, path: str, shift: int = 0) -> None:
        self._path = path
        self._shift = shift

    def pieces(self, start: int, end: int) -> Iterator[bytes]:
        with open(self._path, "rb") as fh:
            fh.seek(start + self._shift)
            yield from _read_span(fh, end - start)


def _read_span(fh: IO[bytes], length: int) -> Iterator[bytes]:
    while length > 0:
        piece = fh.read(min(PIECE, length))
        if not piece:
            raise OSError(f"{getattr(fh, 'name', 'raw file')}: shorter than when it was scanned")
        length -= len(piece)
        yield piece


def skeleton(
    data: bytes, leaves: Sequence[LeafBody], threshold: int
) -> tuple[bytes, dict[str, LeafBody]]:
    """*data* with every leaf body of at least *threshold* bytes replaced by a
    token, and which body each token stands for.

    A token is one line that is neither a header field nor a boundary (it
    starts with a NUL), with a random part so that no message can contain it.
    """
    # An empty body may be followed by its boundary line at once: never a token.
    large = [leaf for leaf in leaves if leaf.end - leaf.start >= max(threshold, 1)]
    if not large:
        return data, {}
    nonce = secrets.token_hex(8)
    view = memoryview(data)
    pieces: list[bytes | memoryview] = []
    tokens: dict[str, LeafBody] = {}
    last = 0
    for number, leaf in enumerate(large):
        token = f"\x00postroom-large-body-{nonce}-{number}\x00"
        tokens[token] = leaf
        pieces += [view[last : leaf.start], token.encode("ascii")]
        last = leaf.end
    pieces.append(view[last:])
    return b"".join(pieces), tokens


def _line_aligned(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """The same bytes, cut after line breaks only (each chunk starts a line)."""
    carry = b""
    for piece in pieces:
        piece = carry + piece if carry else piece
        cut = max(piece.rfind(b"\n"), piece.rfind(b"\r")) + 1
        if cut:
            yield piece[:cut]
        carry = piece[cut:]
    if carry:
        yield carry


def _dash_lines(chunk: bytes) -> Iterator[str]:
    """The lines of *chunk* (which starts a line) that start with ``--``, with
    their line breaks, as the email package reads them."""
    starts = [0] if chunk.startswith(b"--") else []
    for mark in (b"\n--", b"\r--"):
        at = chunk.find(mark)
        while at >= 0:
            starts.append(at + 1)
            at = chunk.find(mark, at + 1)
    for start in starts:
        end = _LINE_END.search(chunk, start)
        line = chunk[start : end.end() if end is not None else len(chunk)]
        yield line.decode("ascii", "surrogateescape")


def crosses_boundary(pieces: Iterator[bytes], boundaries: Sequence[str]) -> bool:
    """Is a line of the body (*pieces*) a boundary line of one of *boundaries*,
    as the email package's feed parser matches them (its ``boundaryre``)?

    The email package ends a body at the first line that delimits any
    multipart around it. A body whose lines match none of those is read whole
    by the email package, and a token standing for it reads the same.
    """
    if not boundaries:
        return False
    matchers = [
        re.compile(
            "(?P<sep>"
            + re.escape("--" + b)
            + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
        )
        for b in boundaries
    ]
    for chunk in _line_aligned(pieces):
        for line in _dash_lines(chunk):
            if any(matcher.match(line) for matcher in matchers):
                return True
    return False


# ------------------------------------------------------- transfer encodings


class Decoded:
    """A body with its Content-Transfer-Encoding undone, readable in pieces
    as often as needed, and the defects the email package would record."""

    def __init__(self, pieces: Pieces, defects: list[email.errors.MessageDefect]) -> None:
        self.pieces = pieces
        self.defects = defects

    def size(self) -> int:
        return sum(len(piece) for piece in self.pieces())

    def head(self, size: int) -> bytes:
        """The first *size* decoded bytes (or all, when fewer)."""
        out = b""
        for piece in self.pieces():
            out += piece[: size - len(out)]
            if len(out) >= size:
                break
        return out

    def gather(self) -> bytearray:
        """All of it, in one buffer grown in place."""
        out = bytearray()
        for piece in self.pieces():
            out += piece
        return out


def transfer_decoded(raw: Pieces, cte: str) -> Decoded:
    """*raw* (a leaf's payload bytes) decoded as ``Message.get_payload(decode=True)``
    decodes it for Content-Transfer-Encoding *cte* (lower case, as the email
    package compares it)."""
    if cte == "quoted-printable":
        return Decoded(lambda: _quoted_printable(raw), [])
    if cte == "base64":
        return _base64(raw)
    if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return _whole(raw, cte)
    return Decoded(raw, [])


def _quoted_printable(raw: Pieces) -> Iterator[bytes]:
    """``quopri.decodestring``, a run of whole lines at a time: ``binascii.a2b_qp``
    never looks past a line feed, so decoding line-aligned pieces is exact."""
    carry = b""
    for piece in raw():
        piece = carry + piece if carry else piece
        cut = piece.rfind(b"\n") + 1
        if cut:
            yield binascii.a2b_qp(piece[:cut])
        carry = piece[cut:]
    if carry:
        yield binascii.a2b_qp(carry)


def _encoded(raw: Pieces) -> Iterator[bytes]:
    """The payload without line breaks: what the email package base64-decodes."""
    for piece in raw():
        yield piece.translate(None, b"\r\n")


def _base64(raw: Pieces) -> Decoded:
    """``decode_b`` (what ``get_payload`` uses) of the payload without line breaks, in pieces.

    The longest start made of whole groups of four base64 letters decodes the
    same however it is cut, and leaves the decoder as it started; so only the
    rest (nothing, or the final padding, in normal mail) goes through
    ``decode_b``, which gives its result and defects. When the rest cannot be
    decoded at all, ``decode_b`` gives back the encoded text, all of it.
    """
    plain = 0  # letters before the first other character, in whole groups of four
    pending = b""  # letters after those, fewer than four
    rest: bytearray | None = None  # from the group holding the first other character on
    for piece in _encoded(raw):
        if rest is not None:
            rest += piece
            continue
        piece = pending + piece if pending else piece
        run = _BASE64_RUN.match(piece)
        letters = run.end() if run is not None else 0
        cut = letters // 4 * 4
        plain += cut
        if letters < len(piece):
            rest = bytearray(piece[cut:])
        else:
            pending = piece[cut:]
    tail = bytes(rest) if rest is not None else pending
    del rest
    value, defects = decode_b(tail)
    if any(isinstance(d, email.errors.InvalidBase64LengthDefect) for d in defects):
        return Decoded(lambda: _encoded(raw), list(defects))
    return Decoded(lambda: _base64_pieces(raw, plain, value), list(defects))


def _base64_pieces(raw: Pieces, plain: int, value: bytes) -> Iterator[bytes]:
    """The first *plain* letters decoded, a piece at a time, then *value*."""
    carry = b""
    for piece in _encoded(raw):
        if plain <= 0:
            break
        piece = carry + piece if carry else piece
        take = min(len(piece), plain) // 4 * 4
        if take:
            yield binascii.a2b_base64(piece[:take])
            plain -= take
        carry = piece[take:]
    if value:
        yield value


def _whole(raw: Pieces, cte: str) -> Decoded:
    """Encodings seen too rarely to stream (uuencode): the email package decodes the whole."""
    msg = Message(policy=TOLERANT)
    msg["Content-Transfer-Encoding"] = cte
    msg.set_payload(b"".join(raw()).decode("ascii", "surrogateescape"))
    value = msg.get_payload(decode=True)
    data = value if isinstance(value, bytes) else b""
    return Decoded(lambda: iter([data]), list(msg.defects))


# ------------------------------------------------------------------- text


def decode_text(
    body: Decoded, declared: str | None, hints: Sequence[str]
) -> tuple[str, str | None, int]:
    """``(text with CRLF as LF, repair note, decoded size)``, as
    ``decode_bytes(data, declared, hints)`` gives for the whole body."""
    streamed = decode_pieces(body.pieces(), declared)
    if streamed is not None:
        return streamed[0], None, streamed[1]
    data = body.gather()
    size = len(data)
    text, note = decode_bytes(data, declared, hints)
    del data
    return text.replace("\r\n", "\n"), note, size

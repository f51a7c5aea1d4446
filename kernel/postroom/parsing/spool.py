"""A parse result's large texts cross from the worker to the gateway in files.

A process pool pickles a worker's result whole: a 50 MB text is encoded into
the pickle in the worker (a second copy there) and decoded out of it in the
gateway (the pickle and the text: two copies there). An :class:`Outbound`
pickles the large texts of its :class:`~postroom.model.ParsedMessage`
(``text``, ``html``, the parts' ``text``) into temporary files instead,
written and read back a piece at a time, so each process holds each text once.
Unpickled it is an :class:`Outbound` again, the texts read back in the thread
that unpickles it (never the reactor); :meth:`Outbound.receive` gives the
message. Not pickled (a thread or inline runner), nothing is written.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import tempfile
from typing import Any

import attrs

from postroom.model import ParsedMessage

#: Texts of at least this many characters travel in a file.
SPOOL_FROM = 256 * 1024
#: Characters written, or bytes read, at a time.
_PIECE = 1 << 20
_PREFIX = "postroom-text-"


class Outbound:
    """A :class:`ParsedMessage` on its way from a worker process to the gateway."""

    __slots__ = ("_error", "_message")

    def __init__(self, message: ParsedMessage, error: BaseException | None = None) -> None:
        self._message = message
        self._error = error

    def receive(self) -> ParsedMessage:
        """The message, or the error that reading its texts back met."""
        if self._error is not None:
            raise self._error
        return self._message

    def __reduce__(self) -> tuple[Any, ...]:
        message = self._message
        written: dict[str, str] = {}  # "text", "html" or "part:<index>" -> file
        try:
            for key, text in _texts(message):
                if text is not None and len(text) >= SPOOL_FROM:
                    written[key] = _spool(text)
        except BaseException:
            for path in written.values():
                _remove(path)
            raise
        return (_arrive, (_with_texts(message, dict.fromkeys(written)), written))


def _texts(message: ParsedMessage) -> list[tuple[str, str | None]]:
    return [
        ("text", message.text),
        ("html", message.html),
        *((f"part:{index}", part.text) for index, part in enumerate(message.parts)),
    ]


def _with_texts(message: ParsedMessage, texts: dict[str, str | None]) -> ParsedMessage:
    """*message* with the texts named in *texts* replaced."""
    return attrs.evolve(
        message,
        text=texts.get("text", message.text),
        html=texts.get("html", message.html),
        parts=[
            attrs.evolve(part, text=texts[f"part:{index}"]) if f"part:{index}" in texts else part
            for index, part in enumerate(message.parts)
        ],
    )


def _spool(text: str) -> str:
    """Write *text* (UTF-8) to a new temporary file, a piece at a time; its path."""
    fd, path = tempfile.mkstemp(prefix=_PREFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            for start in range(0, len(text), _PIECE):
                fh.write(text[start : start + _PIECE].encode("utf-8", "surrogatepass"))
    except BaseException:
        _remove(path)
        raise
    return path


def _read(path: str) -> str:
    """A spooled text, grown in place a piece at a time (never a second copy).

    CPython appends to a str that only a local variable references without
    copying it, once the loop is specialized: a ``for`` loop is (a ``while``
    loop with a walrus condition is not, in 3.11).
    """
    decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
    text = ""
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(_PIECE), b""):
            text += decoder.decode(piece)
    text += decoder.decode(b"", final=True)
    return text


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _arrive(light: ParsedMessage, files: dict[str, str]) -> Outbound:
    """Unpickling: the texts read back and their files removed. Never raises (an
    unpickling error would break the whole pool): a failure is kept for
    :meth:`Outbound.receive`."""
    try:
        texts: dict[str, str | None] = {key: _read(path) for key, path in files.items()}
        return Outbound(_with_texts(light, texts))
    except Exception as exc:
        return Outbound(light, exc)
    finally:
        for path in files.values():
            _remove(path)

"""Stream a POP3 multi-line response (RETR) into a spool file.

Why not Twisted's line-by-line consumer: it keeps each line whole in memory and
drops the connection on a line over its limit, so a message with one long
base64 or HTML line (common in the wild) could never be fetched. This writer
takes the raw bytes as they arrive, in chunks of any size and split anywhere,
and only looks at the places that matter: the starts of lines, where the
server byte-stuffed a leading ``.`` (RFC 1939 section 3) or sent the
terminating ``.CRLF``. Everything else goes to the shared hashing spool file
(:class:`postroom.api.SpoolFile`) untouched, so the spool holds the message
exactly as the server stores it (CRLF line ends), its size and SHA-256 are
computed on the way and the message is never held whole in memory.
"""

from __future__ import annotations

import os

from postroom.api import RawRef, SpoolFile

_TERMINATOR = b".\r\n"
_DOT = 0x2E


class SpoolWriter:
    """A sink for one multi-line response body; :meth:`feed` it raw bytes.

    *target* is the spool file the body goes to (or a path to open as one).
    ``feed`` returns ``None`` while the body goes on, and the bytes that
    followed the terminating ``.CRLF`` once it has seen it (normally
    ``b""``: POP3 servers send nothing unasked).
    """

    def __init__(self, target: SpoolFile | str | os.PathLike[str]) -> None:
        self.file = target if isinstance(target, SpoolFile) else SpoolFile(target)
        self.path = self.file.path
        #: at most two bytes kept back because the next chunk decides what they are
        self._carry = b""
        #: the next byte starts a line (so may be a stuffed dot or the terminator)
        self._bol = True
        self.done = False

    @property
    def size(self) -> int:
        """Bytes of the message written so far (unstuffed)."""
        return self.file.size

    def _write(self, chunk: bytes) -> None:
        if chunk:
            self.file.write(chunk)

    def feed(self, data: bytes) -> bytes | None:
        """Take the next bytes of the response body (after the ``+OK`` line)."""
        if self.done:
            return data
        if self._carry:
            data = self._carry + data
            self._carry = b""
        n = len(data)
        p = 0
        while True:
            if self._bol:
                rest = n - p
                if rest < len(_TERMINATOR) and _TERMINATOR.startswith(data[p:]):
                    # "", "." or ".\r": the terminator or a stuffed line; wait
                    self._carry = data[p:]
                    return None
                if data.startswith(_TERMINATOR, p):
                    self._finish()
                    return data[p + len(_TERMINATOR) :]
                if data[p] == _DOT:
                    p += 1  # undo byte-stuffing: the first dot of a line is the server's
                self._bol = False
            # mid-line: jump to the next line that starts with a dot
            j = data.find(b"\r\n.", p)
            if j >= 0:
                self._write(data[p : j + 2])
                p = j + 2
                self._bol = True
                continue
            if n - p >= 2 and data.endswith(b"\r\n"):
                self._write(data[p:])
                self._bol = True  # the next chunk starts a line
            elif n - p >= 1 and data.endswith(b"\r"):
                self._write(data[p : n - 1])
                self._carry = b"\r"  # a CR whose LF may start the next chunk
            else:
                self._write(data[p:])
            return None

    def _finish(self) -> None:
        self.done = True
        self.file.close()

    def raw(self) -> RawRef:
        """The finished spool file, with the size and digest computed while writing."""
        if not self.done:
            raise RuntimeError("the response has not ended")
        return self.file.raw()

    def discard(self) -> None:
        """Close and delete the file (a failed or abandoned download)."""
        self.file.discard()

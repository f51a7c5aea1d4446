"""The spool file a source streams one download into, hashed on the way.

Every network source writes what the server sends to a file under the kernel's
spool folder (``DriverContext.spool_dir``) so that a message is never whole in
memory, and hands the store a :class:`~postroom.model.RawRef` whose size and
SHA-256 were computed while writing: one pass over the bytes, no re-read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from types import TracebackType
from typing import IO

from postroom.model import RawRef

log = logging.getLogger(__name__)


class SpoolFile:
    """A spool file open for writing; :meth:`write` appends, hashes and counts.

    :meth:`create` makes a new one in the spool folder (what sources do);
    the constructor opens (truncates) a given path. *max_size* is
    ``email-processing.maximum-msg-size`` (0: none). The specification keeps
    an oversized message's raw bytes (it is stored as a wrapping message,
    never dropped), so the limit does not stop the download:
    :attr:`over_limit` says it was passed, and the parse stage wraps the
    message with the size reason.

    Used as a context manager, the file is deleted when the block raises.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_size: int = 0) -> None:
        self.path = os.fspath(path)
        self._fh: IO[bytes] | None = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._sha = hashlib.sha256()
        self.max_size = max_size
        self.size = 0

    @classmethod
    def create(
        cls, spool_dir: str | os.PathLike[str], *, prefix: str = "msg-", max_size: int = 0
    ) -> SpoolFile:
        """A new, uniquely named file in *spool_dir* (made when missing)."""
        os.makedirs(spool_dir, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=_safe(prefix), suffix=".eml", dir=os.fspath(spool_dir))
        os.close(fd)
        return cls(path, max_size=max_size)

    @property
    def over_limit(self) -> bool:
        """More than ``maximum-msg-size`` bytes were written."""
        return 0 < self.max_size < self.size

    def write(self, data: bytes, /) -> int:
        if self._fh is None:
            raise ValueError("spool file already closed")
        self._fh.write(data)
        self._sha.update(data)
        self.size += len(data)
        return len(data)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def raw(self) -> RawRef:
        """Close the file; its path, size and SHA-256 for the store."""
        self.close()
        return RawRef(path=self.path, size=self.size, sha256=self._sha.hexdigest())

    def discard(self) -> None:
        """Close and delete the file (a failed or abandoned download)."""
        self.close()
        remove_spooled(self.path)

    def __enter__(self) -> SpoolFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:
            self.discard()
        else:
            self.close()


def remove_spooled(path: str) -> None:
    """Delete a spool file; already gone is fine, another failure only logged."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove spool file %s: %s", path, exc)


def _safe(prefix: str) -> str:
    """A file-name-safe prefix (mailbox names may hold anything)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", prefix)[:60]

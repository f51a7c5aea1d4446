"""Errors raised by interaction stores.

:class:`~postroom.errors.FencingError` lives in :mod:`postroom.errors`; it is
re-exported here so store code and its tests import from one place.
"""

from __future__ import annotations

from datetime import datetime

from postroom.errors import FencingError, PostroomError

__all__ = ["DatabaseError", "FencingError", "RawIntegrityError", "RawPurgedError", "StoreError"]


class StoreError(PostroomError):
    """The store's own errors (not the database driver's): not open, bad raw file..."""


class DatabaseError(StoreError):
    """The database failed: unreachable, not a database, corrupt, locked, disk full.

    Raised in place of the driver's own exception (kept as ``__cause__``), so
    callers need not know which database a site uses; the message names the
    database (a file, or host and database name: never a password).
    """


class RawIntegrityError(StoreError):
    """Raw bytes read back from the store do not match the size and SHA-256
    recorded when they were stored: the store is corrupt.

    What was written to the reader's file before this was raised is wrong and
    must be thrown away.
    """

    def __init__(
        self,
        what: str,
        *,
        expected_size: int,
        expected_sha256: str,
        size: int,
        sha256: str,
    ) -> None:
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.size = size
        self.sha256 = sha256
        super().__init__(
            f"the stored raw bytes of {what} are corrupt: read {size} bytes with SHA-256 "
            f"{sha256}, stored as {expected_size} bytes with SHA-256 {expected_sha256}"
        )


class RawPurgedError(KeyError):
    """The interaction is kept but its raw message is not: purged by the retention
    job or by an erasure (``reason``), at ``purged_at``. A KeyError, like an
    interaction without raw bytes, so callers that only say "none" still work."""

    def __init__(self, interaction_id: str, purged_at: datetime, reason: str) -> None:
        self.interaction_id = interaction_id
        self.purged_at = purged_at
        self.reason = reason
        super().__init__(interaction_id)

    def __str__(self) -> str:
        by = "an erasure" if self.reason == "erasure" else "the retention job"
        return (
            f"interaction {self.interaction_id}: its raw message was purged by {by} "
            f"on {self.purged_at.isoformat()}"
        )

"""Errors raised by interaction stores.

:class:`~postroom.errors.FencingError` lives in :mod:`postroom.errors`; it is
re-exported here so store code and its tests import from one place.
"""

from __future__ import annotations

from postroom.errors import FencingError, PostroomError

__all__ = ["FencingError", "StoreError"]


class StoreError(PostroomError):
    """The store's own errors (not the database driver's): not open, bad raw file..."""

"""``policy.default``, minus its habit of raising on odd headers."""

from __future__ import annotations

from email.policy import EmailPolicy
from functools import lru_cache
from typing import Any

from postroom.parsing.headers import repair_content_type

#: Headers the parser reads again and again (``get_content_type`` alone builds
#: the Content-Type object several times per part): their objects are cached.
_CACHED = frozenset({"content-type", "content-transfer-encoding", "content-disposition"})
_MAX_CACHED = 512


class TolerantPolicy(EmailPolicy):
    """``email.policy.default`` whose header objects fall back to plain text.

    Building a structured header can raise on input real mail contains (for
    example an ``AttributeError`` for a group inside some ``To`` values). The
    message would then fail as a whole, inside the parser (which reads
    Content-Type and Content-Transfer-Encoding) or later; instead the header
    reads as its unfolded raw text, like the ``compat32`` policy gives it.

    A Content-Type whose first parameter lacks its ``;``
    (``multipart/mixed boundary=x``) is repaired before anything reads it, so
    the parser finds the boundary.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if len(value) <= _MAX_CACHED and name.lower() in _CACHED:
            return _fetch(self, name, value)
        return _fetch_uncached(self, name, value)


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

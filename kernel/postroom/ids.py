"""Interaction ids as people give them: the whole id, or a unique prefix of one.

One resolver for every command and route that takes an id (interactions, the
outbox, hand-off retries, a send request's ``in_reply_to`` and files): the
store finds the candidates with one range query on the id index
(``IStore.match_ids``).
"""

from __future__ import annotations

from typing import Any

from postroom.errors import PostroomError

#: the shortest id prefix taken (8, the listing's column, is the usual)
MIN_PREFIX = 6
#: how many candidates an ambiguous prefix lists
MAX_CANDIDATES = 10


class UnknownId(PostroomError):
    """No interaction has this id or prefix."""


class AmbiguousId(PostroomError):
    """Several interactions start with this prefix: the candidates are listed."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        more = "" if len(candidates) < MAX_CANDIDATES else ", ..."
        super().__init__(f"id prefix {prefix!r} is ambiguous: {', '.join(candidates)}{more}")
        self.candidates = candidates


async def resolve_id(store: Any, given: str) -> str:
    """The full id of the interaction *given* names: its id, or a unique prefix
    of at least :data:`MIN_PREFIX` characters (case-insensitive)."""
    text = given.strip().lower()
    if len(text) < MIN_PREFIX:
        raise UnknownId(
            f"no interaction {given!r} (an id prefix needs at least {MIN_PREFIX} characters)"
        )
    found: list[str] = await store.match_ids(text, MAX_CANDIDATES)
    if text in found:
        return text
    if not found:
        raise UnknownId(f"no interaction {given!r}")
    if len(found) > 1:
        raise AmbiguousId(given, found)
    return found[0]

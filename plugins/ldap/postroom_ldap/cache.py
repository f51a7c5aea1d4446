"""Look-up results kept for a while: found contacts and unknown addresses.

cachetools' ``TLRUCache`` gives each entry its own expiry (a contact lives
``cache-ttl``, an unknown address ``negative-cache-ttl``) and drops the least
recently used when full; its timer is the gateway's injected clock, so tests
move time with ``task.Clock``. Only answers are kept: a failed look-up is not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cachetools import TLRUCache

from postroom_ldap.contacts import Contact

#: what :meth:`ContactCache.get` answers for an address it does not hold
MISS = object()
_UNKNOWN = "unknown"


class ContactCache:
    """Normalised address -> :class:`Contact`, or None for an address the directory
    does not know."""

    def __init__(
        self, size: int, ttl: float, negative_ttl: float, now: Callable[[], float]
    ) -> None:
        def expires(_key: str, value: Any, now: float) -> float:
            return now + (negative_ttl if value == _UNKNOWN else ttl)

        self._entries: TLRUCache[str, Any] = TLRUCache(maxsize=size, ttu=expires, timer=now)

    def get(self, address: str) -> Contact | object | None:
        """The contact, None (known to be unknown) or :data:`MISS`."""
        found = self._entries.get(address, MISS)
        return None if found == _UNKNOWN else found

    def put(self, address: str, contact: Contact | None) -> None:
        self._entries[address] = _UNKNOWN if contact is None else contact

    def __len__(self) -> int:
        return len(self._entries)

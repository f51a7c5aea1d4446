"""Which recipients a message is copied to: To then CC, each address once.

Addresses are compared case-insensitively (nobody runs two mailboxes that
differ only in case, and clients change the case when replying); the first
spelling is kept, because it is what the sender wrote and what agents see.
"""

from __future__ import annotations

from collections.abc import Iterable


def unique_recipients(*lists: Iterable[str]) -> list[str]:
    """The addresses of *lists* in order, without repeats; blanks and
    entries without ``@`` (group names, ``undisclosed-recipients``) skipped."""
    seen: set[str] = set()
    found: list[str] = []
    for addresses in lists:
        for address in addresses:
            address = address.strip()
            key = address.lower()
            if "@" not in address or key in seen:
                continue
            seen.add(key)
            found.append(address)
    return found

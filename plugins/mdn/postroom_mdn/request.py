"""Asking for a read receipt on outbound mail (``Disposition-Notification-To``).

A send request asks with ``options["mdn"]``: ``true`` sends the receipt to the
request's From, a string to that address. The address is checked here, before
sending: a header the recipient's client cannot answer is worse than no
request, so a bad one fails the send for good (``SendError(permanent=True)``)
and the outbound interaction shows why.
"""

from __future__ import annotations

from email import policy
from typing import Any

from postroom.api import SendError

HEADER = "Disposition-Notification-To"
OPTION = "mdn"
#: strings that say yes or no, as JSON clients and forms send them
_YES = frozenset({"true", "yes", "on"})
_NO = frozenset({"", "false", "no", "off"})


def receipt_address(wanted: Any, from_addr: str | None) -> str | None:
    """The header value for the request's ``mdn`` option, or None for no receipt."""
    if wanted is None or wanted is False:
        return None
    if isinstance(wanted, str) and wanted.strip().lower() in _NO:
        return None
    if wanted is True or (isinstance(wanted, str) and wanted.strip().lower() in _YES):
        if not from_addr:
            raise SendError("mdn: a read receipt to the sender needs a From", permanent=True)
        return valid_address(from_addr, "the request's From")
    if isinstance(wanted, str):
        return valid_address(wanted, "option mdn")
    raise SendError(
        f"mdn: expected true or an address, got {type(wanted).__name__}", permanent=True
    )


def valid_address(value: str, what: str) -> str:
    """One mailbox (``a@b`` or ``Name <a@b>``), formatted for the header."""
    problem = None
    if "\r" in value or "\n" in value:
        problem = "contains a line break"
    else:
        try:
            # parsed as an address header ("to"): the registry does not know this name
            header = policy.default.header_factory("to", value)
            addresses, groups, defects = header.addresses, header.groups, header.defects
        except Exception:  # the parser raises on some malformed input (``a@``)
            addresses, groups, defects = (), (), ("unreadable",)
        if defects:
            problem = "is not a valid address"
        elif len(addresses) != 1 or any(group.display_name for group in groups):
            problem = "must be exactly one address"
        elif not addresses[0].username or not addresses[0].domain:
            problem = "needs a local part and a domain"
        else:
            return str(addresses[0])
    raise SendError(f"mdn: {what} {value!r} {problem}", permanent=True)

"""A contact found in the directory, and the names it is attached and offered under.

Attached data (the interaction, at enrich or after the commit):

* ``ContactId``: the id attribute's value (the entry's DN when no ``id-attribute``
  is set; left out when the entry lacks it);
* ``Contact.<Name>``: each mapped attribute found (``Contact.FirstName``...);
* ``ldap.LookupPending``: the look-up is owed (the directory was down or slow
  when the e-mail came in); the reason. Removed when the look-up is done.

Field values (templates): the group ``Contact`` with ``ContactId`` and each
``<Name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parseaddr

import attrs

from postroom.api import AttachedValue

ID_KEY = "ContactId"
PREFIX = "Contact."
FIELD_GROUP = "Contact"
PENDING_KEY = "ldap.LookupPending"
#: longest value kept of one attribute (a directory is trusted, not unbounded)
MAX_VALUE = 1000
#: longest address looked up (RFC 5321: 64 + 1 + 255)
MAX_ADDRESS = 320


@attrs.frozen
class Contact:
    """One directory entry, reduced to what is attached."""

    dn: str
    #: the id attribute's value (None: the entry has none), or the DN without one
    id: str | None
    #: (name, value) per mapped attribute found, in the attribute map's order
    fields: tuple[tuple[str, str], ...] = ()

    def attached(self) -> dict[str, AttachedValue]:
        data: dict[str, AttachedValue] = {} if self.id is None else {ID_KEY: self.id}
        data.update({f"{PREFIX}{name}": value for name, value in self.fields})
        return data

    def field_values(self) -> dict[str, AttachedValue]:
        values: dict[str, AttachedValue] = {} if self.id is None else {ID_KEY: self.id}
        values.update(dict(self.fields))
        return values


def normalise(address: str | None) -> str | None:
    """The address looked up (and the cache key): the bare address, lower-cased;
    None when there is none or it is longer than an address can be."""
    if not address or len(address) > 4 * MAX_ADDRESS:
        return None
    bare = parseaddr(address)[1].strip() if "<" in address else address.strip()
    if not bare or "@" not in bare or len(bare) > MAX_ADDRESS:
        return None
    return bare.lower()


def value_text(value: object) -> str | None:
    """One attribute value as text: bytes (objectGUID) as hex, cut at :data:`MAX_VALUE`."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value).hex()
    elif value is None:
        return None
    else:
        text = str(value)
    text = text.strip()
    return text[:MAX_VALUE] if text else None


def first_value(attributes: Mapping[str, object], name: str) -> str | None:
    """The first value of *name* (case-insensitive, as LDAP names are)."""
    wanted = name.lower()
    for key, values in attributes.items():
        if key.lower() != wanted:
            continue
        if isinstance(values, list | tuple):
            for value in values:
                text = value_text(value)
                if text is not None:
                    return text
            return None
        return value_text(values)
    return None

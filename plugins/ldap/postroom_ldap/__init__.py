"""postroom-ldap: the sender of an inbound e-mail looked up in an LDAP directory.

The contact's id and mapped attributes are attached to the interaction
(``ContactId``, ``Contact.<Name>``) and offered to templates as the
``Contact`` group of field values. A directory that is down or slow delays
no e-mail: the look-up is skipped or given up within a bound, recorded as
owed (``ldap.LookupPending``) and done again after the commit, when the
stored interaction gains the contact. The hooks are in
:mod:`postroom_ldap.plugin` (entry point ``ldap`` in ``postroom.plugins``).
"""

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.2"

__version__ = "0.1.0"

"""One blocking look-up with ldap3: connect, (StartTLS), bind, search, unbind.

Runs in the kernel's thread pool, never on the reactor (:mod:`postroom_ldap.directory`
bounds how long the e-mail waits for it). ldap3's own socket timeouts
(``timeout`` for the connect and for each answer) bound how long the thread
stays busy. A connection per look-up: look-ups are few once the cache is warm,
and nothing is left open to a server that went away.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Mapping
from typing import Any

from ldap3 import NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from postroom_ldap.contacts import Contact, first_value
from postroom_ldap.settings import PLACEHOLDER, Settings

log = logging.getLogger(__name__)

#: result codes of a search that answered: success, sizeLimitExceeded
_ANSWERED = (0, 4)


class LookupFailed(Exception):
    """The directory could not answer (down, refused the bind or TLS, timed out)."""


def search_filter(template: str, address: str) -> str:
    """*template* with its placeholder replaced by *address*, escaped (RFC 4515):
    ``*``, ``(``, ``)``, ``\\`` and NUL in an address are values, never filter syntax."""
    return template.replace(PLACEHOLDER, escape_filter_chars(address))


def _server(settings: Settings) -> Server:
    tls = Tls(
        validate=ssl.CERT_REQUIRED,
        ca_certs_file=settings.ca_file,
        sni=settings.host,
    )  # fmt: skip
    return Server(
        settings.host,
        port=settings.port,
        use_ssl=settings.ldaps,
        tls=tls,
        get_info=NONE,
        connect_timeout=settings.timeout,
    )


def _describe(exc: LDAPException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def lookup(settings: Settings, address: str) -> Contact | None:
    """The contact whose entry matches *address* (already normalised), None when no
    entry (or more than one) does; :class:`LookupFailed` when the directory could
    not answer. Blocking."""
    names = [name for name, _ in settings.attributes]
    if settings.id_attribute and settings.id_attribute not in names:
        names.append(settings.id_attribute)
    password = settings.bind_password.reveal() if settings.bind_password else None
    connection = Connection(
        _server(settings),
        user=settings.bind_dn,
        password=password,
        read_only=True,
        receive_timeout=math.ceil(settings.timeout),
        raise_exceptions=False,
    )
    try:
        connection.open()
        if settings.start_tls and not connection.start_tls():
            raise LookupFailed(f"StartTLS refused: {connection.result.get('description')}")
        if not connection.bind():
            result = connection.result or {}
            raise LookupFailed(
                f"bind as {settings.bind_dn or 'anonymous'} refused: "
                f"{result.get('description')} {result.get('message') or ''}".rstrip()
            )
        connection.search(
            settings.base,
            search_filter(settings.filter, address),
            search_scope=SUBTREE,
            attributes=names or ["1.1"],
            size_limit=2,
            time_limit=max(1, math.ceil(settings.timeout)),
        )
        code = int((connection.result or {}).get("result", -1))
        if code not in _ANSWERED:
            result = connection.result or {}
            raise LookupFailed(f"search refused: {result.get('description')}")
        entries = [e for e in connection.response or () if e.get("type") == "searchResEntry"]
    except LDAPException as exc:
        raise LookupFailed(_describe(exc)) from None
    finally:
        try:
            connection.unbind()
        except LDAPException as exc:
            log.debug("unbind after a look-up: %s", _describe(exc))
    if len(entries) != 1:
        if entries:
            log.info("ldap-contacts: %d or more entries match %s; none is attached",
                     len(entries), address)  # fmt: skip
        return None
    return _contact(settings, entries[0])


def _contact(settings: Settings, entry: Mapping[str, Any]) -> Contact:
    attributes = entry.get("attributes") or {}  # ldap3's CaseInsensitiveDict
    dn = str(entry.get("dn") or "")
    found = ((name, first_value(attributes, attribute)) for attribute, name in settings.attributes)
    fields = tuple((name, value) for name, value in found if value is not None)
    the_id = first_value(attributes, settings.id_attribute) if settings.id_attribute else dn
    return Contact(dn=dn, id=the_id, fields=fields)

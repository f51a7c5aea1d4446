"""The plugin's options (section ``ldap-contacts``) and their reading into :class:`Settings`.

Declared in one place (``postroom_add_options``) so that validation, ``postroom
check`` and docs/configuration.md come from the same text. Without a ``url``
the plugin does nothing: installed is not enabled.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import attrs
from ldap3.core.exceptions import LDAPInvalidFilterError
from ldap3.operation.search import parse_filter

from postroom.api import ConfigError, OptionSchema, Scope, Secret

SECTION = "ldap-contacts"
#: the placeholder of the filter that the sender's address (escaped) replaces
PLACEHOLDER = "{address}"
DEFAULT_FILTER = "(mail={address})"
DEFAULT_ATTRIBUTES = {
    "givenName": "FirstName",
    "sn": "LastName",
    "cn": "FullName",
    "mail": "EmailAddress",
    "telephoneNumber": "PhoneNumber",
}
_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
#: longest filter template accepted (the directory's, not the sender's, text)
MAX_FILTER = 2000


@attrs.frozen
class Settings:
    """What the plugin reads from the site, checked."""

    url: str
    host: str
    port: int
    ldaps: bool
    start_tls: bool
    ca_file: str | None
    bind_dn: str | None
    bind_password: Secret | None = attrs.field(repr=False)
    base: str
    filter: str
    #: directory attribute -> field name, in the site's order
    attributes: tuple[tuple[str, str], ...]
    #: the attribute whose value is ``ContactId`` (None: the entry's DN)
    id_attribute: str | None
    cache_ttl: float
    negative_cache_ttl: float
    cache_size: int
    timeout: float
    retry_initial: float
    retry_max: float

    @property
    def shown_url(self) -> str:
        """The URL for logs and errors (never any credentials)."""
        return f"{'ldaps' if self.ldaps else 'ldap'}://{self.host}:{self.port}"


def add_options(schema: OptionSchema) -> None:
    def add(name: str, type: str, description: str, **kwargs: Any) -> None:
        schema.add(name, type, scope=Scope.GLOBAL, section=SECTION, description=description,
                   **kwargs)  # fmt: skip

    add("url", "url", "The directory: `ldaps://host[:636]` (TLS from the start) or "
        "`ldap://host[:389]` (with `start-tls`, or in clear). Unset: the plugin does "
        "nothing.")  # fmt: skip
    add("start-tls", "bool", "Upgrade an `ldap://` connection with StartTLS before "
        "binding; a server that refuses it fails the look-up.", default=False)  # fmt: skip
    add("ca-file", "path", "PEM file of the CA(s) the directory's certificate must chain "
        "to (default: the system's). Certificates and host names are always verified.")
    add("bind-dn", "str", "The DN (OpenLDAP) or user principal name (Active Directory, "
        "`svc-postroom@corp.example`) to bind as; unset: an anonymous bind.")
    add("bind-password", "secret", "The bind password; best `${NAME}` or `${file:path}`. "
        "Never logged.")  # fmt: skip
    add("base", "str", "Where to search, e.g. `ou=people,dc=example,dc=com` (subtree).")
    add("filter", "str", "The search filter; `{address}` is replaced by the sender's "
        "address, lower-cased and escaped (RFC 4515), so an address cannot change the "
        "filter. Active Directory: `(&(objectClass=user)(|(mail={address})"
        "(proxyAddresses=smtp:{address})))`.", default=DEFAULT_FILTER)  # fmt: skip
    add("attributes", "mapping", "Directory attribute -> name: each found becomes the "
        "attached-data key `Contact.<name>` and the field `Contact.<name>` of templates "
        "(first value; at most 1000 characters).", default=dict(DEFAULT_ATTRIBUTES))
    add("id-attribute", "str", "The attribute whose value is the contact's id "
        "(`ContactId`): e.g. `employeeNumber`, `uid`, `entryUUID` (OpenLDAP) or "
        "`employeeID` (Active Directory). Unset: the entry's DN.")  # fmt: skip
    add("cache-ttl", "duration", "How long a contact found is kept.", default=3600.0,
        minimum=0.0, maximum=7 * 86400.0)  # fmt: skip
    add("negative-cache-ttl", "duration", "How long an address the directory does not "
        "know is kept as unknown.", default=300.0, minimum=0.0, maximum=86400.0)  # fmt: skip
    add("cache-size", "int", "Most addresses kept (found and unknown together); the "
        "least recently used goes first.", default=10000, minimum=1, maximum=1_000_000)
    add("timeout", "duration", "The longest one look-up may hold an e-mail (connect, "
        "bind and search together, on the gateway's clock); a look-up that takes longer "
        "is given up and owed.", default=2.0, minimum=1.0, maximum=60.0)  # fmt: skip
    add("retry-initial", "duration", "After a failed look-up the directory is left "
        "alone this long (doubling with each failure), then tried again.",
        default=30.0, minimum=1.0, maximum=3600.0)  # fmt: skip
    add("retry-max", "duration", "The longest pause between tries of a directory that "
        "is down.", default=600.0, minimum=1.0, maximum=86400.0)  # fmt: skip


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def read(config: Any) -> Settings | None:
    """The site's settings, or None when no ``url`` is set; ConfigError when they
    cannot work together."""

    def get(name: str) -> Any:
        return config.get(SECTION, name)

    url = _text(get("url"))
    if url is None:
        return None
    where = f"{SECTION}."
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ConfigError(f"{where}url: expected ldap://host or ldaps://host, got {scheme}://")
    if parts.username or parts.password or (parts.path not in ("", "/")) or parts.query:
        raise ConfigError(f"{where}url: give only ldap[s]://host[:port]; the bind DN, "
                          "password and base are options of their own")  # fmt: skip
    start_tls = bool(get("start-tls"))
    if start_tls and scheme == "ldaps":
        raise ConfigError(f"{where}start-tls: ldaps:// is TLS from the start; StartTLS is "
                          "for ldap:// only")  # fmt: skip
    base = _text(get("base"))
    if base is None:
        raise ConfigError(f"{where}base: required with a url (where to search)")
    bind_dn = _text(get("bind-dn"))
    password = get("bind-password")
    if password and not bind_dn:
        raise ConfigError(f"{where}bind-password: given without bind-dn")
    search_filter = str(get("filter") or "").strip()
    if PLACEHOLDER not in search_filter:
        raise ConfigError(f"{where}filter: must contain {PLACEHOLDER} (the sender's address)")
    if len(search_filter) > MAX_FILTER or not (
        search_filter.startswith("(") and search_filter.endswith(")")
    ):
        raise ConfigError(f"{where}filter: expected an LDAP filter in parentheses, "
                          f"e.g. {DEFAULT_FILTER}")  # fmt: skip
    try:
        parse_filter(search_filter.replace(PLACEHOLDER, "x@example.com"), None, False, False,
                     None, False)  # fmt: skip
    except LDAPInvalidFilterError as exc:
        raise ConfigError(f"{where}filter: not an LDAP filter ({exc})") from None
    attributes: list[tuple[str, str]] = []
    for attribute, name in dict(get("attributes") or {}).items():
        attribute, name = str(attribute).strip(), str(name).strip()
        if not _ATTRIBUTE.match(attribute):
            raise ConfigError(f"{where}attributes: {attribute[:70]!r} is not an attribute name")
        if not _FIELD.match(name):
            raise ConfigError(f"{where}attributes: {attribute}: {name[:70]!r} is not a name "
                              "(letters, digits, _)")  # fmt: skip
        attributes.append((attribute, name))
    id_attribute = _text(get("id-attribute"))
    if id_attribute is not None and not _ATTRIBUTE.match(id_attribute):
        raise ConfigError(f"{where}id-attribute: {id_attribute[:70]!r} is not an attribute name")
    retry_initial, retry_max = float(get("retry-initial")), float(get("retry-max"))
    if retry_max < retry_initial:
        raise ConfigError(f"{where}retry-max: shorter than retry-initial")
    return Settings(
        url=url,
        host=str(parts.hostname),
        port=parts.port or (636 if scheme == "ldaps" else 389),
        ldaps=scheme == "ldaps",
        start_tls=start_tls,
        ca_file=_text(get("ca-file")),
        bind_dn=bind_dn,
        bind_password=password if isinstance(password, Secret) and password else None,
        base=base,
        filter=search_filter,
        attributes=tuple(attributes),
        id_attribute=id_attribute,
        cache_ttl=float(get("cache-ttl")),
        negative_cache_ttl=float(get("negative-cache-ttl")),
        cache_size=int(get("cache-size")),
        timeout=float(get("timeout")),
        retry_initial=retry_initial,
        retry_max=retry_max,
    )

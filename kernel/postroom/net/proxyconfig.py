"""Which proxy a connection goes through, read from the site configuration.

Two ways to say it, both the commercial product's:

* the ``proxy`` section (``useProxy: true``, ``host``, ``port``, ``user``,
  ``password``, ``socksVersion``, and postroom's ``type``) applies to every
  IMAP, POP3 and SMTP connection and to the OAuth token requests;
* the JavaMail pass-through properties of one mailbox or of ``smtp-client``,
  ``mail.<protocol>.socks.host`` / ``.port`` (SOCKS5) and
  ``mail.<protocol>.proxy.host`` / ``.port`` / ``.user`` / ``.password``
  (HTTP CONNECT), which win over the section for that connection.

:func:`check_proxies` runs when the site is read, so a proxy that could never
work (no host, a user without a password) stops ``postroom check`` and
``postroom run`` with the file, line and option, not the first connection.
"""

from __future__ import annotations

from typing import Any

from postroom.config.connections import PROTOCOL_SCOPES, PROXY_SECTION
from postroom.config.types import Secret
from postroom.errors import ConfigError
from postroom.net.proxy import ProxySettings

#: JavaMail's default ports when only the host is given
SOCKS_DEFAULT_PORT = 1080
HTTP_PROXY_DEFAULT_PORT = 80


def _reveal(value: Any) -> str | None:
    if value is None:
        return None
    return value.reveal() if isinstance(value, Secret) else str(value)


def _get(options: Any, name: str) -> Any:
    try:
        return options.get(name)
    except KeyError:
        return None


def _section_error(site: Any, message: str, name: str | None = None) -> ConfigError:
    """An error at the option, or at the section when the option was not written."""
    error: ConfigError = site.error(message, PROXY_SECTION, name)
    if error.line is None:
        error.line = site.line_of(PROXY_SECTION)
    return error


def section_proxy(site: Any) -> ProxySettings | None:
    """The ``proxy`` section's proxy, or None when ``useProxy`` is not true.

    Raises :class:`~postroom.errors.ConfigError` (file, line, option) when it
    is switched on but cannot work.
    """
    if site is None or not site.get(PROXY_SECTION, "useProxy"):
        return None
    host = site.get(PROXY_SECTION, "host")
    port = site.get(PROXY_SECTION, "port")
    user = site.get(PROXY_SECTION, "user")
    password = _reveal(site.get(PROXY_SECTION, "password"))
    if not host or not str(host).strip():
        raise _section_error(site, "useProxy is true but no proxy host is given", "host")
    if not port:
        raise _section_error(site, "useProxy is true but no proxy port is given", "port")
    if user and not password:
        raise _section_error(
            site, f"proxy user {user!r} has no password (give both or neither)", "user"
        )
    if password and not user:
        raise _section_error(site, "a proxy password without a user", "password")
    try:
        return ProxySettings(
            kind=str(site.get(PROXY_SECTION, "type")),
            host=str(host).strip(),
            port=int(port),
            user=str(user) if user else None,
            password=password,
            resolve_at_proxy=bool(site.get(PROXY_SECTION, "resolve-at-proxy")),
        )
    except ValueError as exc:
        raise _section_error(site, str(exc)) from None


def _passthrough_proxy(site: Any, options: Any, protocol: str) -> ProxySettings | None:
    """A JavaMail ``mail.<protocol>.socks.*`` / ``.proxy.*`` proxy, when given."""
    resolve = bool(site.get(PROXY_SECTION, "resolve-at-proxy")) if site is not None else True
    for kind, prop, default_port in (
        ("socks5", "socks", SOCKS_DEFAULT_PORT),
        ("http", "proxy", HTTP_PROXY_DEFAULT_PORT),
    ):
        host = _get(options, f"mail.{protocol}.{prop}.host")
        if not host or not str(host).strip():
            continue
        port = _get(options, f"mail.{protocol}.{prop}.port") or default_port
        user = _get(options, f"mail.{protocol}.proxy.user") if kind == "http" else None
        password = _reveal(_get(options, f"mail.{protocol}.proxy.password"))
        if kind == "http" and bool(user) != bool(password):
            raise _error(
                options,
                "the HTTP proxy needs both a user and a password, or neither",
                f"mail.{protocol}.proxy.user",
            )
        try:
            return ProxySettings(
                kind=kind,
                host=str(host).strip(),
                port=int(port),
                user=str(user) if user else None,
                password=password if kind == "http" else None,
                resolve_at_proxy=resolve,
            )
        except ValueError as exc:
            raise _error(options, str(exc), f"mail.{protocol}.{prop}.host") from None
    return None


def _error(options: Any, message: str, option: str) -> ConfigError:
    error = getattr(options, "error", None)
    if callable(error):
        made = error(message, option)
        if isinstance(made, ConfigError):
            return made
    return ConfigError(message, option=option)


def proxy_for(site: Any, options: Any, protocol: str) -> ProxySettings | None:
    """The proxy for one connection of *protocol* (``imap``, ``pop3``, ``smtp``)
    made with *options* (a mailbox or ``smtp-client``): its own pass-through
    properties, else the ``proxy`` section, else None (connect directly)."""
    own = _passthrough_proxy(site, options, protocol) if options is not None else None
    return own if own is not None else section_proxy(site)


def check_proxies(site: Any) -> None:
    """Read every proxy the site names, so a broken one fails at start-up."""
    section_proxy(site)
    for mailbox in getattr(site, "mailboxes", []):
        if mailbox.type in PROTOCOL_SCOPES:
            _passthrough_proxy(site, mailbox, mailbox.type)
    smtp = getattr(site, "smtp", None)
    if smtp is not None:
        _passthrough_proxy(site, smtp, "smtp")


__all__ = ["check_proxies", "proxy_for", "section_proxy"]

"""The connection options of the specification (section 7), declared once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from postroom.config.options import OptionSchema, Scope

SECURITY_CHOICES = ("none", "starttls", "ssl")

#: Timeouts: at least a second (0 would fail every connection, or make
#: smtplib's socket non-blocking), at most an hour (a longer wait is a hang;
#: huge values overflow socket and reactor timeouts).
MIN_TIMEOUT = 1
MAX_TIMEOUT = 3600


def add_connection_options(
    schema: OptionSchema,
    *,
    scope: Scope,
    types: tuple[str, ...],
    security_option: str,
    default_port: int | None = None,
    user_option: str = "mailbox",
    security_default: str = "ssl",
    ports: Mapping[str, int] | None = None,
) -> None:
    """Declare server, port, user, password, security, timeouts, debug, CA file.

    Mailbox drivers pass ``scope=Scope.MAILBOX, security_option=
    "pop-connection-security"``; senders ``scope=Scope.SMTP_CLIENT,
    security_option="smtp-connection-security", user_option="user"``.
    *ports* maps a security value to its usual port (``{"ssl": 993, "starttls":
    143, "none": 143}``): then an empty ``port`` means that one (see
    :func:`port_for`), and *default_port* is not used.
    """
    if ports is not None:
        usual = ", ".join(f"{port} with `{sec}`" for sec, port in ports.items())
        port_help = f"TCP port; when empty, the usual one: {usual}."
        default_port = None
    else:
        port_help = "TCP port; the protocol's usual one when empty."
    add = schema.add
    add(
        "server",
        scope=scope,
        types=types,
        required=True,
        description="Host name (or address) of the server.",
    )
    add(
        "port",
        "port",
        scope=scope,
        types=types,
        default=str(default_port) if default_port is not None else None,
        description=port_help,
    )
    add(user_option, scope=scope, types=types, description="User name to log in with.")
    add(
        "password",
        "secret",
        scope=scope,
        types=types,
        description="Password (basic auth), or the refresh token (Google OAuth). "
        "Use `${ENV_VAR}` or `${file:path}`; never printed.",
    )
    add(
        security_option,
        "choice",
        scope=scope,
        types=types,
        default=security_default,
        choices=SECURITY_CHOICES,
        description="`ssl`: implicit TLS; `starttls`: upgrade, and fail if the server does "
        "not offer it; `none`: clear text (passwords too). Certificates are always verified "
        "when TLS is used.",
    )
    add(
        "ca-file",
        "path",
        scope=scope,
        types=types,
        description="PEM file of the certificate authorities to trust instead of the "
        "system's (for a private CA).",
    )
    add(
        "connect-timeout",
        "duration",
        scope=scope,
        types=types,
        default="00:00:30",
        minimum=MIN_TIMEOUT,
        maximum=MAX_TIMEOUT,
        description="Time allowed to connect, including the TLS handshake.",
    )
    add(
        "protocol-timeout",
        "duration",
        scope=scope,
        types=types,
        default="00:02:00",
        minimum=MIN_TIMEOUT,
        maximum=MAX_TIMEOUT,
        description="Time allowed for one server response.",
    )
    add(
        "enable-debug",
        "bool",
        scope=scope,
        types=types,
        default="false",
        description="Log the protocol trace (passwords and tokens redacted).",
    )


def port_for(config: Any, security_option: str, ports: Mapping[str, int]) -> int:
    """The configured port, or the usual one for the configured security."""
    port = config.get("port")
    if port:
        return int(port)
    return int(ports[str(config.get(security_option))])

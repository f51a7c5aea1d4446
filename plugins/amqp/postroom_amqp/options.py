"""The plugin's site options (section ``amqp``) and the settings they give.

The broker's address is a URL without credentials: the user and the password
are options of their own, the password a secret, so nothing that prints the
URL (``postroom check``, a log line, an error) can print a password.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import attrs

from postroom.api import ConfigError, OptionSchema, Secret

SECTION = "amqp"
SCHEMES = {"amqp": 5672, "amqps": 5671}


@attrs.frozen
class Settings:
    """Where and how to publish, read once from the site's options."""

    host: str
    port: int
    tls: bool
    vhost: str
    username: str
    password: Secret = attrs.field(repr=False)
    exchange: str
    routing_key: str
    queue: str | None
    declare: bool
    ca_file: str | None
    confirm_timeout: float
    connect_timeout: float
    heartbeat: int

    @property
    def address(self) -> str:
        """The broker as logs and errors name it: no user, no password."""
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://{self.host}:{self.port}/{self.vhost}"

    @property
    def destination(self) -> str:
        exchange = f"exchange {self.exchange!r}" if self.exchange else "the default exchange"
        return f"{exchange}, routing key {self.routing_key!r}"


def add_options(schema: OptionSchema) -> None:
    def add(name: str, type: str, description: str, **kwargs: Any) -> None:
        schema.add(name, type, section=SECTION, description=description, **kwargs)

    add(
        "url",
        "url",
        "The broker: `amqp://host[:5672][/vhost]` or `amqps://host[:5671][/vhost]` (TLS, "
        "certificate and host name verified). No user or password in it (see `username`, "
        "`password`). Unset: the plugin hands nothing off.",
    )
    add("username", "str", "User to log in as.", default="guest")
    add(
        "password",
        "secret",
        "Password of `username` (best as `${NAME}` or `${file:path}`); unset: `guest`.",
    )
    add(
        "vhost",
        "str",
        "Virtual host; unset: the URL's path, else `/`.",
    )
    add(
        "exchange",
        "str",
        "Exchange to publish to; empty: the default exchange (routes by queue name).",
        default="",
    )
    add("routing-key", "str", "Routing key of every message; unset: `queue`.")
    add(
        "queue",
        "str",
        "Queue the messages are for: declared durable at connect (with `declare`), and bound "
        "to `exchange` with `routing-key` when an exchange is named.",
    )
    add(
        "declare",
        "bool",
        "Declare `queue` (durable) and its binding at connect, and check that `exchange` "
        "exists; off: the broker's set-up is left as it is.",
        default=True,
    )
    add("ca-file", "path", "PEM file of the CAs to trust for `amqps://` instead of the system's.")
    add(
        "confirm-timeout",
        "duration",
        "How long a message may wait for the broker's confirm before the hand-off counts as "
        "failed (and is retried) and the connection as lost (a broker blocking publishers "
        "confirms nothing).",
        default="00:00:30",
        minimum=1,
        maximum=3600,
    )
    add(
        "connect-timeout",
        "duration",
        "Time allowed for TCP connect, TLS and the AMQP handshake.",
        default="00:00:10",
        minimum=1,
        maximum=600,
    )
    add(
        "heartbeat",
        "duration",
        "AMQP heartbeat interval proposed to the broker (a silent connection is given up "
        "after two missed beats); 0: off.",
        default="00:01:00",
        minimum=0,
        maximum=3600,
    )


def _error(config: Any, message: str, name: str) -> ConfigError:
    error: ConfigError = config.error(message, SECTION, name)
    return error


def read_settings(config: Any) -> Settings | None:
    """The settings, or None when no ``amqp.url`` is set; ``ConfigError`` naming
    the option when they cannot work."""

    def get(name: str) -> Any:
        return config.get(SECTION, name)

    url = get("url")
    if url is None:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise _error(config, "must start with amqp:// or amqps://", "url")
    if parts.username is not None or parts.password is not None:
        raise _error(
            config,
            "must not hold a user or password (it would be printed): use amqp.username and "
            "amqp.password",
            "url",
        )
    if parts.query or parts.fragment:
        raise _error(config, "must not have a query or fragment", "url")
    try:
        port = parts.port or SCHEMES[scheme]
    except ValueError:
        raise _error(config, "has an invalid port", "url") from None
    host = parts.hostname or ""
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    vhost = get("vhost")
    if vhost is None:
        vhost = unquote(path) if path else "/"
    queue = get("queue") or None
    routing_key = get("routing-key")
    if routing_key is None:
        if queue is None:
            raise _error(config, "set amqp.queue or amqp.routing-key", "routing-key")
        routing_key = queue
    ca_file = get("ca-file")
    if ca_file is not None and scheme != "amqps":
        raise _error(config, "is only used with an amqps:// url", "ca-file")
    password = get("password")
    return Settings(
        host=host,
        port=port,
        tls=scheme == "amqps",
        vhost=vhost,
        username=get("username"),
        password=password if password is not None else Secret("guest"),
        exchange=get("exchange"),
        routing_key=routing_key,
        queue=queue,
        declare=bool(get("declare")),
        ca_file=str(ca_file) if ca_file is not None else None,
        confirm_timeout=float(get("confirm-timeout")),
        connect_timeout=float(get("connect-timeout")),
        heartbeat=int(get("heartbeat")),
    )

"""The ``webhook`` section: where to POST, the secret, and how long to wait.

:meth:`Settings.read` checks what one option's type cannot (an ``https://``
URL, the secret's form, header names) at ``postroom_configure``, so a
mistake stops ``postroom check`` and start-up with the option's line, not
the first hand-off.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from postroom.api import OptionSchema, Scope, Secret
from postroom_webhook.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, secret_key

SECTION = "webhook"

#: request headers the plugin sets itself (or HTTP does): not for ``headers``
RESERVED_HEADERS = frozenset(
    {
        ID_HEADER,
        TIMESTAMP_HEADER,
        SIGNATURE_HEADER,
        "content-type",
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def add_options(schema: OptionSchema) -> None:
    def add(name: str, type_: str, description: str, **keywords: Any) -> None:
        schema.add(
            name, type_, scope=Scope.GLOBAL, section=SECTION, description=description, **keywords
        )

    add(
        "url",
        "url",
        "The receiver's `https://` address: each new inbound interaction is POSTed "
        "there as JSON, signed (Standard Webhooks; docs/integration.md). Absent: no "
        "webhook hand-off.",
    )
    add(
        "secret",
        "secret",
        "The signing secret, required with `url`: `whsec_` and the base64 of 24 to 64 "
        "random bytes, shared with the receiver. Give it as `${ENV}` or `${file:path}`.",
    )
    add(
        "previous-secret",
        "secret",
        "While changing the secret: the old one. Each webhook then carries a signature "
        "for each secret, so the receiver can switch when it is ready.",
    )
    add(
        "timeout",
        "duration",
        "Time allowed for one delivery: connecting, TLS, sending and the whole answer. "
        "A receiver that takes longer counts as unavailable (retried).",
        default="00:00:30",
        minimum=1,
        maximum=600,
    )
    add(
        "ca-file",
        "path",
        "PEM file of the CAs to trust for the receiver's certificate, instead of the "
        "system's. The certificate is always verified, host name included.",
    )
    add(
        "headers",
        "mapping",
        "Extra request headers (`name: value`), e.g. an API gateway's key. Not the "
        "`webhook-*` headers, Content-Type or Host. Never printed; blanked out of error "
        "messages.",
        secret=True,
    )
    add(
        "use-proxy",
        "bool",
        "Send through the site's `proxy` section (when it applies, as token requests "
        "do); `false`: straight to the receiver, e.g. one inside the centre's network.",
        default=True,
    )
    add(
        "max-connections",
        "int",
        "Most webhook requests in flight at once; further hand-offs wait their turn "
        "(a backlog after an outage does not open hundreds of connections).",
        default=4,
        minimum=1,
        maximum=64,
    )


@attrs.frozen
class Settings:
    """The ``webhook`` section of one site, checked."""

    url: str
    #: HMAC keys: the secret's, then the previous secret's
    keys: tuple[bytes, ...] = attrs.field(repr=False)
    timeout: float
    ca_file: str | None
    headers: dict[str, str] = attrs.field(repr=False)
    use_proxy: bool
    max_connections: int
    #: what an error message must never show (secrets, extra header values)
    hidden: tuple[str, ...] = attrs.field(repr=False)

    @property
    def where(self) -> str:
        """The receiver as messages name it: ``https://host[:port]`` (the path may
        hold a token, so it is left out)."""
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"https://{parts.hostname}{port}"

    @classmethod
    def read(cls, config: Any) -> Settings | None:
        """The site's settings, None when it sets no ``url``; a ConfigError
        pointing at the option when something cannot work."""

        def get(name: str) -> Any:
            return config.get(SECTION, name)

        url = get("url")
        if not url:
            for name in ("secret", "previous-secret", "ca-file", "headers"):
                if get(name):
                    raise config.error(f"{SECTION}.{name} is set but {SECTION}.url is not",
                                       SECTION, "url")  # fmt: skip
            return None
        check_url(config, str(url))
        secret: Secret | None = get("secret")
        if not secret:
            raise config.error(
                "a webhook needs a signing secret (whsec_..., see docs/integration.md)",
                SECTION,
                "secret",
            )
        keys = [_key(config, "secret", secret)]
        hidden = [secret.reveal(), secret.reveal()[len("whsec_") :]]
        previous: Secret | None = get("previous-secret")
        if previous:
            keys.append(_key(config, "previous-secret", previous))
            hidden += [previous.reveal(), previous.reveal()[len("whsec_") :]]
        headers = _headers(config, get("headers") or {})
        hidden += list(headers.values())
        ca_file = get("ca-file")
        return cls(
            url=str(url),
            keys=tuple(keys),
            timeout=float(get("timeout")),
            ca_file=str(Path(ca_file)) if ca_file else None,
            headers=headers,
            use_proxy=bool(get("use-proxy")),
            max_connections=int(get("max-connections")),
            hidden=tuple(hidden),
        )


def check_url(config: Any, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise config.error(
            "the webhook must be https:// (the body is an e-mail's content and its "
            "signature; plain HTTP would show both to the network)",
            SECTION,
            "url",
        )
    if parts.username is not None or parts.password is not None:
        raise config.error(
            "put no credentials in the URL: the signature authenticates the gateway, "
            "and headers can carry a receiver's key",
            SECTION,
            "url",
        )
    if parts.fragment:
        raise config.error("a webhook URL has no #fragment", SECTION, "url")
    try:
        parts.port  # noqa: B018 (raises for a port out of range)
    except ValueError as exc:
        raise config.error(str(exc), SECTION, "url") from None


def _key(config: Any, name: str, secret: Secret) -> bytes:
    try:
        return secret_key(secret.reveal())
    except ValueError as exc:
        raise config.error(str(exc), SECTION, name) from None


def _headers(config: Any, given: dict[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in given.items():
        text_name = str(name).strip()
        if not _TOKEN.match(text_name):
            raise config.error(f"{text_name!r} is not an HTTP header name", SECTION, "headers")
        if text_name.lower() in RESERVED_HEADERS:
            raise config.error(
                f"the plugin sets {text_name} itself; leave it out of headers", SECTION, "headers"
            )
        raw = value.reveal() if isinstance(value, Secret) else value
        if raw is None or isinstance(raw, list | dict):
            raise config.error(f"header {text_name}: give one text value", SECTION, "headers")
        text = str(raw)
        if any(c in text for c in "\r\n\x00") or not _latin1(text):
            # the value is not quoted: it may be a key
            raise config.error(
                f"header {text_name}: the value has a line break, a NUL or a character "
                "HTTP headers cannot carry",
                SECTION,
                "headers",
            )
        headers[text_name] = text
    return headers


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


__all__ = ["SECTION", "Settings", "add_options"]



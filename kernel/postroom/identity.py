"""Mailbox identity: who mail from a mailbox is, and which account sends it.

A mailbox (a ``pop-client`` entry) may declare its ``address`` and
``display-name``, a signature (``signature-text-file``,
``signature-html-file``) and an SMTP login of its own (``smtp-user``,
``smtp-password``); the options are the kernel's
(:func:`postroom.config.core.add_identity_options`). They are read once,
when the kernel is built (:func:`load_identities`): a signature that cannot be
read is a configuration error naming the site file, the line and the option,
like every other.

When a request is queued (:func:`postroom.services.outbound.queue_send`) it
gets its mailbox (:func:`outbound_mailbox`): the one it names, else the one
the interaction it answers came in on. That mailbox's identity is its From
when the request gives none (an explicit ``from`` wins; without an address the
site's default From stays), and its signature goes below the request's text,
above a reply's quote (:func:`sign`). The outbox sends it through the
mailbox's own login when it has one, else through the ``smtp-client``
account, which then needs the right to send as that address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any

import attrs

from postroom.addresses import AddressError, parse_mailbox
from postroom.config.declaration import MAILBOX_SECTION, SMTP_SECTION
from postroom.config.site import MailboxConfig, SectionConfig, SiteConfig
from postroom.errors import ConfigError, ConfigErrors
from postroom.model import Interaction, OutboundRequest
from postroom.replies import before_body_end, html_text
from postroom.sendrequest import RequestError

#: a signature file is at most this many bytes: a signature, not a document
MAX_SIGNATURE_BYTES = 64 * 1024
#: a display name is at most this many characters (a From header line is 998)
MAX_DISPLAY_NAME = 200
#: what no display name may hold: control characters (a header is one line)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: the class of the ``<div>`` an HTML signature is put in
SIGNATURE_CLASS = "postroom-signature"


@attrs.frozen
class MailboxIdentity:
    """What one mailbox says about the mail sent from it."""

    mailbox: str
    #: the mailbox's own address (an addr-spec), or None
    address: str | None = None
    display_name: str | None = None
    #: the signature of each part, as the site's files hold it (line ends ``\n``)
    signature_text: str | None = None
    signature_html: str | None = None
    #: whether it logs in to the SMTP server as its own user (``smtp-user``)
    own_account: bool = False

    @property
    def from_header(self) -> str | None:
        """``Display Name <address>`` (or the bare address) for a From, or None."""
        if self.address is None:
            return None
        return str(attrs.evolve(parse_mailbox(self.address), display_name=self.display_name or ""))

    @property
    def signed(self) -> bool:
        return self.signature_text is not None or self.signature_html is not None


# -------------------------------------------------------------- configuration


def load_identities(config: SiteConfig) -> dict[str, MailboxIdentity]:
    """Every configured mailbox's identity, by mailbox name; raises
    :class:`~postroom.errors.ConfigErrors` naming each option that cannot be used."""
    identities: dict[str, MailboxIdentity] = {}
    errors: list[ConfigError] = []
    for mailbox in config.mailboxes:
        try:
            identities[mailbox.name] = _identity(config, mailbox)
        except ConfigErrors as exc:
            errors += exc.errors
    if errors:
        raise ConfigErrors(errors)
    return identities


def _identity(config: SiteConfig, mailbox: MailboxConfig) -> MailboxIdentity:
    errors: list[ConfigError] = []

    def attempt(read: Any, *args: Any) -> Any:
        try:
            return read(*args)
        except ConfigError as exc:
            errors.append(exc)
            return None

    address = attempt(_address, mailbox)
    display_name = attempt(_display_name, mailbox, address)
    text = attempt(_signature, mailbox, "signature-text-file")
    html = attempt(_signature, mailbox, "signature-html-file")
    own_account = bool(attempt(_own_account, config, mailbox))
    if errors:
        raise ConfigErrors(errors)
    return MailboxIdentity(mailbox.name, address, display_name, text, html, own_account)


def _address(mailbox: MailboxConfig) -> str | None:
    value = mailbox.get("address")
    if value is None:
        return None
    try:
        found = parse_mailbox(str(value))
    except AddressError as exc:
        raise mailbox.error(f"not an e-mail address: {exc}", "address") from None
    if found.display_name:
        raise mailbox.error(
            f"write the address alone ({found.addr_spec}) and the name in 'display-name'",
            "address",
        )
    return found.addr_spec


def _display_name(mailbox: MailboxConfig, address: str | None) -> str | None:
    value = mailbox.get("display-name")
    if value is None or not str(value).strip():
        return None
    name = str(value).strip()
    if _CONTROL.search(name):
        raise mailbox.error("holds a control character (a From is one line)", "display-name")
    if len(name) > MAX_DISPLAY_NAME:
        raise mailbox.error(f"longer than {MAX_DISPLAY_NAME} characters", "display-name")
    if address is None:
        raise mailbox.error(
            "needs 'address': the display name is written before the mailbox's address",
            "display-name",
        )
    return name


def _signature(mailbox: MailboxConfig, option: str) -> str | None:
    """A signature file's text: UTF-8, no NUL, at most :data:`MAX_SIGNATURE_BYTES`."""
    path: Path | None = mailbox.get(option)
    if path is None:
        return None
    try:
        if not path.is_file():
            raise mailbox.error(f"{path}: not a file", option)
        with path.open("rb") as fh:
            data = fh.read(MAX_SIGNATURE_BYTES + 1)
    except OSError as exc:
        raise mailbox.error(f"{path}: cannot be read: {exc.strerror or exc}", option) from None
    if len(data) > MAX_SIGNATURE_BYTES:
        raise mailbox.error(
            f"{path}: larger than {MAX_SIGNATURE_BYTES // 1024} KB (a signature, not a document)",
            option,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise mailbox.error(f"{path}:{line}: not UTF-8 text", option) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise mailbox.error(f"{path}:{line}: holds a NUL character", option)
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    return text.rstrip() or None


def _own_account(config: SiteConfig, mailbox: MailboxConfig) -> bool:
    user, password = mailbox.get("smtp-user"), mailbox.get("smtp-password")
    if user is None and password is None:
        return False
    if user is None or not str(user).strip():
        raise mailbox.error("given without 'smtp-user': give both", "smtp-password")
    if not password:
        raise mailbox.error("given without 'smtp-password': give both", "smtp-user")
    if config.smtp is None:
        raise mailbox.error(
            "no smtp-client is configured: 'smtp-user' logs in to the smtp-client's server",
            "smtp-user",
        )
    return True


def account_section(smtp: SectionConfig, mailbox: MailboxConfig) -> SectionConfig:
    """The ``smtp-client`` section as *mailbox*'s own sender reads it: the same
    server and settings, logged in as ``smtp-user`` with ``smtp-password``
    (through the ``smtp-client``'s auth driver). Named ``smtp-client[<mailbox>]``
    in logs and in the auth events."""
    options = smtp.options.copy()
    options["user"] = mailbox.get("smtp-user")
    options["password"] = mailbox.get("smtp-password")
    options["enable-authentication"] = True
    lines = dict(smtp.lines)
    for option, own in (("user", "smtp-user"), ("password", "smtp-password")):
        line = mailbox.line_of(own)
        if line is not None:
            lines[option] = line
    return attrs.evolve(smtp, name=f"{SMTP_SECTION}[{mailbox.name}]", options=options, lines=lines)


def default_from(config: SiteConfig) -> str:
    """The From of mail whose request and mailbox name none: ``default-from-address``,
    else ``postroom@<default-domain>``."""
    configured = config.get("email-processing", "default-from-address")
    if configured:
        return str(configured)
    return f"postroom@{config.get('email-processing', 'default-domain')}"


def is_local_domain(domain: str) -> bool:
    """Whether nobody outside this machine can answer mail from *domain*:
    ``localhost``, ``*.localhost``, ``localdomain``, ``*.local`` or a single label."""
    domain = domain.lower().rstrip(".")
    return (
        "." not in domain
        or domain.endswith((".localhost", ".local", ".localdomain"))
        or domain == "localdomain"
    )


def _local_address(text: str) -> bool:
    try:
        return is_local_domain(parse_mailbox(text).domain)
    except AddressError:
        return False  # the request is refused when it is queued, saying why


def identity_warnings(
    config: SiteConfig, identities: dict[str, MailboxIdentity]
) -> list[ConfigError]:
    """Where outbound mail would go out from an address nobody can answer
    (``postroom@localhost``): for ``postroom check`` and the start of ``run``."""
    if config.smtp is None:
        return []
    warnings = []
    fallback = default_from(config)
    if _local_address(fallback):
        anonymous = [i.mailbox for i in identities.values() if i.address is None]
        configured = config.get("email-processing", "default-from-address")
        option = "default-from-address" if configured else "default-domain"
        replies = (
            f"; so do replies to mail of the mailbox(es) without an 'address': {_names(anonymous)}"
            if anonymous
            else ""
        )
        warnings.append(
            config.error(
                f"outbound mail whose request names no From and no mailbox goes out from "
                f"{fallback}, which recipients cannot answer{replies}; set "
                "email-processing: default-from-address (or default-domain) and each "
                "mailbox's 'address'",
                "email-processing",
                option,
            )
        )
    for identity in identities.values():
        if identity.address is not None and _local_address(identity.address):
            warnings.append(
                config.mailbox(identity.mailbox).error(
                    f"mail from this mailbox goes out from {identity.address}, which "
                    "recipients cannot answer",
                    "address",
                )
            )
    return warnings


def _names(names: Iterable[str], limit: int = 10) -> str:
    shown = list(names)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


# ------------------------------------------------------------------ requests


def outbound_mailbox(
    identities: dict[str, MailboxIdentity], request: OutboundRequest, parent: Interaction | None
) -> MailboxIdentity | None:
    """The mailbox *request* goes out from: the one it names (a name no mailbox has is
    refused, :class:`~postroom.sendrequest.RequestError` on ``mailbox``), else the
    one *parent* (its ``in_reply_to``, or the mail it forwards) came in on, while
    that one is configured."""
    if request.mailbox is not None:
        found = identities.get(request.mailbox)
        if found is None:
            raise RequestError(
                "mailbox",
                f"no mailbox {request.mailbox!r} is configured (the names of the "
                f"site's {MAILBOX_SECTION} entries)",
            )
        return found
    if parent is not None and parent.mailbox is not None:
        return identities.get(parent.mailbox)
    return None


def sign(request: OutboundRequest, identity: MailboxIdentity) -> None:
    """Append *identity*'s signature to *request*'s parts, as a quote is added: the
    HTML part gets the HTML signature (or the text one, escaped), the text part
    the text signature (or the HTML one's text); a request with neither part
    gets the signature as its text."""
    if not identity.signed:
        return
    text = identity.signature_text
    if text is None and identity.signature_html is not None:
        text = html_text(identity.signature_html, MAX_SIGNATURE_BYTES)
    markup = identity.signature_html
    if markup is None and text is not None:
        markup = escape(text).replace("\n", "<br>\n")
    if request.html is not None and markup:
        request.html = before_body_end(
            request.html, f'<div class="{SIGNATURE_CLASS}">\n{markup}\n</div>\n'
        )
    if (request.text is not None or request.html is None) and text:
        mine = (request.text or "").rstrip("\n")
        request.text = (f"{mine}\n\n{text}" if mine else text) + "\n"


__all__ = [
    "MAX_DISPLAY_NAME",
    "MAX_SIGNATURE_BYTES",
    "MailboxIdentity",
    "account_section",
    "default_from",
    "identity_warnings",
    "is_local_domain",
    "load_identities",
    "outbound_mailbox",
    "sign",
]

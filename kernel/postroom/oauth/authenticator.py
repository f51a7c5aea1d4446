""":class:`OAuthAuthenticator`: what the four OAuth auth drivers share.

A driver says only what is its own: how its grant is keyed, what in the
site file identifies it, and how one token request is made. This base does
the rest the same way for all of them:

* **before asking the identity provider**, the persisted state of the app
  registration and of the grant: one marked ``needs-reauthorisation`` for the
  configuration the site file holds now fails at once, without a request (a
  restart does not hammer the provider with a grant it refused); a changed
  password, client secret or refresh token in the file starts afresh;
* **the token** from the shared :class:`~postroom.tokens.TokenCache` (single
  flight per key, refreshed ``token-expiry-margin-time`` before expiry);
* **failures** by kind (:func:`~postroom.tokens.classify_token_error`):
  ``grant`` marks this grant, ``client`` marks the app registration, so every
  mailbox using it stops and the log says so once; ``temporary`` is an
  :class:`IdentityProviderUnavailable`, a connection failure the mailbox
  backs off from and recovers by itself;
* :meth:`invalidate` after the server refused a token: the next login gets a
  new one.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar
from urllib.parse import quote

from twisted.internet import defer
from zope.interface import implementer

from postroom.config.types import Secret
from postroom.drivers import Credentials, DriverContext
from postroom.errors import ConfigError, ConnectionDown
from postroom.grants import NeedsReauthorisation
from postroom.interfaces import IAuthenticator
from postroom.oauth.http import TokenAnswer
from postroom.oauth.runtime import OAuthRuntime
from postroom.tokens import Token, TokenError, TokenFailure, classify_token_error

log = logging.getLogger(__name__)

#: the mechanism OAuth credentials carry: the protocol driver picks XOAUTH2 or OAUTHBEARER
BEARER = "BEARER"
#: the user name options, by where a driver is used (mailboxes, smtp-client)
_USER_OPTIONS = ("mailbox", "user")
#: Azure's public cloud, ``tenant-authority``'s default
AZURE_AUTHORITY = "https://login.microsoftonline.com/"


class IdentityProviderUnavailable(ConnectionDown):
    """The token endpoint could not be reached, timed out or answered 5xx/429:
    a temporary state, retried with the connection back-off."""


@implementer(IAuthenticator)
class OAuthAuthenticator:
    """Base class of OAuth auth drivers (built as ``cls(mailbox_or_smtp_client, context)``)."""

    #: the driver's entry-point name, for messages and grant keys
    name: ClassVar[str] = "oauth"
    #: the scope requested when the site gives none
    default_scope: ClassVar[str] = ""

    def __init__(self, config: Any, context: DriverContext | None = None) -> None:
        self.config = config
        self.context = context
        runtime = getattr(context, "oauth", None)
        if runtime is None:
            raise self.config_error(
                f"the {self.name} auth driver needs the kernel's OAuth runtime "
                "(DriverContext.oauth); build drivers through postroom's Kernel"
            )
        self.oauth: OAuthRuntime = runtime
        self.margin = float(self.option("token-expiry-margin-time") or 0)
        self._last: str | None = None
        self.check()

    # -- what a driver provides

    def check(self) -> None:
        """Raise ConfigError for options the driver cannot work without (at build time)."""

    def cache_key(self) -> tuple[Any, ...]:
        """What makes two mailboxes share one access token."""
        raise NotImplementedError

    def grant_key(self) -> str:
        """The persisted state's key of this grant (no secret in it)."""
        raise NotImplementedError

    def client_key(self) -> str:
        """The persisted state's key of the app registration (no secret in it)."""
        raise NotImplementedError

    def configured(self) -> str:
        """What the site file holds for this grant (hashed, never stored in clear)."""
        raise NotImplementedError

    def client_configured(self) -> str:
        """What the site file holds for the app registration (client secret, certificate)."""
        return ""

    def sasl_user(self) -> str:
        """The user name sent with the token (the mailbox address)."""
        return self.user()

    async def request_token(self) -> Token:
        """Make one token request (:meth:`exchange` does the HTTP) and read the answer."""
        raise NotImplementedError

    def default_token_url(self) -> str:
        """The provider's token endpoint when the site sets no ``token-endpoint``."""
        raise NotImplementedError

    # -- IAuthenticator

    def credentials(self, protocol: str) -> defer.Deferred[Credentials]:
        """An access token for *protocol*, from the cache or a new request."""
        return defer.ensureDeferred(self._credentials())

    def invalidate(self) -> None:
        """The server refused the token: the next login gets another."""
        self.oauth.cache.invalidate(self.cache_key(), refused=self._last)

    async def _credentials(self) -> Credentials:
        await self.oauth.usable(self.client_key(), self.client_configured())
        await self.oauth.usable(self.grant_key(), self.configured())
        try:
            token = await self.oauth.cache.get(
                self.cache_key(), self._counted_request, margin=self.margin
            )
        except TokenError as exc:
            raise await self._failed(exc) from None
        self._last = token.value
        self.oauth.expires(self.mailbox_name, token.expires_at)
        return Credentials(self.sasl_user(), token.value, BEARER)

    async def _counted_request(self) -> Token:
        try:
            token = await self.request_token()
        except TokenError as exc:
            self.oauth.counted(exc.kind.value)
            raise
        self.oauth.counted("ok")
        return token

    async def _failed(self, error: TokenError) -> Exception:
        where = self.where
        if error.kind is TokenFailure.TEMPORARY:
            return IdentityProviderUnavailable(
                f"{where}: identity provider unavailable ({error.detail}); retrying later"
            )
        if error.kind is TokenFailure.CLIENT:
            reason = (
                f"the identity provider refused the app registration {self.client_label()}: "
                f"{error.detail} (fix the client secret or certificate of every mailbox using "
                "it, then restart)"
            )
            marked = await self.oauth.mark(self.client_key(), self.client_configured(), reason)
            if self.oauth.first_report(self.client_key()):
                log.error("%s: %s", where, reason, extra={"mailbox": self.mailbox_name})
            return marked
        reason = (
            f"the identity provider refused the grant of {where}: {error.detail} ({self.advice()})"
        )
        return await self.oauth.mark(self.grant_key(), self.configured(), reason)

    def advice(self) -> str:
        """What an administrator does about a refused grant (docs/auth.md has more)."""
        return "renew the consent or credentials in the site file, then restart"

    def client_label(self) -> str:
        return f"{self.option('client-id')!r}"

    # -- helpers for drivers

    @property
    def mailbox_name(self) -> str:
        return str(getattr(self.config, "name", "?"))

    @property
    def where(self) -> str:
        name = self.mailbox_name
        return "smtp-client" if name == "smtp-client" else f"mailbox {name!r}"

    def option(self, name: str) -> Any:
        """An option's value (None when not declared where the driver is used)."""
        try:
            return self.config.get(name)
        except KeyError:
            return None

    def text(self, name: str) -> str | None:
        value = self.option(name)
        if value is None:
            return None
        value = value.reveal() if isinstance(value, Secret) else str(value)
        return value.strip() or None

    def required(self, name: str, why: str) -> str:
        value = self.text(name)
        if value is None:
            raise self.config_error(f"the {self.name} auth driver needs {name!r}: {why}", name)
        return value

    def user(self) -> str:
        for option in _USER_OPTIONS:
            value = self.text(option)
            if value is not None:
                return value
        raise self.config_error(
            f"the {self.name} auth driver needs the mailbox's address", "mailbox"
        )

    def secret_section(self, name: str) -> str:
        """The ``password`` of the ``secret-<name>`` section the option *name* names."""
        section = self.required(name, "the name of the secret-<name> section holding it")
        site = getattr(self.context, "config", None)
        try:
            value = site.get(f"secret-{section}", "password") if site is not None else None
        except KeyError:
            value = None
        if value is None:
            raise self.config_error(
                f"{name} {section!r} names no secret-{section} section with a password", name
            )
        return value.reveal() if isinstance(value, Secret) else str(value)

    def config_error(self, message: str, option: str | None = None) -> ConfigError:
        error = getattr(self.config, "error", None)
        if callable(error):
            made = error(message, option)
            if isinstance(made, ConfigError):
                return made
        return ConfigError(f"{self.where}: {message}", option=option)

    def now(self) -> float:
        return float(self.oauth.clock.seconds())

    def token_url(self) -> str:
        """``token-endpoint`` when the site sets one, else :meth:`default_token_url`."""
        return self.text("token-endpoint") or self.default_token_url()

    def azure_token_url(self) -> str:
        """Azure's v2.0 token endpoint: ``tenant-authority`` (default
        :data:`AZURE_AUTHORITY`) followed by ``{directory-id}/oauth2/v2.0/token``."""
        authority = self.text("tenant-authority") or AZURE_AUTHORITY
        directory = self.required(
            "directory-id", "the tenant (directory) id or domain, unless token-endpoint is set"
        )
        return f"{authority.rstrip('/')}/{quote(directory, safe='')}/oauth2/v2.0/token"

    async def exchange(self, client: Any, body: str) -> tuple[Token, str | None]:
        """POST *body* (built by the oauthlib *client*) to :meth:`token_url`,
        trusting ``token-ca-file`` if set, and read the answer with *client*
        (:func:`read_token_answer`)."""
        answer = await self.oauth.http.post_form(
            self.token_url(), body, ca_file=self.text("token-ca-file")
        )
        return read_token_answer(answer, client, self.now())

    def site_error(self, message: str, section: str, option: str) -> ConfigError:
        """A ConfigError at a site-wide option (``gateway.token-encryption-secret``)."""
        site = getattr(self.context, "config", None)
        error = getattr(site, "error", None)
        if callable(error):
            made = error(f"{self.where}: {message}", section, option)
            if isinstance(made, ConfigError):
                return made
        return ConfigError(f"{self.where}: {message}", option=f"{section}.{option}")


def read_token_answer(answer: TokenAnswer, client: Any, now: float) -> tuple[Token, str | None]:
    """The access token (and a new refresh token, if any) in a token endpoint's
    answer, read by the oauthlib *client* that built the request.

    A non-200 answer or one oauthlib refuses is a :class:`TokenError`
    classified as :func:`classify_token_error` says; the answer's own words
    are kept, never the request's secrets."""
    if answer.status != 200:
        raise classify_token_error(answer.status, answer.body)
    try:
        text = answer.body.decode("utf-8")
        # scope=None: Azure answers more scopes than ".default" asked; not an error
        params = client.parse_request_body_response(text, scope=None)
    except Exception as exc:
        error = getattr(exc, "error", None)
        if error:
            description = getattr(exc, "description", "") or ""
            raise classify_token_error(
                400, json.dumps({"error": error, "error_description": description})
            ) from None
        raise TokenError(
            TokenFailure.TEMPORARY, f"unreadable token answer ({type(exc).__name__})", 200
        ) from None
    value = params.get("access_token")
    if not isinstance(value, str) or not value:
        raise TokenError(TokenFailure.TEMPORARY, "token answer without an access token", 200)
    expires_in = params.get("expires_in")
    try:
        lifetime = float(expires_in) if expires_in is not None else None
    except (TypeError, ValueError):
        lifetime = None
    token_type = str(params.get("token_type") or "Bearer")
    refresh = params.get("refresh_token")
    return (
        Token.expiring(value, lifetime, now, token_type),
        refresh if isinstance(refresh, str) and refresh else None,
    )


__all__ = [
    "AZURE_AUTHORITY",
    "BEARER",
    "IdentityProviderUnavailable",
    "NeedsReauthorisation",
    "OAuthAuthenticator",
    "read_token_answer",
]

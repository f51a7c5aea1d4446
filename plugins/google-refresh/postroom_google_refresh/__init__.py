"""postroom-google-refresh: Google access tokens from a refresh token the user consented to.

The ``google-refresh`` auth driver (``postroom.auth:google-refresh``): the
refresh-token grant (RFC 6749 section 6) at Google's token endpoint, as the
commercial product does it: ``password`` is the refresh token, ``secret``
names the ``secret-<name>`` section holding the OAuth client's secret.

Google may rotate a refresh token (answer a new one with an access token);
the new one is kept in the store, encrypted with a key derived from
``gateway.token-encryption-secret``, and used after a restart, unless the
administrator has since written another refresh token into the site file,
which then wins. A stored token that no longer decrypts (the key changed)
puts the mailbox into ``needs-reauthorisation``; nothing crashes.
"""

from __future__ import annotations

import hashlib

from oauthlib.oauth2 import WebApplicationClient

from postroom.api import OAuthAuthenticator, Token

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"

__all__ = ["GOOGLE_TOKEN_URL", "GoogleRefreshAuthenticator"]

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"


class GoogleRefreshAuthenticator(OAuthAuthenticator):
    """The refresh-token grant for one Google mailbox (or ``smtp-client``)."""

    name = "google-refresh"
    default_scope = "https://mail.google.com/"

    def check(self) -> None:
        self.client_id = self.required("client-id", "the OAuth client id")
        self.endpoint = self.token_url()
        self.scope = self.text("scope") or self.default_scope
        self.username = self.user()
        self.required("password", "the refresh token of the user's consent")
        self.secret_section("secret")
        if not self.oauth.has_key:
            raise self.site_error(
                f"the {self.name} auth driver keeps the refresh tokens Google rotates, "
                "encrypted: set gateway.token-encryption-secret (at least 16 bytes)",
                "gateway",
                "token-encryption-secret",
            )

    def default_token_url(self) -> str:
        authority = self.text("tenant-authority")
        if authority is None or "google" in authority.lower():
            return GOOGLE_TOKEN_URL
        raise self.config_error(
            f"tenant-authority {authority!r} does not name Google: the {self.name} auth "
            "driver needs a Google authority, or token-endpoint",
            "tenant-authority",
        )

    def cache_key(self) -> tuple[str, ...]:
        # by the configured refresh token's hash: a new token in the file is a new grant
        configured = hashlib.sha256(self.configured().encode()).hexdigest()
        return (self.endpoint, self.client_id, self.scope, configured)

    def grant_key(self) -> str:
        return f"{self.name} {self.endpoint} {self.client_id} {self.username.lower()}"

    def client_key(self) -> str:
        return f"{self.name} {self.endpoint} {self.client_id}"

    def configured(self) -> str:
        return self.required("password", "the refresh token")

    def client_configured(self) -> str:
        return self.client_secret()

    def client_secret(self) -> str:
        return self.secret_section("secret")

    async def request_token(self) -> Token:
        configured = self.configured()
        vault = self.oauth.vault
        refresh = await vault.refresh_token(self.grant_key(), configured)
        client = WebApplicationClient(self.client_id)
        body = client.prepare_refresh_body(
            refresh_token=refresh,
            scope=self.scope,
            client_id=self.client_id,
            client_secret=self.client_secret(),
        )
        token, rotated = await self.exchange(client, body)
        if rotated is not None and rotated != refresh:
            await vault.rotated(self.grant_key(), rotated, configured)
        return token

"""postroom-azure-ropc: Azure AD tokens from the mailbox's user name and password.

The ``azure-ropc`` auth driver (``postroom.auth:azure-ropc``): the resource
owner password credentials grant (RFC 6749 section 4.3) at Microsoft Entra
ID's v2.0 token endpoint, as the commercial product does it. A public client
sends only its ``client-id``; a confidential one adds the client secret of
the ``secret-<name>`` section its ``secret`` names.

Everything but the request itself (cache, single flight, refresh before
expiry, persisted ``needs-reauthorisation``, error kinds) is the kernel's
:class:`~postroom.api.OAuthAuthenticator`. ROPC fails for accounts with MFA
(AADSTS50076): that mailbox is marked, the others go on.
"""

from __future__ import annotations

from oauthlib.oauth2 import LegacyApplicationClient

from postroom.api import OAuthAuthenticator, Token

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"

__all__ = ["AzureROPCAuthenticator"]


class AzureROPCAuthenticator(OAuthAuthenticator):
    """The password grant for one mailbox (or ``smtp-client``) user."""

    name = "azure-ropc"
    default_scope = "https://outlook.office.com/.default"

    def check(self) -> None:
        self.client_id = self.required("client-id", "the app registration's application id")
        self.endpoint = self.token_url()
        self.scope = self.text("scope") or self.default_scope
        self.username = self.user()
        self.required("password", "the mailbox user's password, for the password grant")
        if self.text("secret") is not None:
            self.secret_section("secret")  # a confidential client: the section must exist

    def default_token_url(self) -> str:
        return self.azure_token_url()

    def password(self) -> str:
        return self.required("password", "the mailbox user's password")

    def client_secret(self) -> str | None:
        """The confidential client's secret; None for a public client."""
        return self.secret_section("secret") if self.text("secret") is not None else None

    def cache_key(self) -> tuple[str, ...]:
        return (self.endpoint, self.client_id, self.scope, self.username.lower())

    def grant_key(self) -> str:
        return f"{self.name} {self.endpoint} {self.client_id} {self.username.lower()}"

    def client_key(self) -> str:
        return f"{self.name} {self.endpoint} {self.client_id}"

    def configured(self) -> str:
        # a new password in the site file starts the grant afresh
        return self.password()

    def client_configured(self) -> str:
        return self.client_secret() or ""

    async def request_token(self) -> Token:
        client = LegacyApplicationClient(self.client_id)
        secret = self.client_secret()
        body = client.prepare_request_body(
            username=self.username,
            password=self.password(),
            scope=self.scope,
            include_client_id=True,
            **({"client_secret": secret} if secret is not None else {}),
        )
        token, _refresh = await self.exchange(client, body)
        return token

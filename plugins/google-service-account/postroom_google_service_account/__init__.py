"""postroom-google-service-account: Google Workspace tokens by domain-wide delegation.

The ``google-service-account`` auth driver
(``postroom.auth:google-service-account``): the JWT bearer grant (RFC 7523
section 2.1) as Google applies it to service accounts. The gateway signs a
short JWT with the service account's key (from its JSON key file, a secret
file) asking for ``scope`` on behalf of ``sub`` = the mailbox; a Workspace
administrator has allowed the account's client id that scope for the domain
(domain-wide delegation). No user consents and no refresh token is kept: a
new assertion is signed whenever the access token nears its expiry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth2 import ServiceApplicationClient
from oauthlib.oauth2.rfc6749.parameters import prepare_token_request

from postroom.api import OAuthAuthenticator, Token

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"

__all__ = ["GoogleServiceAccountAuthenticator", "ServiceAccountKey", "load_key_file"]

#: Google's token endpoint, when the key file names none
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
#: seconds an assertion is valid (Google accepts at most an hour)
ASSERTION_LIFETIME = 3600


class ServiceAccountKey:
    """What the JSON key file says (the private key never printed)."""

    def __init__(self, client_email: str, private_key_id: str, key: rsa.RSAPrivateKey,
                 token_uri: str, fingerprint: str) -> None:
        self.client_email = client_email
        self.private_key_id = private_key_id
        self.key = key
        self.token_uri = token_uri
        #: SHA-256 of the file's content (what the site holds, for the grant state)
        self.fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"ServiceAccountKey({self.client_email!r}, kid={self.private_key_id!r})"


def load_key_file(path: Path) -> ServiceAccountKey:
    """Read a service account's JSON key file; ValueError saying what is wrong
    (never the key)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    try:
        document = json.loads(data)
    except ValueError:
        raise ValueError(f"{str(path)!r} is not a JSON key file") from None
    if not isinstance(document, dict) or document.get("type") != "service_account":
        raise ValueError(f"{str(path)!r} is not a service account key (type service_account)")
    fields = {}
    for name in ("client_email", "private_key_id", "private_key"):
        value = document.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"the key file {str(path)!r} has no {name}")
        fields[name] = value.strip()
    try:
        key = serialization.load_pem_private_key(fields["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError(f"the private_key of {str(path)!r} is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"the private_key of {str(path)!r} is not an RSA key (Google: RS256)")
    token_uri = document.get("token_uri")
    return ServiceAccountKey(
        fields["client_email"], fields["private_key_id"], key,
        token_uri if isinstance(token_uri, str) and token_uri else GOOGLE_TOKEN_URL,
        hashlib.sha256(data).hexdigest(),
    )


class GoogleServiceAccountAuthenticator(OAuthAuthenticator):
    """Tokens for one mailbox (the JWT's subject) from the service account's key."""

    name = "google-service-account"
    default_scope = "https://mail.google.com/"

    def check(self) -> None:
        path = self.required("service-account-file", "the service account's JSON key file")
        try:
            self.account = load_key_file(Path(path))
        except ValueError as exc:
            raise self.config_error(str(exc), "service-account-file") from None
        self.endpoint = self.token_url()
        self.scope = self.text("scope") or self.default_scope
        self.subject = self.user()

    def default_token_url(self) -> str:
        return self.account.token_uri

    def cache_key(self) -> tuple[str, ...]:
        return (self.endpoint, self.account.client_email, self.subject.lower(), self.scope)

    def grant_key(self) -> str:
        return f"{self.name} {self.account.client_email} {self.subject.lower()}"

    def client_key(self) -> str:
        return f"{self.name} {self.account.client_email}"

    def configured(self) -> str:
        return self.client_configured()

    def client_configured(self) -> str:
        # a new key file starts the account (and its grants) afresh
        return f"{self.account.private_key_id} {self.account.fingerprint}"

    def client_label(self) -> str:
        return repr(self.account.client_email)

    def assertion(self) -> str:
        """The signed JWT: ``iss`` the account, ``sub`` the mailbox, ``aud`` the endpoint."""
        now = int(self.now())
        claims = {
            "iss": self.account.client_email,
            "sub": self.subject,
            "scope": self.scope,
            "aud": self.endpoint,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        return jwt.encode(
            claims, self.account.key, algorithm="RS256",
            headers={"kid": self.account.private_key_id},
        )

    async def request_token(self) -> Token:
        client = ServiceApplicationClient(self.account.client_email)
        body = prepare_token_request(
            client.grant_type, assertion=self.assertion(), include_client_id=False
        )
        token, _refresh = await self.exchange(client, body)
        return token

"""postroom-azure-client-credentials: Azure AD app-only tokens for Exchange Online.

The ``azure-client-credentials`` auth driver (``postroom.auth:azure-client-credentials``):
the client credentials grant (RFC 6749 section 4.4) at Microsoft Entra ID's
v2.0 token endpoint. The app authenticates with a client secret, or with a
certificate: a client assertion (RFC 7523 section 2.2, as Microsoft
specifies it) signed RS256 with the certificate's key, its ``x5t`` header the
certificate's SHA-1 thumbprint. No user password is involved, so MFA does not
get in the way; Exchange Online decides which mailboxes the app's service
principal may open, and the mailbox address is the SASL user.

One token serves every mailbox of the app: the cache key is (endpoint, client
id, scope), so a hundred mailboxes cost one token request per expiry.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth2 import BackendApplicationClient

from postroom.api import OAuthAuthenticator, Token

#: the postroom.api version this distribution is written against (docs/api.md)
POSTROOM_API = "1.0"

__all__ = ["AzureClientCredentialsAuthenticator"]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: seconds a client assertion stays valid (Microsoft accepts up to 10 minutes)
ASSERTION_LIFETIME = 300


class AppCertificate:
    """The app's certificate credential: the key signs, the thumbprint names it."""

    def __init__(self, key: rsa.RSAPrivateKey, certificate: x509.Certificate,
                 fingerprint: str) -> None:
        self.key = key
        self.certificate = certificate
        #: SHA-256 of the file's content (what the site file holds, for the grant state)
        self.fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"AppCertificate(x5t={self.x5t!r})"

    @property
    def x5t(self) -> str:
        """base64url (unpadded) of the DER certificate's SHA-1 hash."""
        digest = self.certificate.fingerprint(hashes.SHA1())  # x5t is SHA-1 by definition
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def load_certificate(path: Path) -> AppCertificate:
    """The certificate and RSA key in one PEM file; ValueError saying what is wrong
    (never the key)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{str(path)!r} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValueError(
            f"{str(path)!r} holds no unencrypted PEM private key beside the certificate"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"the key in {str(path)!r} is not an RSA key (Azure signs RS256)")
    matching = [c for c in certificates if c.public_key() == key.public_key()]
    if not matching:
        raise ValueError(f"no certificate in {str(path)!r} matches its private key")
    return AppCertificate(key, matching[0], hashlib.sha256(data).hexdigest())


class AzureClientCredentialsAuthenticator(OAuthAuthenticator):
    """App-only tokens for every mailbox of one app registration."""

    name = "azure-client-credentials"
    default_scope = "https://outlook.office365.com/.default"

    def check(self) -> None:
        self.client_id = self.required("client-id", "the app registration's application id")
        self.endpoint = self.token_url()
        self.scope = self.text("scope") or self.default_scope
        self.user()  # the mailbox address is the SASL user
        certificate_file = self.text("client-certificate-file")
        has_secret = self.text("secret") is not None
        if certificate_file is not None and has_secret:
            raise self.config_error(
                "give either secret or client-certificate-file, not both", "secret"
            )
        self.certificate: AppCertificate | None = None
        if certificate_file is not None:
            try:
                self.certificate = load_certificate(Path(certificate_file))
            except ValueError as exc:
                raise self.config_error(str(exc), "client-certificate-file") from None
        elif has_secret:
            self.secret_section("secret")
        else:
            raise self.config_error(
                f"the {self.name} auth driver needs the app's credential: 'secret' (naming "
                "the secret-<name> section with the client secret) or 'client-certificate-file'",
                "secret",
            )

    def default_token_url(self) -> str:
        return self.azure_token_url()

    def cache_key(self) -> tuple[str, ...]:
        return (self.endpoint, self.client_id, self.scope)

    def grant_key(self) -> str:
        return f"{self.name} {self.endpoint} {self.client_id}"

    def client_key(self) -> str:
        return self.grant_key()

    def configured(self) -> str:
        return self.client_configured()

    def client_configured(self) -> str:
        # a new secret or certificate in the site file starts the app afresh
        if self.certificate is not None:
            return f"certificate {self.certificate.fingerprint}"
        return "secret " + self.secret_section("secret")

    def client_assertion(self) -> str:
        """A signed JWT proving the app holds its certificate's key."""
        assert self.certificate is not None
        now = int(self.now())
        claims = {
            "aud": self.endpoint,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": str(uuid.uuid4()),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        return jwt.encode(
            claims, self.certificate.key, algorithm="RS256",
            headers={"x5t": self.certificate.x5t},
        )

    async def request_token(self) -> Token:
        client = BackendApplicationClient(self.client_id)
        credential: dict[str, Any]
        if self.certificate is not None:
            credential = {
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": self.client_assertion(),
            }
        else:
            credential = {"client_secret": self.secret_section("secret")}
        body = client.prepare_request_body(scope=self.scope, include_client_id=True, **credential)
        token, _refresh = await self.exchange(client, body)
        return token

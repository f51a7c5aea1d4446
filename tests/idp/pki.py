"""Keys and certificates for the identity provider's tests, made with ``cryptography``.

A throw-away CA signs the IdP's HTTPS certificate (for 127.0.0.1 and localhost);
an Azure app's certificate (its key signs client assertions) and a Google
service-account key file (its key signs JWT-bearer assertions) are made the
same way, so no test needs openssl or a network.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.pki import TestCA, cert_name, key_pem, make_tls_files, new_key, utc_now

__all__ = ["TestCA", "make_tls_files"]  # the IdP's callers reach the CA through this module

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class AppCertificate:
    """An Azure app registration's certificate credential: the IdP keeps the
    certificate, the client signs its assertions with the key."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def thumbprint(self) -> str:
        """``x5t``: base64url of the certificate's SHA-1 hash, as Azure expects."""
        digest = self.certificate.fingerprint(hashes.SHA1())
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def make_app_certificate(common_name: str = "postroom test app") -> AppCertificate:
    key = new_key()
    name = cert_name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(utc_now() - _DAY)
        .not_valid_after(utc_now() + 365 * _DAY)
        .sign(key, hashes.SHA256())
    )
    return AppCertificate(key, cert)


@dataclass(frozen=True)
class ServiceAccountKey:
    """A Google service account's key, as the JSON key file Google hands out."""

    client_email: str
    client_id: str
    private_key_id: str
    key: rsa.RSAPrivateKey
    token_uri: str

    def as_json(self, project_id: str = "postroom-tests") -> str:
        return json.dumps(
            {
                "type": "service_account",
                "project_id": project_id,
                "private_key_id": self.private_key_id,
                "private_key": key_pem(self.key).decode(),
                "client_email": self.client_email,
                "client_id": self.client_id,
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": self.token_uri,
            },
            indent=2,
        )


def make_service_account_key(
    client_email: str, client_id: str, token_uri: str, private_key_id: str = "0" * 40
) -> ServiceAccountKey:
    return ServiceAccountKey(client_email, client_id, private_key_id, new_key(), token_uri)

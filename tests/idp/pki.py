"""Keys and certificates for the identity provider's tests, made with ``cryptography``.

A throw-away CA signs the IdP's HTTPS certificate (for 127.0.0.1 and localhost);
an Azure app's certificate (its key signs client assertions) and a Google
service-account key file (its key signs JWT-bearer assertions) are made the
same way, so no test needs openssl or a network.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

_DAY = datetime.timedelta(days=1)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "postroom tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class TestCA:
    """The CA and the HTTPS certificate it signed, as PEM files in *directory*."""

    __test__ = False  # not a pytest test class

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TestCA:
    """A new CA (its key is not kept) and a server certificate for *hosts*."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, server_key = new_key(), new_key()
    ca_name = _name("postroom test CA (identity provider)")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - _DAY)
        .not_valid_after(_now() + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - _DAY)
        .not_valid_after(_now() + 30 * _DAY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    found = TestCA(directory / "ca.pem", directory / "idp.pem", directory / "idp-key.pem")
    found.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    found.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    found.key_file.write_bytes(key_pem(server_key))
    found.key_file.chmod(0o600)
    return found


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
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - _DAY)
        .not_valid_after(_now() + 365 * _DAY)
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

"""The IdP's standard population: a tenant, users, app registrations, a Google
OAuth client and a service account, with the credentials tests hand to the
auth drivers. Names and secrets here are test fixtures, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.idp import authority as a
from tests.idp import pki
from tests.idp.server import IdentityProvider

TENANT = "5a0b8f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
OUTLOOK = "https://outlook.office.com/"
AZURE_USER_SCOPES = (
    OUTLOOK + "IMAP.AccessAsUser.All", OUTLOOK + "POP.AccessAsUser.All", OUTLOOK + "SMTP.Send",
)
#: the resource of Exchange Online app-only tokens
EXCHANGE_APP_SCOPE = "https://outlook.office365.com/.default"
#: the resource of Microsoft Graph app-only tokens (the graph source, issue 11)
GRAPH_APP_SCOPE = "https://graph.microsoft.com/.default"
GOOGLE_MAIL = "https://mail.google.com/"
GOOGLE_DOMAIN = "workspace.test"


@dataclass(frozen=True)
class World:
    """Who is registered, and the credentials a client needs."""

    tenant: str
    #: users and their passwords
    users: dict[str, str]
    #: Azure public client (ROPC without secret); its refresh tokens rotate
    public_app: str
    #: Azure confidential client (ROPC with secret)
    confidential_app: str
    confidential_secret: str
    #: Azure daemon app (client credentials with a secret or a certificate)
    daemon_app: str
    daemon_secret: str
    daemon_certificate: pki.AppCertificate
    #: Google OAuth client (refresh-token grant); its refresh tokens do not rotate
    google_client: str
    google_secret: str
    service_account: pki.ServiceAccountKey
    #: the resource server that may introspect (Dovecot's passdb)
    introspector: str
    introspector_secret: str

    def write_credentials(self, directory: Path, base_url: str) -> dict[str, Any]:
        """Write the key files a client needs into *directory*; return the rest
        (ids, secrets, file names) for a state file. Test fixtures only."""
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "daemon_certificate_file": ("daemon-app-cert.pem",
                                        self.daemon_certificate.certificate_pem),
            "daemon_key_file": ("daemon-app-key.pem", self.daemon_certificate.key_pem),
            "service_account_file": ("service-account.json",
                                     self.service_account_json(base_url + "/token").encode()),
        }
        found: dict[str, Any] = {}
        for name, (file_name, content) in files.items():
            path = directory / file_name
            path.write_bytes(content)
            path.chmod(0o600)
            found[name] = str(path)
        return found | {
            "tenant": self.tenant, "users": self.users,
            "azure_token_url": f"{base_url}/{self.tenant}/oauth2/v2.0/token",
            "google_token_url": f"{base_url}/token",
            "public_app": self.public_app, "confidential_app": self.confidential_app,
            "confidential_secret": self.confidential_secret, "daemon_app": self.daemon_app,
            "daemon_secret": self.daemon_secret,
            "daemon_thumbprint": self.daemon_certificate.thumbprint,
            "google_client": self.google_client, "google_secret": self.google_secret,
            "service_account": self.service_account.client_email,
            "introspector": self.introspector, "introspector_secret": self.introspector_secret,
        }

    def service_account_json(self, token_uri: str) -> str:
        """The service account's key file, pointing at *token_uri*."""
        key = self.service_account
        return pki.ServiceAccountKey(key.client_email, key.client_id, key.private_key_id,
                                     key.key, token_uri).as_json()


def populate(idp: IdentityProvider) -> World:
    """Register the standard population in *idp*."""
    auth = idp.authority
    users = {
        "alice@contoso.test": "alice-password-1",
        "bob@contoso.test": "bob-password-2",
        "carol@workspace.test": "carol-password-3",
        "dave@workspace.test": "dave-password-4",
    }
    for name, password in users.items():
        auth.add_user(name, password)
    public, confidential, daemon = "azure-public-app", "azure-confidential-app", "azure-daemon-app"
    for name in ("alice@contoso.test", "bob@contoso.test"):
        auth.users[name].consents |= {public, confidential}
    auth.add_client(a.Client(public, a.AZURE, tenant=TENANT, scopes=AZURE_USER_SCOPES,
                             rotate_refresh_tokens=True))
    auth.add_client(a.Client(confidential, a.AZURE, secret="confidential-app-secret",
                             tenant=TENANT, scopes=AZURE_USER_SCOPES))
    certificate = pki.make_app_certificate("azure-daemon-app")
    auth.add_client(a.Client(
        daemon, a.AZURE, secret="daemon-app-secret", tenant=TENANT,
        certificates={certificate.thumbprint: certificate.certificate.public_key()},  # type: ignore[dict-item]
        grants=frozenset({"client_credentials"}), scopes=(EXCHANGE_APP_SCOPE, GRAPH_APP_SCOPE),
        mailboxes=("alice@contoso.test", "bob@contoso.test"),
    ))
    google_client = "123456789012-postroom.apps.googleusercontent.test"
    auth.add_client(a.Client(google_client, a.GOOGLE, secret="google-client-secret",
                             grants=frozenset({"refresh_token"}), scopes=(GOOGLE_MAIL,)))
    key = pki.make_service_account_key(
        "postroom-sa@postroom-tests.iam.gserviceaccount.test", "100000000000000000001",
        "https://127.0.0.1/token", private_key_id="4f1d2c3b" * 5)
    auth.add_service_account(a.ServiceAccount(
        key.client_email, key.client_id, {key.private_key_id: key.key.public_key()},
        (GOOGLE_MAIL,), GOOGLE_DOMAIN))
    auth.add_client(a.Client("dovecot", a.AZURE, secret="dovecot-secret", grants=frozenset(),
                             may_introspect=True))
    return World(
        tenant=TENANT, users=users, public_app=public, confidential_app=confidential,
        confidential_secret="confidential-app-secret", daemon_app=daemon,
        daemon_secret="daemon-app-secret", daemon_certificate=certificate,
        google_client=google_client, google_secret="google-client-secret",
        service_account=key, introspector="dovecot", introspector_secret="dovecot-secret",
    )

"""The commercial product's switch: ``mail.<protocol>.auth.mechanisms: XOAUTH2`` with the
Azure or Google options selects the matching driver, and it gets a token."""

from __future__ import annotations

from postroom.testing import result_of
from postroom_azure_ropc import AzureROPCAuthenticator
from postroom_google_refresh import GoogleRefreshAuthenticator
from tests.idp.running import RunningIdP
from tests.idp.world import GOOGLE_MAIL
from tests.oauth.conftest import Kernels, site


def test_xoauth2_with_azure_options_is_azure_ropc(idp: RunningIdP, kernels: Kernels) -> None:
    box = {"name": "alice", "type": "imap", "server": "imap.example.test",
           "mailbox": "alice@contoso.test", "password": "alice-password-1",
           "mail.imap.auth.mechanisms": "XOAUTH2", "client-id": idp.world.public_app,
           "tenant-authority": idp.base_url + "/", "directory-id": idp.world.tenant,
           "token-ca-file": str(idp.tls.ca_file)}
    auth = kernels(site([box])).authenticator("alice")
    assert isinstance(auth, AzureROPCAuthenticator)
    assert result_of(auth.credentials("imap")).username == "alice@contoso.test"


def test_xoauth2_with_a_google_authority_is_google_refresh(
    idp: RunningIdP, kernels: Kernels
) -> None:
    refresh = idp.idp.issue_refresh_token(idp.world.google_client, "carol@workspace.test",
                                          GOOGLE_MAIL)
    box = {"name": "carol", "type": "imap", "server": "imap.example.test",
           "mailbox": "carol@workspace.test", "password": refresh,
           "mail.imap.auth.mechanisms": "XOAUTH2", "client-id": idp.world.google_client,
           "tenant-authority": "https://accounts.google.com/", "secret": "google",
           "token-endpoint": idp.google_token_url, "token-ca-file": str(idp.tls.ca_file)}
    config = site([box], secrets={"google": idp.world.google_secret},
                  gateway={"token-encryption-secret": "a-site-key-of-sixteen-bytes"})
    auth = kernels(config).authenticator("carol")
    assert isinstance(auth, GoogleRefreshAuthenticator)
    assert result_of(auth.credentials("imap")).secret.startswith("ya29.")

"""``azure-ropc``: the password grant against the local IdP's Azure endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from zope.interface.verify import verifyObject

from postroom.api import (
    BEARER,
    ConfigError,
    Credentials,
    GrantState,
    IAuthenticator,
    IdentityProviderUnavailable,
    NeedsReauthorisation,
)
from postroom.testing import TestKernel, result_of
from postroom_azure_ropc import AzureROPCAuthenticator
from tests.idp.running import RunningIdP
from tests.oauth.conftest import (
    Kernels,
    assert_no_secret,
    http_of,
    log_text,
    mailbox,
    site,
)

ALICE, BOB = "alice@contoso.test", "bob@contoso.test"
ALICE_PASSWORD, BOB_PASSWORD = "alice-password-1", "bob-password-2"
SCOPE = "https://outlook.office.com/.default"


def ropc_box(idp: RunningIdP, name: str = "alice", user: str = ALICE,
             password: str = ALICE_PASSWORD, **options: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "password": password, "client_id": idp.world.public_app,
        "token_endpoint": idp.azure_token_url(), "token_ca_file": str(idp.tls.ca_file),
    }
    values.update(options)
    return mailbox(name, user, "azure-ropc", **values)


def token_of(kernel: TestKernel, name: str = "alice") -> Credentials:
    creds: Credentials = result_of(kernel.authenticator(name).credentials("imap"))
    return creds


def state_of(kernel: TestKernel, auth: Any, key: str | None = None) -> str | None:
    record = result_of(kernel.kernel.oauth.vault.state(key or auth.grant_key()))
    return None if record is None else str(record.state)


def test_a_token_for_the_mailbox_user(idp: RunningIdP, kernels: Kernels) -> None:
    kernel = kernels(site([ropc_box(idp)]))
    auth = kernel.authenticator("alice")
    assert isinstance(auth, AzureROPCAuthenticator)
    verifyObject(IAuthenticator, auth)
    creds = result_of(auth.credentials("imap"))
    assert creds.username == ALICE and creds.mechanism == BEARER
    claims = jwt.decode(creds.secret, idp.idp.signing_key.public_key(), algorithms=["RS256"],
                        audience="https://outlook.office.com")
    assert claims["upn"] == ALICE and "IMAP.AccessAsUser.All" in claims["scp"].split()
    [sent] = http_of(kernel).sent
    assert sent.url == idp.azure_token_url() and sent.ca_file == str(idp.tls.ca_file)
    assert sent.fields == {"grant_type": "password", "username": ALICE,
                           "password": ALICE_PASSWORD, "scope": SCOPE,
                           "client_id": idp.world.public_app}  # a public client: no secret
    assert idp.idp.request_count("azure-token:password") == 1


def test_the_endpoint_from_tenant_authority_and_directory_id(
    idp: RunningIdP, kernels: Kernels
) -> None:
    box = ropc_box(idp, token_endpoint=None, tenant_authority=idp.base_url + "/",
                   directory_id=idp.world.tenant)
    del box["token-endpoint"]
    kernel = kernels(site([box]))
    assert token_of(kernel).username == ALICE
    assert [s.url for s in http_of(kernel).sent] == [idp.azure_token_url()]
    default = ropc_box(idp, directory_id="contoso.onmicrosoft.com")
    del default["token-endpoint"]
    auth = kernels(site([default])).authenticator("alice")
    assert auth.endpoint == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )


def test_a_confidential_client_sends_its_secret(idp: RunningIdP, kernels: Kernels) -> None:
    box = ropc_box(idp, client_id=idp.world.confidential_app, secret="azure")
    kernel = kernels(site([box], secrets={"azure": idp.world.confidential_secret}))
    assert token_of(kernel).username == ALICE
    [sent] = http_of(kernel).sent
    assert sent.fields["client_secret"] == idp.world.confidential_secret
    assert sent.fields["client_id"] == idp.world.confidential_app


def test_smtp_client_uses_its_user(idp: RunningIdP, kernels: Kernels) -> None:
    smtp = {"server-type": "smtp", "server": "smtp.example.test", "enable-authentication": True,
            "user": BOB, "password": BOB_PASSWORD, "auth": "azure-ropc",
            "client-id": idp.world.public_app, "token-endpoint": idp.azure_token_url(),
            "token-ca-file": str(idp.tls.ca_file)}
    kernel = kernels(site(smtp=smtp))
    creds = result_of(kernel.authenticator("smtp-client").credentials("smtp"))
    assert creds.username == BOB
    assert http_of(kernel).sent[0].fields["username"] == BOB


def test_cached_reused_refreshed_after_the_margin_and_invalidated(
    idp: RunningIdP, kernels: Kernels
) -> None:
    kernel = kernels(site([ropc_box(idp, token_expiry_margin_time="00:05:00")]))
    auth = kernel.authenticator("alice")
    first = result_of(auth.credentials("imap")).secret
    # another driver of the same mailbox (a reconnect) shares the cached token
    assert token_of(kernel).secret == first
    kernels.advance(3600 - 300 - 1)
    assert result_of(auth.credentials("pop3")).secret == first
    assert http_of(kernel).requests == 1
    kernels.advance(2)  # inside the margin: refreshed before it expires
    second = result_of(auth.credentials("imap")).secret
    assert second != first and http_of(kernel).requests == 2
    auth.invalidate()  # the server refused it
    third = result_of(auth.credentials("imap")).secret
    assert third not in (first, second)
    assert idp.idp.request_count("azure-token:password") == 3


def test_mfa_required_marks_that_mailbox_only_and_survives_a_restart(
    idp: RunningIdP, kernels: Kernels, tmp_path: Path, all_logs: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "postroom.db"
    config = site([ropc_box(idp), ropc_box(idp, "bob", BOB, BOB_PASSWORD)])
    kernel = kernels(config, store=store)
    idp.idp.set_mfa_required(ALICE)
    auth = kernel.authenticator("alice")
    with pytest.raises(NeedsReauthorisation) as info:
        result_of(auth.credentials("imap"))
    assert "AADSTS50076" in str(info.value) and "mailbox 'alice'" in str(info.value)
    assert state_of(kernel, auth) == GrantState.NEEDS_REAUTHORISATION.value
    assert token_of(kernel, "bob").username == BOB  # the other mailbox keeps flowing
    kernel.close()
    before = idp.idp.request_count("azure-token")
    again = kernels(config, store=store)
    with pytest.raises(NeedsReauthorisation, match="AADSTS50076"):
        token_of(again)
    assert idp.idp.request_count("azure-token") == before  # no request for a refused grant
    assert_no_secret([ALICE_PASSWORD, BOB_PASSWORD], str(info.value), log_text(all_logs))


def test_missing_consent_needs_reauthorisation(idp: RunningIdP, kernels: Kernels) -> None:
    kernel = kernels(site([ropc_box(idp)]))
    idp.idp.set_consent(ALICE, idp.world.public_app, False)
    with pytest.raises(NeedsReauthorisation, match="AADSTS65001"):
        token_of(kernel)


def test_a_new_password_in_the_file_starts_afresh(
    idp: RunningIdP, kernels: Kernels, tmp_path: Path
) -> None:
    store = tmp_path / "postroom.db"
    wrong = site([ropc_box(idp, password="not-the-password")])
    with pytest.raises(NeedsReauthorisation, match="AADSTS50126"):
        token_of(kernels(wrong, store=store))
    with pytest.raises(NeedsReauthorisation):
        token_of(kernels(wrong, store=store))
    assert idp.idp.request_count("azure-token") == 1
    fixed = kernels(site([ropc_box(idp)]), store=store)
    assert token_of(fixed).username == ALICE
    assert state_of(fixed, fixed.authenticator("alice")) == GrantState.OK.value


def test_an_expired_client_secret_stops_every_mailbox_of_the_app_said_once(
    idp: RunningIdP, kernels: Kernels, all_logs: pytest.LogCaptureFixture
) -> None:
    secret = idp.world.confidential_secret
    boxes = [ropc_box(idp, n, u, p, client_id=idp.world.confidential_app, secret="azure")
             for n, u, p in (("alice", ALICE, ALICE_PASSWORD), ("bob", BOB, BOB_PASSWORD))]
    kernel = kernels(site(boxes, secrets={"azure": secret}))
    idp.idp.expire_secret(idp.world.confidential_app)
    errors = []
    for name in ("alice", "bob", "alice"):
        with pytest.raises(NeedsReauthorisation, match="AADSTS7000222") as info:
            token_of(kernel, name)
        errors.append(str(info.value))
    assert idp.idp.request_count("azure-token") == 1  # bob's login asked nobody
    reports = [r for r in all_logs.records if "AADSTS7000222" in r.getMessage()]
    assert len(reports) == 1 and reports[0].levelname == "ERROR"
    assert_no_secret([secret, ALICE_PASSWORD, BOB_PASSWORD], *errors, log_text(all_logs))


def test_an_outage_is_temporary_and_recovers(idp: RunningIdP, kernels: Kernels) -> None:
    kernel = kernels(site([ropc_box(idp)]))
    auth = kernel.authenticator("alice")
    idp.idp.start_outage(503)
    with pytest.raises(IdentityProviderUnavailable, match="HTTP 503"):
        result_of(auth.credentials("imap"))
    assert state_of(kernel, auth) is None  # nothing persisted: it is temporary
    idp.idp.end_outage()
    assert result_of(auth.credentials("imap")).username == ALICE


def test_a_hanging_identity_provider_meets_the_deadline(
    idp: RunningIdP, kernels: Kernels
) -> None:
    kernel = kernels(site([ropc_box(idp)]), timeout=0.5)
    idp.idp.start_outage(hang=True)
    with pytest.raises(IdentityProviderUnavailable, match=r"no answer within 0\.5 s"):
        token_of(kernel)
    idp.idp.end_outage()
    idp.idp.release()
    assert token_of(kernel).username == ALICE


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"client_id": None}, "client-id"),
        ({"token_endpoint": None}, "directory-id"),
        ({"password": None}, "password"),
        ({"secret": "nowhere"}, "secret"),
    ],
)
def test_missing_options_are_config_errors(
    idp: RunningIdP, kernels: Kernels, change: dict[str, Any], option: str
) -> None:
    box = ropc_box(idp, **{k: v for k, v in change.items() if v is not None})
    for name in (k.replace("_", "-") for k, v in change.items() if v is None):
        del box[name]
    kernel = kernels(site([box]))
    with pytest.raises(ConfigError) as info:
        kernel.authenticator("alice")
    assert info.value.option == f"pop-client[alice].{option}"
    assert "site.yaml" in str(info.value) and ALICE_PASSWORD not in str(info.value)

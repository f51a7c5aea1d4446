"""``google-service-account``: the JWT bearer grant with domain-wide delegation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest

from postroom.api import (
    BEARER,
    ConfigError,
    Credentials,
    IdentityProviderUnavailable,
    NeedsReauthorisation,
)
from postroom.testing import TestKernel, result_of
from postroom_google_service_account import GoogleServiceAccountAuthenticator
from tests.idp.running import RunningIdP
from tests.idp.world import GOOGLE_MAIL
from tests.oauth.conftest import (
    Kernels,
    assert_no_secret,
    http_of,
    log_text,
    mailbox,
    site,
)

CAROL, DAVE = "carol@workspace.test", "dave@workspace.test"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture
def key_file(idp: RunningIdP, tmp_path: Path) -> Path:
    """The service account's JSON key file, its token_uri the IdP's Google endpoint."""
    path = tmp_path / "service-account.json"
    path.write_text(idp.world.service_account_json(idp.google_token_url))
    return path


def account_box(idp: RunningIdP, key_file: Path, name: str = "carol", user: str = CAROL,
                **options: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"service_account_file": str(key_file),
                              "token_ca_file": str(idp.tls.ca_file)}
    values.update(options)
    return mailbox(name, user, "google-service-account", **values)


def token_of(kernel: TestKernel, name: str = "carol") -> Credentials:
    creds: Credentials = result_of(kernel.authenticator(name).credentials("imap"))
    return creds


def subject_of(idp: RunningIdP, token: str) -> str | None:
    live = idp.idp.authority.live_access_token(token)
    return None if live is None else live.grant.user


def test_a_token_for_the_mailbox_as_subject(
    idp: RunningIdP, kernels: Kernels, key_file: Path
) -> None:
    kernel = kernels(site([account_box(idp, key_file)]))
    auth = kernel.authenticator("carol")
    assert isinstance(auth, GoogleServiceAccountAuthenticator)
    assert auth.endpoint == idp.google_token_url  # the key file's token_uri
    creds = result_of(auth.credentials("imap"))
    assert creds.username == CAROL and creds.mechanism == BEARER
    assert subject_of(idp, creds.secret) == CAROL
    [sent] = http_of(kernel).sent
    assert set(sent.fields) == {"grant_type", "assertion"}  # no client id, no secret
    assert sent.fields["grant_type"] == JWT_BEARER
    assertion = sent.fields["assertion"]
    account = idp.world.service_account
    assert jwt.get_unverified_header(assertion) == {
        "alg": "RS256", "typ": "JWT", "kid": account.private_key_id}
    claims = jwt.decode(assertion, account.key.public_key(), algorithms=["RS256"],
                        audience=idp.google_token_url)
    assert claims["iss"] == account.client_email and claims["sub"] == CAROL
    assert claims["scope"] == GOOGLE_MAIL and claims["exp"] - claims["iat"] == 3600
    assert idp.idp.request_count(f"google-token:{JWT_BEARER}") == 1


def test_token_endpoint_overrides_the_key_file(idp: RunningIdP, kernels: Kernels,
                                               key_file: Path) -> None:
    box = account_box(idp, key_file, token_endpoint="https://oauth2.example.test/token")
    assert kernels(site([box])).authenticator("carol").endpoint == (
        "https://oauth2.example.test/token"
    )


def test_one_token_per_subject_cached_refreshed_and_invalidated(
    idp: RunningIdP, kernels: Kernels, key_file: Path
) -> None:
    kernel = kernels(site([account_box(idp, key_file),
                           account_box(idp, key_file, "dave", DAVE)]))
    carol, dave = kernel.authenticator("carol"), kernel.authenticator("dave")
    first = result_of(carol.credentials("imap")).secret
    other = result_of(dave.credentials("smtp")).secret
    assert subject_of(idp, other) == DAVE and other != first
    assert token_of(kernel).secret == first
    assert idp.idp.request_count("google-token") == 2
    kernels.advance(3600 - 300 + 1)  # a new assertion on the moved clocks
    second = result_of(carol.credentials("imap")).secret
    assert second != first and subject_of(idp, second) == CAROL
    carol.invalidate()
    assert result_of(carol.credentials("imap")).secret not in (first, second)
    assert idp.idp.request_count("google-token") == 4


def test_delegation_refused_needs_reauthorisation(
    idp: RunningIdP, kernels: Kernels, key_file: Path
) -> None:
    kernel = kernels(site([account_box(idp, key_file, "outsider", "alice@contoso.test")]))
    with pytest.raises(NeedsReauthorisation, match="unauthorized_client") as info:
        token_of(kernel, "outsider")
    assert idp.world.service_account.client_email in str(info.value)


def test_an_outage_is_temporary(idp: RunningIdP, kernels: Kernels, key_file: Path) -> None:
    kernel = kernels(site([account_box(idp, key_file)]), timeout=0.5)
    idp.idp.start_outage(hang=True)
    with pytest.raises(IdentityProviderUnavailable, match="no answer"):
        token_of(kernel)
    idp.idp.start_outage(503)
    idp.idp.release()
    with pytest.raises(IdentityProviderUnavailable, match="HTTP 503"):
        token_of(kernel)
    idp.idp.end_outage()
    assert token_of(kernel).username == CAROL


def test_no_secret_in_logs_errors_or_reprs(
    idp: RunningIdP, kernels: Kernels, key_file: Path, all_logs: pytest.LogCaptureFixture
) -> None:
    kernel = kernels(site([account_box(idp, key_file)]))
    auth = kernel.authenticator("carol")
    creds = result_of(auth.credentials("imap"))
    assertion = http_of(kernel).sent[0].fields["assertion"]
    auth.invalidate()
    idp.idp.start_outage(503)
    with pytest.raises(IdentityProviderUnavailable) as info:
        result_of(auth.credentials("imap"))
    private_key = json.loads(key_file.read_text())["private_key"]
    assert_no_secret(
        [creds.secret, assertion, private_key.splitlines()[1]],
        str(info.value), repr(auth), repr(auth.account), repr(http_of(kernel).sent),
        log_text(all_logs),
    )


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot read"),
        ("not json", "not a JSON key file"),
        ({"type": "authorized_user"}, "not a service account key"),
        ({"type": "service_account", "client_email": "x@y", "private_key_id": "k"},
         "has no private_key"),
        ({"type": "service_account", "client_email": "x@y", "private_key_id": "k",
          "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"},
         "not a PEM private key"),
    ],
)
def test_a_bad_key_file_is_a_configuration_error(
    idp: RunningIdP, kernels: Kernels, tmp_path: Path, content: Any, words: str
) -> None:
    path = tmp_path / "key.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    kernel = kernels(site([account_box(idp, path)]))
    with pytest.raises(ConfigError, match=words) as info:
        kernel.authenticator("carol")
    assert info.value.option == "pop-client[carol].service-account-file"


def test_the_key_file_is_required(idp: RunningIdP, kernels: Kernels, key_file: Path) -> None:
    box = account_box(idp, key_file)
    del box["service-account-file"]
    with pytest.raises(ConfigError, match="service-account-file") as info:
        kernels(site([box])).authenticator("carol")
    assert info.value.option == "pop-client[carol].service-account-file"

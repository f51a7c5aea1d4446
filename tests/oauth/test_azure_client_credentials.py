"""``azure-client-credentials``: app-only tokens, with a secret or a certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from twisted.internet.defer import Deferred

from postroom.api import (
    BEARER,
    ConfigError,
    Credentials,
    IdentityProviderUnavailable,
    NeedsReauthorisation,
)
from postroom.testing import TestKernel, result_of
from postroom_azure_client_credentials import AzureClientCredentialsAuthenticator
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
SCOPE = "https://outlook.office365.com/.default"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def app_box(idp: RunningIdP, name: str = "alice", user: str = ALICE,
            **options: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "client_id": idp.world.daemon_app, "token_endpoint": idp.azure_token_url(),
        "token_ca_file": str(idp.tls.ca_file),
    }
    values.update(options)
    return mailbox(name, user, "azure-client-credentials", **values)


def with_secret(idp: RunningIdP, boxes: list[dict[str, Any]]) -> str:
    for box in boxes:
        box["secret"] = "daemon"
    return site(boxes, secrets={"daemon": idp.world.daemon_secret})


@pytest.fixture
def certificate_file(idp: RunningIdP, tmp_path: Path) -> Path:
    """The app's certificate and key in one PEM file, as Azure's docs show it."""
    path = tmp_path / "daemon-app.pem"
    cert = idp.world.daemon_certificate
    path.write_bytes(cert.key_pem + cert.certificate_pem)
    return path


def token_of(kernel: TestKernel, name: str = "alice") -> Credentials:
    creds: Credentials = result_of(kernel.authenticator(name).credentials("imap"))
    return creds


def app_claims(idp: RunningIdP, token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, idp.idp.signing_key.public_key(), algorithms=["RS256"],
        audience="https://outlook.office365.com")
    return claims


def test_a_client_secret_gets_an_app_token_for_the_mailbox(
    idp: RunningIdP, kernels: Kernels
) -> None:
    kernel = kernels(with_secret(idp, [app_box(idp)]))
    auth = kernel.authenticator("alice")
    assert isinstance(auth, AzureClientCredentialsAuthenticator)
    creds = result_of(auth.credentials("imap"))
    assert creds.username == ALICE and creds.mechanism == BEARER
    assert "IMAP.AccessAsApp" in app_claims(idp, creds.secret)["roles"]
    [sent] = http_of(kernel).sent
    assert sent.fields == {"grant_type": "client_credentials", "scope": SCOPE,
                           "client_id": idp.world.daemon_app,
                           "client_secret": idp.world.daemon_secret}


def test_a_certificate_signs_a_client_assertion(
    idp: RunningIdP, kernels: Kernels, certificate_file: Path
) -> None:
    kernel = kernels(site([app_box(idp, client_certificate_file=str(certificate_file))]))
    creds = token_of(kernel)
    assert creds.username == ALICE and "roles" in app_claims(idp, creds.secret)
    [sent] = http_of(kernel).sent
    fields = dict(sent.fields)
    assertion = fields.pop("client_assertion")
    assert fields == {"grant_type": "client_credentials", "scope": SCOPE,
                      "client_id": idp.world.daemon_app,
                      "client_assertion_type": ASSERTION_TYPE}  # no client secret
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == "RS256" and header["x5t"] == idp.world.daemon_certificate.thumbprint
    public_key = idp.world.daemon_certificate.certificate.public_key()
    claims = jwt.decode(assertion, public_key, algorithms=["RS256"],  # type: ignore[arg-type]
                        audience=idp.azure_token_url())
    assert claims["iss"] == claims["sub"] == idp.world.daemon_app
    assert claims["nbf"] == claims["iat"] and claims["exp"] - claims["iat"] == 300
    assert abs(claims["iat"] - kernels.clock.seconds()) < 1 and claims["jti"]


def test_a_hundred_mailboxes_of_one_app_make_one_request_per_expiry(
    idp: RunningIdP, kernels: Kernels, certificate_file: Path
) -> None:
    users = [f"agent{i:03}@contoso.test" for i in range(100)]
    boxes = [app_box(idp, f"m{i}", user, client_certificate_file=str(certificate_file))
             for i, user in enumerate(users)]
    kernel = kernels(site(boxes))
    auths = [kernel.authenticator(f"m{i}") for i in range(100)]
    http = http_of(kernel)

    def log_in_all() -> list[Credentials]:
        with http.hold():
            waiting: list[Deferred[Credentials]] = [a.credentials("imap") for a in auths]
            assert not any(d.called for d in waiting)  # all wait for the one request
        return [result_of(d) for d in waiting]

    first = log_in_all()
    assert [c.username for c in first] == users
    assert len({c.secret for c in first}) == 1
    assert idp.idp.request_count("azure-token:client_credentials") == 1
    kernels.advance(3600 - 300 + 1)  # within the margin of expiry
    second = log_in_all()
    assert len({c.secret for c in second}) == 1 and second[0].secret != first[0].secret
    assert idp.idp.request_count("azure-token:client_credentials") == 2
    assert http.requests == 2


def test_cached_until_the_margin_and_invalidated(
    idp: RunningIdP, kernels: Kernels, certificate_file: Path
) -> None:
    kernel = kernels(site([app_box(idp, client_certificate_file=str(certificate_file),
                                   token_expiry_margin_time=600)]))
    auth = kernel.authenticator("alice")
    first = result_of(auth.credentials("smtp")).secret
    kernels.advance(3600 - 600 - 1)
    assert result_of(auth.credentials("smtp")).secret == first
    kernels.advance(2)
    second = result_of(auth.credentials("smtp")).secret
    assert second != first
    auth.invalidate()
    assert result_of(auth.credentials("smtp")).secret not in (first, second)
    assert idp.idp.request_count("azure-token") == 3


def test_an_expired_secret_stops_every_mailbox_of_the_app_until_the_credential_changes(
    idp: RunningIdP, kernels: Kernels, tmp_path: Path, certificate_file: Path,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    store = tmp_path / "postroom.db"
    config = with_secret(idp, [app_box(idp), app_box(idp, "bob", BOB)])
    kernel = kernels(config, store=store)
    idp.idp.expire_secret(idp.world.daemon_app)
    errors = []
    for name in ("alice", "bob"):
        with pytest.raises(NeedsReauthorisation, match="AADSTS7000222") as info:
            token_of(kernel, name)
        errors.append(str(info.value))
    assert idp.idp.request_count("azure-token") == 1
    reports = [r for r in all_logs.records if "AADSTS7000222" in r.getMessage()]
    assert len(reports) == 1 and reports[0].levelname == "ERROR"
    kernel.close()
    restarted = kernels(config, store=store)
    with pytest.raises(NeedsReauthorisation):
        token_of(restarted, "bob")
    assert idp.idp.request_count("azure-token") == 1  # refused again without asking
    # the administrator switches the app to its certificate: it works again
    fixed = kernels(site([app_box(idp, client_certificate_file=str(certificate_file)),
                          app_box(idp, "bob", BOB, client_certificate_file=str(certificate_file))]),
                    store=store)
    assert token_of(fixed, "bob").username == BOB
    assert_no_secret([idp.world.daemon_secret], *errors, log_text(all_logs))


def test_an_outage_is_temporary(idp: RunningIdP, kernels: Kernels) -> None:
    kernel = kernels(with_secret(idp, [app_box(idp)]), timeout=0.5)
    idp.idp.start_outage(502)
    with pytest.raises(IdentityProviderUnavailable, match="HTTP 502"):
        token_of(kernel)
    idp.idp.start_outage(hang=True)
    with pytest.raises(IdentityProviderUnavailable, match="no answer"):
        token_of(kernel)
    idp.idp.end_outage()
    idp.idp.release()
    assert token_of(kernel).username == ALICE


def test_no_secret_in_logs_errors_or_reprs(
    idp: RunningIdP, kernels: Kernels, certificate_file: Path,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    kernel = kernels(site([app_box(idp, client_certificate_file=str(certificate_file))]))
    auth = kernel.authenticator("alice")
    creds = result_of(auth.credentials("imap"))
    assertion = http_of(kernel).sent[0].fields["client_assertion"]
    idp.idp.start_outage(503)
    auth.invalidate()
    with pytest.raises(IdentityProviderUnavailable) as info:
        result_of(auth.credentials("imap"))
    key_body = idp.world.daemon_certificate.key_pem.decode().splitlines()[1]
    assert_no_secret(
        [creds.secret, assertion, key_body],
        str(info.value), repr(auth), repr(auth.certificate), repr(creds),
        repr(http_of(kernel)), repr(http_of(kernel).sent), log_text(all_logs),
    )


@pytest.mark.parametrize(
    ("options", "option", "words"),
    [
        ({}, "secret", "'secret'"),
        ({"secret": "daemon", "client_certificate_file": "CERT"}, "secret", "not both"),
        ({"client_certificate_file": "/nonexistent.pem"}, "client-certificate-file",
         "cannot read"),
        ({"client_certificate_file": "CA"}, "client-certificate-file", "no unencrypted PEM"),
        ({"client_id": None, "secret": "daemon"}, "client-id", "client-id"),
        ({"token_endpoint": None, "secret": "daemon"}, "directory-id", "directory-id"),
    ],
)
def test_configuration_errors(
    idp: RunningIdP, kernels: Kernels, certificate_file: Path,
    options: dict[str, Any], option: str, words: str,
) -> None:
    files = {"CERT": str(certificate_file), "CA": str(idp.tls.ca_file)}
    values = {k: files.get(v, v) for k, v in options.items() if v is not None}
    box = app_box(idp, **values)
    for name in (k.replace("_", "-") for k, v in options.items() if v is None):
        del box[name]
    kernel = kernels(site([box], secrets={"daemon": idp.world.daemon_secret}))
    with pytest.raises(ConfigError, match=words) as info:
        kernel.authenticator("alice")
    assert info.value.option == f"pop-client[alice].{option}"

"""The local identity provider over real HTTPS on 127.0.0.1, the client
checking the certificate against the test CA: each grant succeeds and fails as
the provider it imitates would, the controls work, and no secret is logged.
"""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from zope.interface import provider

from tests.idp import pki
from tests.idp.running import RunningIdP
from tests.idp.validator import CLIENT_ASSERTION_TYPE, JWT_BEARER
from tests.idp.world import AZURE_USER_SCOPES, EXCHANGE_APP_SCOPE, GOOGLE_MAIL

OUTLOOK_DEFAULT = "https://outlook.office.com/.default"
ALICE, ALICE_PASSWORD = "alice@contoso.test", "alice-password-1"
CAROL = "carol@workspace.test"

Answer = tuple[int, dict[str, Any]]


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[RunningIdP]:
    with RunningIdP(tmp_path / "idp") as running:
        yield running


def call(idp: RunningIdP, url: str, form: dict[str, str] | None = None,
         headers: dict[str, str] | None = None, method: str | None = None) -> Answer:
    """One request, the IdP's certificate verified; (status, JSON body)."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data, headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, context=idp.ssl_context(), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def ropc(idp: RunningIdP, user: str = ALICE, password: str = ALICE_PASSWORD,
         scope: str = OUTLOOK_DEFAULT + " offline_access", **extra: str) -> Answer:
    form = {"grant_type": "password", "client_id": idp.world.public_app, "username": user,
            "password": password, "scope": scope, **extra}
    return call(idp, idp.azure_token_url(), form)


def refresh_azure(idp: RunningIdP, token: str) -> Answer:
    return call(idp, idp.azure_token_url(), {
        "grant_type": "refresh_token", "client_id": idp.world.public_app, "refresh_token": token,
        "scope": OUTLOOK_DEFAULT + " offline_access"})


def introspect(idp: RunningIdP, token: str) -> Answer:
    return call(idp, idp.base_url + "/introspect", {
        "token": token, "client_id": idp.world.introspector,
        "client_secret": idp.world.introspector_secret})


def aadsts(answer: Answer) -> tuple[int, str, int]:
    """(status, error, AADSTS code) of an Azure error, its shape checked."""
    status, body = answer
    code = body["error_codes"][0]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= body.keys()
    return status, body["error"], code


def client_assertion(idp: RunningIdP, key: rsa.RSAPrivateKey | None = None,
                     x5t: str | None = None, **claims: Any) -> str:
    """An Azure client assertion (RFC 7523 section 2.2) for the daemon app."""
    certificate = idp.world.daemon_certificate
    now = int(idp.idp.authority.clock.now())
    body = {"aud": idp.azure_token_url(), "iss": idp.world.daemon_app,
            "sub": idp.world.daemon_app, "jti": "a-unique-id", "nbf": now, "exp": now + 600,
            **claims}
    return jwt.encode(body, key or certificate.key, algorithm="RS256",
                      headers={"x5t": x5t or certificate.thumbprint})


def client_credentials(idp: RunningIdP, scope: str = EXCHANGE_APP_SCOPE, **auth: str) -> Answer:
    form = {"grant_type": "client_credentials", "client_id": idp.world.daemon_app,
            "scope": scope, **auth}
    return call(idp, idp.azure_token_url(), form)


def with_assertion(assertion: str) -> dict[str, str]:
    return {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}


def service_jwt(idp: RunningIdP, key: rsa.RSAPrivateKey | None = None,
                kid: str | None = None, **claims: Any) -> str:
    """A Google service account's JWT-bearer assertion for carol."""
    account = idp.world.service_account
    now = int(idp.idp.authority.clock.now())
    body = {"iss": account.client_email, "scope": GOOGLE_MAIL, "aud": idp.google_token_url,
            "iat": now, "exp": now + 3600, "sub": CAROL, **claims}
    return jwt.encode(body, key or account.key, algorithm="RS256",
                      headers={"kid": kid or account.private_key_id})


def jwt_bearer(idp: RunningIdP, assertion: str) -> Answer:
    return call(idp, idp.google_token_url, {"grant_type": JWT_BEARER, "assertion": assertion})


def google_refresh(idp: RunningIdP, token: str, secret: str | None = None) -> Answer:
    return call(idp, idp.google_token_url, {
        "grant_type": "refresh_token", "client_id": idp.world.google_client,
        "client_secret": secret or idp.world.google_secret, "refresh_token": token})


# -- HTTPS ------------------------------------------------------------------


def test_the_certificate_is_from_the_test_ca_only(idp: RunningIdP) -> None:
    with pytest.raises(urllib.error.URLError) as raised:
        urllib.request.urlopen(idp.base_url + "/tokeninfo?access_token=x",
                               context=ssl.create_default_context(), timeout=30)
    assert isinstance(raised.value.reason, ssl.SSLCertVerificationError)
    assert call(idp, idp.base_url + "/tokeninfo?access_token=x")[0] == 400


# -- password grant (Azure ROPC) --------------------------------------------


def test_ropc_public_client_gets_a_signed_jwt_and_a_refresh_token(idp: RunningIdP) -> None:
    idp.idp.set_access_ttl(60)
    status, body = ropc(idp)
    assert status == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] == 60
    assert body["scope"].split() == [*AZURE_USER_SCOPES, "offline_access"]
    claims = jwt.decode(body["access_token"], idp.idp.signing_key.public_key(),
                        algorithms=["RS256"], audience="https://outlook.office.com")
    assert claims["upn"] == ALICE and claims["tid"] == idp.world.tenant
    assert "IMAP.AccessAsUser.All" in claims["scp"].split()
    assert claims["exp"] - claims["iat"] == 60
    assert 1000 < len(body["access_token"]) < 3000  # the size of Azure's tokens
    assert body["refresh_token"]


def test_ropc_without_offline_access_gives_no_refresh_token(idp: RunningIdP) -> None:
    status, body = ropc(idp, scope=OUTLOOK_DEFAULT)
    assert status == 200 and "refresh_token" not in body


def test_ropc_confidential_client_needs_its_valid_secret(idp: RunningIdP) -> None:
    world = idp.world

    def confidential(**secret: str) -> Answer:
        return ropc(idp, client_id=world.confidential_app, **secret)

    assert confidential(client_secret=world.confidential_secret)[0] == 200
    assert aadsts(confidential(client_secret="wrong")) == (401, "invalid_client", 7000215)
    assert aadsts(confidential()) == (401, "invalid_client", 7000218)
    idp.idp.expire_secret(world.confidential_app)
    assert aadsts(confidential(client_secret=world.confidential_secret)) == (
        401, "invalid_client", 7000222)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"password": "wrong"}, (400, "invalid_grant", 50126)),
        ({"user": "nobody@contoso.test"}, (400, "invalid_grant", 50034)),
        ({"client_id": "no-such-app"}, (400, "unauthorized_client", 700016)),
        ({"scope": "https://outlook.office.com/Mail.ReadWrite"}, (400, "invalid_grant", 65001)),
        ({"scope": ""}, (400, "invalid_scope", 70011)),
        ({"grant_type": "implicit"}, (400, "unsupported_grant_type", 70003)),
        ({"client_secret": "a-public-client-has-none"}, (401, "invalid_client", 700025)),
    ],
)
def test_ropc_refusals_carry_azure_codes(
    idp: RunningIdP, change: dict[str, str], expected: tuple[int, str, int]
) -> None:
    assert aadsts(ropc(idp, **change)) == expected


def test_ropc_refusals_for_mfa_missing_consent_and_an_unknown_tenant(idp: RunningIdP) -> None:
    idp.idp.set_mfa_required(ALICE)
    assert aadsts(ropc(idp)) == (400, "invalid_grant", 50076)
    idp.idp.set_mfa_required(ALICE, False)
    idp.idp.set_consent(ALICE, idp.world.public_app, False)
    assert aadsts(ropc(idp)) == (400, "invalid_grant", 65001)
    idp.idp.set_consent(ALICE, idp.world.public_app, True)
    form = {"grant_type": "password", "client_id": idp.world.public_app, "username": ALICE,
            "password": ALICE_PASSWORD, "scope": OUTLOOK_DEFAULT}
    assert aadsts(call(idp, idp.azure_token_url("other-tenant"), form)) == (
        400, "invalid_request", 90002)
    assert ropc(idp)[0] == 200


# -- refresh_token grant -------------------------------------------------------


def test_rotating_refresh_tokens_kill_the_used_one(idp: RunningIdP) -> None:
    first = ropc(idp)[1]["refresh_token"]
    status, body = refresh_azure(idp, first)
    assert status == 200
    second = body["refresh_token"]
    assert second != first
    assert aadsts(refresh_azure(idp, first)) == (400, "invalid_grant", 70008)
    assert refresh_azure(idp, second)[0] == 200


def test_rotation_switched_off_keeps_the_refresh_token(idp: RunningIdP) -> None:
    idp.idp.set_rotation(False, idp.world.public_app)
    token = ropc(idp)[1]["refresh_token"]
    for _ in range(2):
        status, body = refresh_azure(idp, token)
        assert status == 200 and body["refresh_token"] == token


def test_a_revoked_grant_refuses_refresh_and_its_access_tokens_go_inactive(
    idp: RunningIdP,
) -> None:
    body = ropc(idp)[1]
    assert introspect(idp, body["access_token"]) == (200, introspect(idp, body["access_token"])[1])
    assert introspect(idp, body["access_token"])[1]["active"] is True
    assert idp.idp.revoke(user=ALICE) == 1
    assert aadsts(refresh_azure(idp, body["refresh_token"])) == (400, "invalid_grant", 70008)
    assert introspect(idp, body["access_token"]) == (200, {"active": False})
    assert ropc(idp)[0] == 200  # a new sign-in is a new grant


def test_refresh_for_a_user_who_now_needs_mfa_is_refused(idp: RunningIdP) -> None:
    token = ropc(idp)[1]["refresh_token"]
    idp.idp.set_mfa_required(ALICE)
    assert aadsts(refresh_azure(idp, token)) == (400, "invalid_grant", 50076)


def test_google_refresh_keeps_its_token_and_answers_in_googles_shape(idp: RunningIdP) -> None:
    token = idp.idp.issue_refresh_token(idp.world.google_client, CAROL, GOOGLE_MAIL)
    assert token.startswith("1//")
    status, body = google_refresh(idp, token)
    assert status == 200
    assert body["access_token"].startswith("ya29.") and body["scope"] == GOOGLE_MAIL
    assert "refresh_token" not in body
    assert google_refresh(idp, token)[0] == 200
    assert google_refresh(idp, token, secret="wrong") == (
        401, {"error": "invalid_client", "error_description": "Unauthorized"})
    idp.idp.revoke(user=CAROL, client_id=idp.world.google_client)
    assert google_refresh(idp, token) == (
        400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})


# -- client_credentials grant ------------------------------------------------


def test_client_credentials_with_a_secret(idp: RunningIdP) -> None:
    status, body = client_credentials(idp, client_secret=idp.world.daemon_secret)
    assert status == 200 and "refresh_token" not in body
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert "IMAP.AccessAsApp" in claims["roles"] and "upn" not in claims
    info = introspect(idp, body["access_token"])[1]
    assert info["active"] is True and "username" not in info
    assert info["mailboxes"].split() == ["alice@contoso.test", "bob@contoso.test"]
    assert aadsts(client_credentials(idp, client_secret="wrong")) == (
        401, "invalid_client", 7000215)
    assert aadsts(client_credentials(idp, scope=OUTLOOK_DEFAULT.replace(".default", "IMAP"),
                                     client_secret=idp.world.daemon_secret)) == (
        400, "invalid_scope", 1002012)


def test_client_credentials_with_a_certificate_assertion(idp: RunningIdP) -> None:
    status, body = client_credentials(idp, **with_assertion(client_assertion(idp)))
    assert status == 200 and body["access_token"]


@pytest.mark.parametrize(
    "spoil",
    ["key", "x5t", "aud", "iss", "expired", "type"],
)
def test_client_assertion_refusals(idp: RunningIdP, spoil: str) -> None:
    form: dict[str, str]
    if spoil == "key":
        form = with_assertion(client_assertion(idp, key=pki.new_key()))
    elif spoil == "x5t":
        form = with_assertion(client_assertion(idp, x5t="not-registered"))
    elif spoil == "aud":
        form = with_assertion(client_assertion(idp, aud="https://login.example/token"))
    elif spoil == "iss":
        form = with_assertion(client_assertion(idp, iss="another-app"))
    elif spoil == "expired":
        form = with_assertion(client_assertion(idp))
        idp.idp.advance(3600)
    else:
        form = with_assertion(client_assertion(idp)) | {"client_assertion_type": "password"}
    assert aadsts(client_credentials(idp, **form)) == (401, "invalid_client", 700027)


# -- JWT-bearer grant (Google service account) -------------------------------


def test_service_account_jwt_bearer_for_a_delegated_user(idp: RunningIdP) -> None:
    status, body = jwt_bearer(idp, service_jwt(idp))
    assert status == 200 and body["access_token"].startswith("ya29.")
    assert "refresh_token" not in body
    with urllib.request.urlopen(
        idp.base_url + "/tokeninfo?access_token=" + body["access_token"],
        context=idp.ssl_context(), timeout=30,
    ) as response:
        info = json.loads(response.read())
    assert info["email"] == CAROL and info["scope"] == GOOGLE_MAIL
    assert isinstance(info["expires_in"], str) and int(info["expires_in"]) > 0


@pytest.mark.parametrize(
    ("spoil", "error", "description"),
    [
        ({"key": "other"}, "invalid_grant", "Invalid JWT Signature."),
        ({"kid": "unknown"}, "invalid_grant", "Invalid JWT Signature."),
        ({"aud": "https://oauth2.example/token"}, "invalid_grant", "Invalid JWT: aud"),
        ({"exp_after": 7200}, "invalid_grant", "Invalid JWT: Token must be a short-lived"),
        ({"sub": "someone@elsewhere.test"}, "unauthorized_client", "Client is unauthorized"),
        ({"scope": "https://www.googleapis.com/auth/drive"}, "unauthorized_client",
         "Client is unauthorized"),
        ({"iss": "stranger@x.iam.gserviceaccount.test"}, "invalid_grant", "Invalid grant"),
    ],
)
def test_jwt_bearer_refusals(idp: RunningIdP, spoil: dict[str, Any], error: str,
                             description: str) -> None:
    claims = dict(spoil)
    key = pki.new_key() if claims.pop("key", None) else None
    kid = claims.pop("kid", None)
    if "exp_after" in claims:
        claims["exp"] = int(idp.idp.authority.clock.now()) + claims.pop("exp_after")
    status, body = jwt_bearer(idp, service_jwt(idp, key=key, kid=kid, **claims))
    assert status == 400 and body["error"] == error
    assert body["error_description"].startswith(description)
    assert "error_codes" not in body  # Google's shape, not Azure's


def test_an_expired_service_account_assertion_is_refused(idp: RunningIdP) -> None:
    assertion = service_jwt(idp)
    idp.idp.advance(3600 + 301)
    assert jwt_bearer(idp, assertion)[1]["error"] == "invalid_grant"


# -- introspection, tokeninfo, revocation --------------------------------------


def test_introspection_in_dovecots_three_modes(idp: RunningIdP) -> None:
    token = ropc(idp)[1]["access_token"]
    world = idp.world
    post = introspect(idp, token)
    query = urllib.parse.urlencode({"token": token, "client_id": world.introspector,
                                    "client_secret": world.introspector_secret})
    get = call(idp, f"{idp.base_url}/introspect?{query}")
    auth = call(idp, idp.base_url + "/introspect", headers={"Authorization": f"Bearer {token}"})
    for status, body in (post, get, auth):
        assert status == 200 and body["active"] is True
        assert body["username"] == ALICE and body["token_type"] == "Bearer"
    assert idp.idp.stats()["introspect"] == 3


def test_only_the_resource_server_may_introspect(idp: RunningIdP) -> None:
    token = ropc(idp)[1]["access_token"]
    form = {"token": token, "client_id": idp.world.confidential_app,
            "client_secret": idp.world.confidential_secret}
    assert call(idp, idp.base_url + "/introspect", form)[0] == 401
    wrong = {"token": token, "client_id": "dovecot", "client_secret": "wrong"}
    assert call(idp, idp.base_url + "/introspect", wrong)[0] == 401


def test_tokens_expire_on_the_idps_clock(idp: RunningIdP) -> None:
    idp.idp.set_access_ttl(60)
    body = ropc(idp)[1]
    idp.idp.advance(59)
    assert introspect(idp, body["access_token"])[1]["active"] is True
    idp.idp.advance(2)
    assert introspect(idp, body["access_token"]) == (200, {"active": False})
    assert introspect(idp, body["refresh_token"]) == (200, {"active": False})
    assert refresh_azure(idp, body["refresh_token"])[0] == 200


def test_revoking_a_token_revokes_its_grant(idp: RunningIdP) -> None:
    token = idp.idp.issue_refresh_token(idp.world.google_client, CAROL, GOOGLE_MAIL)
    access = google_refresh(idp, token)[1]["access_token"]
    assert call(idp, idp.base_url + "/revoke", {"token": access}) == (200, {})
    assert call(idp, f"{idp.base_url}/tokeninfo?access_token={access}") == (
        400, {"error": "invalid_token", "error_description": "Invalid Value"})
    assert google_refresh(idp, token)[1]["error"] == "invalid_grant"
    assert call(idp, idp.base_url + "/revoke", {"token": "unknown"})[0] == 400


# -- outages and counting -------------------------------------------------------


def test_an_outage_answers_503_and_ends(idp: RunningIdP) -> None:
    token = ropc(idp)[1]["access_token"]
    idp.idp.start_outage(503, endpoints=["introspect"])
    assert introspect(idp, token)[0] == 503
    assert ropc(idp)[0] == 200  # the token endpoint is not in this outage
    idp.idp.start_outage(503)
    assert aadsts(ropc(idp)) == (503, "temporarily_unavailable", 90033)
    idp.idp.end_outage()
    assert introspect(idp, token)[1]["active"] is True


def test_a_hanging_outage_holds_requests_until_released(idp: RunningIdP) -> None:
    idp.idp.start_outage(hang=True, endpoints=["token"])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(ropc, idp)
        assert idp.idp.wait_held(1)
        assert not pending.done()
        idp.idp.end_outage()
        idp.idp.release()
        status, body = pending.result(timeout=30)
    assert status == 200 and body["access_token"]


def test_requests_are_counted_per_endpoint_and_grant(idp: RunningIdP) -> None:
    ropc(idp)
    ropc(idp, password="wrong")
    client_credentials(idp, client_secret=idp.world.daemon_secret)
    assert idp.idp.request_count("azure-token") == 3
    assert idp.idp.request_count("azure-token:password") == 2
    assert idp.idp.request_count("azure-token:client_credentials") == 1
    idp.idp.reset_counts()
    assert idp.idp.stats() == {}


# -- the controls over HTTP -------------------------------------------------------


def control(idp: RunningIdP, name: str, **args: Any) -> Answer:
    request = urllib.request.Request(
        f"{idp.base_url}/_control/{name}", json.dumps(args).encode(), method="POST")
    with urllib.request.urlopen(request, context=idp.ssl_context(), timeout=30) as response:
        return response.status, json.loads(response.read())


def test_http_controls(idp: RunningIdP) -> None:
    body = ropc(idp)[1]
    assert control(idp, "stats")[1]["azure-token:password"] == 1
    assert control(idp, "advance", seconds=3601) == (200, {"ok": True})
    assert introspect(idp, body["access_token"])[1] == {"active": False}
    assert control(idp, "revoke", user=ALICE) == (200, {"revoked": 1})
    assert aadsts(refresh_azure(idp, body["refresh_token"]))[2] == 70008
    control(idp, "mfa", user=ALICE, on=True)
    assert aadsts(ropc(idp))[2] == 50076
    control(idp, "mfa", user=ALICE, on=False)
    control(idp, "outage", status=503, endpoints=["token"])
    assert ropc(idp)[0] == 503
    control(idp, "end-outage")
    control(idp, "rotation", on=False)
    token = ropc(idp)[1]["refresh_token"]
    assert refresh_azure(idp, token)[1]["refresh_token"] == token
    control(idp, "expire-secret", client_id=idp.world.daemon_app)
    assert aadsts(client_credentials(idp, client_secret=idp.world.daemon_secret))[2] == 7000222
    issued = control(idp, "issue-refresh-token", client_id=idp.world.google_client, user=CAROL,
                     scope=GOOGLE_MAIL)[1]["refresh_token"]
    assert google_refresh(idp, issued)[0] == 200
    with pytest.raises(urllib.error.HTTPError) as raised:
        control(idp, "no-such-control")
    with raised.value:
        assert raised.value.code == 404


def test_restore_puts_back_what_the_controls_changed(idp: RunningIdP) -> None:
    saved = control(idp, "snapshot")[1]
    body = ropc(idp)[1]
    control(idp, "advance", seconds=3601)
    control(idp, "rotation", on=False)
    control(idp, "mfa", user=ALICE, on=True)
    control(idp, "outage", status=503, endpoints=["token"])
    assert introspect(idp, body["access_token"])[1] == {"active": False}
    assert control(idp, "restore", **saved) == (200, {"ok": True})
    assert control(idp, "snapshot")[1] == saved
    assert introspect(idp, body["access_token"])[1]["active"] is True  # the clock is back
    refreshed = refresh_azure(idp, body["refresh_token"])[1]  # no outage, no MFA
    assert refreshed["refresh_token"] != body["refresh_token"]  # rotates again


# -- logs -------------------------------------------------------------------------


def test_no_secret_reaches_the_logs(idp: RunningIdP, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[str] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        events.append(formatEvent(event) + repr(event))

    globalLogPublisher.addObserver(observe)
    try:
        world = idp.world
        azure = ropc(idp)[1]
        ropc(idp, password="wrong-password-here")
        refreshed = refresh_azure(idp, azure["refresh_token"])[1]
        app = client_credentials(idp, client_secret=world.daemon_secret)[1]
        assertion = client_assertion(idp)
        client_credentials(idp, **with_assertion(assertion))
        google_token = idp.idp.issue_refresh_token(world.google_client, CAROL, GOOGLE_MAIL)
        google = google_refresh(idp, google_token)[1]
        service = service_jwt(idp)
        jwt_bearer(idp, service)
        call(idp, f"{idp.base_url}/tokeninfo?access_token={google['access_token']}")
        introspect(idp, azure["access_token"])
        call(idp, idp.base_url + "/revoke", {"token": google["access_token"]})
    finally:
        globalLogPublisher.removeObserver(observe)
    written = "\n".join(events) + caplog.text
    assert "/tokeninfo" in written and "idp token" in written  # the logs were captured
    secrets = [
        ALICE_PASSWORD, "wrong-password-here", world.daemon_secret, world.google_secret,
        world.introspector_secret, azure["access_token"], azure["refresh_token"],
        refreshed["refresh_token"], app["access_token"], assertion, google_token,
        google["access_token"], service,
    ]
    leaked = [s[:12] for s in secrets if s in written]
    assert leaked == []


# -- the standalone process ----------------------------------------------------------


def test_the_standalone_process_serves_https_and_the_controls(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.idp", "--state-dir", str(tmp_path), "--access-ttl", "60"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with ThreadPoolExecutor(1) as pool:
            line = pool.submit(process.stdout.readline).result(timeout=60)  # type: ignore[union-attr]
        info = json.loads(line)
        assert info == json.loads((tmp_path / "idp.json").read_text())
        context = ssl.create_default_context(cafile=info["ca_file"])

        def post(url: str, data: bytes) -> dict[str, Any]:
            with urllib.request.urlopen(url, data, context=context, timeout=30) as response:
                return dict(json.loads(response.read()))

        token = post(info["azure_token_url"], urllib.parse.urlencode({
            "grant_type": "password", "client_id": info["public_app"],
            "username": ALICE, "password": info["users"][ALICE], "scope": OUTLOOK_DEFAULT,
        }).encode())
        assert token["expires_in"] == 60
        introspection = urllib.parse.urlencode({
            "token": token["access_token"], "client_id": info["introspector"],
            "client_secret": info["introspector_secret"]}).encode()
        assert post(info["introspection_url"], introspection)["active"] is True
        assert post(info["base_url"] + "/_control/advance", b'{"seconds": 61}') == {"ok": True}
        assert post(info["introspection_url"], introspection) == {"active": False}
        key = json.loads(Path(info["service_account_file"]).read_text())
        assert key["token_uri"] == info["google_token_url"]
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert "idp token azure grant=password: 200" in errors
    assert info["users"][ALICE] not in errors and token["access_token"] not in errors

"""``google-refresh``: the refresh-token grant, rotation kept encrypted across restarts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from postroom.api import (
    BEARER,
    ConfigError,
    Credentials,
    GrantState,
    IdentityProviderUnavailable,
    NeedsReauthorisation,
)
from postroom.testing import TestKernel, result_of
from postroom_google_refresh import GOOGLE_TOKEN_URL, GoogleRefreshAuthenticator
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
KEY = "0123456789abcdef-site-token-key"


def consent(idp: RunningIdP, user: str = CAROL) -> str:
    """A refresh token, as the user's interactive consent gives it."""
    return idp.idp.issue_refresh_token(idp.world.google_client, user, GOOGLE_MAIL)


def google_box(idp: RunningIdP, refresh: str, name: str = "carol", user: str = CAROL,
               **options: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "password": refresh, "client_id": idp.world.google_client, "secret": "google",
        "token_endpoint": idp.google_token_url, "token_ca_file": str(idp.tls.ca_file),
    }
    values.update(options)
    return mailbox(name, user, "google-refresh", **values)


def google_site(idp: RunningIdP, *boxes: dict[str, Any], key: str | None = KEY,
                client_secret: str | None = None) -> str:
    return site(boxes, secrets={"google": client_secret or idp.world.google_secret},
                gateway={"token-encryption-secret": key} if key else None)


def token_of(kernel: TestKernel, name: str = "carol") -> Credentials:
    creds: Credentials = result_of(kernel.authenticator(name).credentials("imap"))
    return creds


def store_bytes(store: Path) -> bytes:
    """Everything SQLite wrote for the store (the database, its journal or WAL)."""
    return b"".join(p.read_bytes() for p in store.parent.glob(store.name + "*"))


def test_a_token_from_the_refresh_token(idp: RunningIdP, kernels: Kernels) -> None:
    refresh = consent(idp)
    kernel = kernels(google_site(idp, google_box(idp, refresh)))
    auth = kernel.authenticator("carol")
    assert isinstance(auth, GoogleRefreshAuthenticator)
    creds = result_of(auth.credentials("imap"))
    assert creds.username == CAROL and creds.mechanism == BEARER
    assert creds.secret.startswith("ya29.")
    [sent] = http_of(kernel).sent
    assert sent.url == idp.google_token_url
    assert sent.fields == {"grant_type": "refresh_token", "refresh_token": refresh,
                           "scope": GOOGLE_MAIL, "client_id": idp.world.google_client,
                           "client_secret": idp.world.google_secret}
    # cached by a hash of the configured token, never the token
    key = auth.cache_key()
    assert refresh not in repr(key) and hashlib.sha256(refresh.encode()).hexdigest() in key
    assert token_of(kernel).secret == creds.secret
    kernels.advance(3600 - 300 + 1)
    assert token_of(kernel).secret != creds.secret
    assert idp.idp.request_count("google-token:refresh_token") == 2


def test_the_google_endpoint_by_default(idp: RunningIdP, kernels: Kernels) -> None:
    boxes = []
    for name, authority in (("a", None), ("b", "https://accounts.google.com/")):
        box = google_box(idp, "1//x", name, tenant_authority=authority)
        del box["token-endpoint"]
        if authority is None:
            del box["tenant-authority"]
        boxes.append(box)
    kernel = kernels(google_site(idp, *boxes))
    assert kernel.authenticator("a").endpoint == GOOGLE_TOKEN_URL
    assert kernel.authenticator("b").endpoint == GOOGLE_TOKEN_URL


def test_a_rotated_token_is_stored_encrypted_and_used_after_a_restart(
    idp: RunningIdP, kernels: Kernels, tmp_path: Path, all_logs: pytest.LogCaptureFixture
) -> None:
    idp.idp.set_rotation(True, idp.world.google_client)
    store = tmp_path / "postroom.db"
    first = consent(idp)
    config = google_site(idp, google_box(idp, first))
    kernel = kernels(config, store=store)
    access = token_of(kernel).secret
    [rotated] = [t for t in idp.idp.authority.refresh_tokens if t not in (first,)]
    record = result_of(kernel.kernel.oauth.vault.state(kernel.authenticator("carol").grant_key()))
    assert record is not None and record.refresh_token  # kept, sealed
    kernel.close()
    written = store_bytes(store)
    assert rotated.encode() not in written and first.encode() not in written
    assert access.encode() not in written
    # after a restart the site file still holds the first (now dead) token
    again = kernels(config, store=store)
    assert token_of(again).username == CAROL
    assert http_of(again).sent[0].fields["refresh_token"] == rotated
    # the administrator puts a new token in the file: it wins over the stored one
    fresh = consent(idp)
    third = kernels(google_site(idp, google_box(idp, fresh)), store=store)
    assert token_of(third).username == CAROL
    assert http_of(third).sent[0].fields["refresh_token"] == fresh
    assert_no_secret([first, rotated, fresh, access, idp.world.google_secret, KEY],
                     log_text(all_logs))


def test_a_changed_encryption_key_needs_reauthorisation(
    idp: RunningIdP, kernels: Kernels, tmp_path: Path
) -> None:
    idp.idp.set_rotation(True, idp.world.google_client)
    store = tmp_path / "postroom.db"
    refresh = consent(idp)
    token_of(kernels(google_site(idp, google_box(idp, refresh)), store=store))
    before = idp.idp.request_count("google-token")
    other = kernels(google_site(idp, google_box(idp, refresh), key="another-key-of-32-bytes-or-so"),
                    store=store)
    with pytest.raises(NeedsReauthorisation, match="cannot be decrypted") as info:
        token_of(other)
    assert idp.idp.request_count("google-token") == before
    record = result_of(other.kernel.oauth.vault.state(other.authenticator("carol").grant_key()))
    assert record is not None and record.state == GrantState.NEEDS_REAUTHORISATION.value
    assert refresh not in str(info.value)


def test_a_revoked_grant_stops_that_mailbox_only_and_survives_a_restart(
    idp: RunningIdP, kernels: Kernels, tmp_path: Path
) -> None:
    store = tmp_path / "postroom.db"
    config = google_site(idp, google_box(idp, consent(idp)),
                         google_box(idp, consent(idp, DAVE), "dave", DAVE))
    kernel = kernels(config, store=store)
    idp.idp.revoke(user=CAROL)
    with pytest.raises(NeedsReauthorisation, match="invalid_grant") as info:
        token_of(kernel)
    assert "mailbox 'carol'" in str(info.value)
    assert token_of(kernel, "dave").username == DAVE
    before = idp.idp.request_count("google-token")
    with pytest.raises(NeedsReauthorisation):
        token_of(kernels(config, store=store))
    assert idp.idp.request_count("google-token") == before


def test_a_wrong_client_secret_stops_every_mailbox_of_the_client_said_once(
    idp: RunningIdP, kernels: Kernels, all_logs: pytest.LogCaptureFixture
) -> None:
    config = google_site(idp, google_box(idp, consent(idp)),
                         google_box(idp, consent(idp, DAVE), "dave", DAVE),
                         client_secret="not-the-client-secret")
    kernel = kernels(config)
    for name in ("carol", "dave"):
        with pytest.raises(NeedsReauthorisation, match="invalid_client"):
            token_of(kernel, name)
    assert idp.idp.request_count("google-token") == 1
    # the gateway's own lines (the fake identity provider logs its side too)
    said = [r for r in all_logs.records if r.name.startswith("postroom")]
    assert len([r for r in said if "invalid_client" in r.getMessage()]) == 1
    assert_no_secret(["not-the-client-secret"], log_text(all_logs))


def test_an_outage_is_temporary(idp: RunningIdP, kernels: Kernels) -> None:
    kernel = kernels(google_site(idp, google_box(idp, consent(idp))))
    idp.idp.start_outage(500)
    with pytest.raises(IdentityProviderUnavailable, match="HTTP 500"):
        token_of(kernel)
    idp.idp.end_outage()
    assert token_of(kernel).username == CAROL


def test_the_encryption_secret_is_required(idp: RunningIdP, kernels: Kernels) -> None:
    kernel = kernels(google_site(idp, google_box(idp, "1//x"), key=None))
    with pytest.raises(ConfigError, match="token-encryption-secret") as info:
        kernel.authenticator("carol")
    assert info.value.option == "gateway.token-encryption-secret"


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"client_id": None}, "client-id"),
        ({"password": None}, "password"),
        ({"secret": None}, "secret"),
        ({"secret": "nowhere"}, "secret"),
        ({"token_endpoint": None, "tenant_authority": "https://login.microsoftonline.com/"},
         "tenant-authority"),
    ],
)
def test_configuration_errors(
    idp: RunningIdP, kernels: Kernels, change: dict[str, Any], option: str
) -> None:
    box = google_box(idp, "1//refresh-token-not-to-print",
                     **{k: v for k, v in change.items() if v is not None})
    for name in (k.replace("_", "-") for k, v in change.items() if v is None):
        del box[name]
    kernel = kernels(google_site(idp, box))
    with pytest.raises(ConfigError) as info:
        kernel.authenticator("carol")
    assert info.value.option == f"pop-client[carol].{option}"
    assert "refresh-token-not-to-print" not in str(info.value)

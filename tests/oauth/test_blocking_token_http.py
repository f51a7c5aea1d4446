"""``postroom.testing.BlockingTokenHTTP``: TokenHTTP's contract, strict, without the reactor."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from postroom.api import TokenAnswer, TokenError, TokenFailure
from postroom.testing import BlockingTokenHTTP, result_of
from tests.idp.running import RunningIdP
from tests.pki import make_tls_files

FORM = "grant_type=password&client_id=azure-public-app&username=alice%40contoso.test&" \
       "password=alice-password-1&scope=https%3A%2F%2Foutlook.office.com%2F.default"


def test_an_answer_whatever_its_status(idp: RunningIdP) -> None:
    http = BlockingTokenHTTP(idp.tls.ca_file)
    answer = result_of(http.post_form(idp.azure_token_url(), FORM))
    assert isinstance(answer, TokenAnswer) and answer.status == 200
    refused = result_of(http.post_form(idp.azure_token_url(), FORM.replace("-1&", "-x&")))
    assert refused.status == 400 and b"AADSTS50126" in refused.body
    assert http.requests == 2 == idp.idp.request_count("azure-token")
    assert http.sent[0].fields["username"] == "alice@contoso.test"
    assert http.sent[0].headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "alice-password-1" not in repr(http.sent) + repr(http) + repr(answer)


def test_https_only(idp: RunningIdP) -> None:
    http = BlockingTokenHTTP(idp.tls.ca_file)
    with pytest.raises(TokenError, match="must be an https:// URL") as info:
        result_of(http.post_form(idp.azure_token_url().replace("https:", "http:"), FORM))
    assert info.value.kind is TokenFailure.GRANT and http.requests == 0


def test_the_certificate_is_verified(idp: RunningIdP, tmp_path: Path) -> None:
    other_ca = make_tls_files(tmp_path / "other").ca_file
    http = BlockingTokenHTTP(idp.tls.ca_file)
    # the driver's token-ca-file wins over the double's default
    with pytest.raises(TokenError, match="CERTIFICATE_VERIFY_FAILED") as info:
        result_of(http.post_form(idp.azure_token_url(), FORM, ca_file=other_ca))
    assert info.value.kind is TokenFailure.TEMPORARY
    with pytest.raises(TokenError, match="CERTIFICATE_VERIFY_FAILED"):
        result_of(BlockingTokenHTTP().post_form(idp.azure_token_url(), FORM))  # system CAs
    assert idp.idp.request_count("azure-token") == 0


def test_nothing_listening_is_temporary() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(TokenError, match=f"token endpoint 127.0.0.1:{port}") as info:
        result_of(BlockingTokenHTTP().post_form(f"https://127.0.0.1:{port}/token", FORM))
    assert info.value.kind is TokenFailure.TEMPORARY


def test_hold_queues_until_the_block_ends(idp: RunningIdP) -> None:
    http = BlockingTokenHTTP(idp.tls.ca_file)
    with http.hold():
        waiting = [http.post_form(idp.azure_token_url(), FORM) for _ in range(2)]
        assert not any(d.called for d in waiting) and http.requests == 0
    assert [result_of(d).status for d in waiting] == [200, 200]
    assert http.requests == 2

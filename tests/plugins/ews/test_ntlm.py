"""``ews-auth-type: ntlm`` against an NTLM-only fake: pyspnego's NTLM acceptor
checks the handshake (no hand-written crypto), Basic is refused there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.errors import AuthenticationFailed, SenderAuthenticationFailed
from tests.conftest import run
from tests.fakes.ews.server import EWSFake
from tests.pki import TestCA
from tests.plugins.ews.conftest import Harness, message
from tests.plugins.ews.test_sender import MESSAGE, build, envelope
from tests.plugins.ews.test_source import process, seed


@pytest.fixture
def ntlm(ews_tls: TestCA) -> Iterator[EWSFake]:
    with EWSFake(ews_tls, auth="ntlm") as server:
        yield server
    assert server.protocol_errors == [], server.protocol_errors


def test_an_ntlm_login_lists_and_fetches(ntlm: EWSFake, tmp_path: Path) -> None:
    seed(ntlm, 3)
    h = Harness(ntlm, tmp_path / "spool", ews_auth_type="ntlm")
    h.settle(h.source.connect())
    assert process(h, h.settle(h.source.list_new(None))) == [message(n) for n in range(3)]
    h.settle(h.source.disconnect())
    assert ntlm.store.folders["inbox"].items == []
    assert ntlm.counts["401"] >= 1  # the handshake's challenge
    assert ntlm.denied == []


def test_a_wrong_ntlm_password_is_a_refused_login(ntlm: EWSFake, tmp_path: Path) -> None:
    h = Harness(ntlm, tmp_path / "spool", ews_auth_type="ntlm")
    h.auth.creds = h.auth.creds.__class__(ntlm.user, "wrong", "PLAIN")
    with pytest.raises(AuthenticationFailed, match="login refused"):
        h.settle(h.source.connect())
    assert h.auth.invalidated == 1  # the login-failure policy ran
    # pyspnego's acceptor found the NTLMv2 response does not match the password
    assert ntlm.denied == [("auth", "401", "NTLM refused: InvalidTokenError")]


def test_basic_to_an_ntlm_only_server_is_refused_clearly(ntlm: EWSFake, tmp_path: Path) -> None:
    h = Harness(ntlm, tmp_path / "spool")  # ews-auth-type: basic
    with pytest.raises(AuthenticationFailed, match="offers NTLM, not Basic"):
        h.settle(h.source.connect())
    assert [why for _op, _code, why in ntlm.denied] == ["Basic to an NTLM-only server"]


def test_the_sender_logs_in_with_ntlm(ntlm: EWSFake, tmp_path: Path) -> None:
    sender = build(tmp_path, ntlm, ews_auth_type="ntlm")
    result = run(sender.send(MESSAGE, envelope("ann@example.test"), "<m1@example.com>"))
    assert result.message_id == "<m1@example.com>"
    assert len(ntlm.sent) == 1


def test_the_sender_says_when_basic_meets_an_ntlm_only_server(
    ntlm: EWSFake, tmp_path: Path
) -> None:
    sender = build(tmp_path, ntlm)
    with pytest.raises(SenderAuthenticationFailed, match="offers NTLM, not Basic"):
        run(sender.send(MESSAGE, envelope("ann@example.test"), "<m1@example.com>"))
    assert ntlm.sent == []

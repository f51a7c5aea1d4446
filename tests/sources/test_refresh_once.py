"""refresh_once: the one way a refused token is refreshed (logins, Graph and
EWS requests), with an owner handing out secrets in turn."""

from __future__ import annotations

import pytest
from twisted.internet import defer

from postroom.api import AuthenticationFailed, Credentials, LoginRefused, refresh_once
from postroom.testing import result_of


class Owner:
    name = "support"

    def __init__(self, *secrets: str) -> None:
        self.secrets = list(secrets)
        self.refused: list[str] = []

    async def credentials(self) -> Credentials:
        return Credentials("u", self.secrets.pop(0), "BEARER")

    def login_refused(self, detail: str) -> None:
        self.refused.append(detail)


def run(owner: Owner, accepted: set[str], first: str) -> tuple[str, Credentials]:
    tried: list[str] = []

    async def attempt(credentials: Credentials) -> str:
        tried.append(credentials.secret)
        if credentials.secret not in accepted:
            raise LoginRefused(f"401 for try {len(tried)}")
        return "ok"

    def refused(detail: str) -> Exception:
        return AuthenticationFailed(f"refused: {detail}")

    return result_of(
        defer.ensureDeferred(
            refresh_once(owner, attempt, Credentials("u", first, "BEARER"),
                         refused=refused, where="server s")
        )
    )  # fmt: skip


def test_accepted_at_once_asks_nothing() -> None:
    owner = Owner()
    result, used = run(owner, {"t1"}, "t1")
    assert (result, used.secret, owner.refused) == ("ok", "t1", [])


def test_a_refused_token_is_reported_and_a_fresh_one_tried_once() -> None:
    owner = Owner("t2")
    result, used = run(owner, {"t2"}, "t1")
    assert (result, used.secret, owner.refused) == ("ok", "t2", ["401 for try 1"])


def test_the_same_secret_again_fails_without_a_second_try() -> None:
    owner = Owner("t1")
    with pytest.raises(AuthenticationFailed, match="refused: 401 for try 1"):
        run(owner, set(), "t1")
    assert owner.refused == ["401 for try 1"]


def test_a_second_refusal_is_reported_and_fails() -> None:
    owner = Owner("t2", "t3")
    with pytest.raises(AuthenticationFailed, match="refused: 401 for try 2"):
        run(owner, set(), "t1")
    assert owner.refused == ["401 for try 1", "401 for try 2"]
    assert owner.secrets == ["t3"]  # asked once only

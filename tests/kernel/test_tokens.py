"""The token cache the OAuth drivers share (postroom.api.TokenCache), on an injected clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from postroom.api import Token, TokenCache


class Endpoint:
    """A token endpoint the test answers by hand: each fetch waits for `answer`."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Token]] = []
        self.issued = 0

    def fetch(self) -> Deferred[Token]:
        d: Deferred[Token] = Deferred()
        self.pending.append(d)
        return d

    def answer(self, clock: Clock, expires_in: float = 3600) -> Token:
        self.issued += 1
        token = Token.expiring(f"token-{self.issued}", expires_in, clock.seconds())
        self.pending.pop(0).callback(token)
        return token


def result_of(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "not fired"
    return box[0]


def test_a_fresh_token_is_reused_until_the_margin() -> None:
    clock, endpoint = Clock(), Endpoint()
    cache = TokenCache(clock, margin=300)
    first = cache.get("grant", endpoint.fetch)
    endpoint.answer(clock, expires_in=3600)
    assert result_of(first).value == "token-1"
    clock.advance(3600 - 300 - 1)
    assert result_of(cache.get("grant", endpoint.fetch)).value == "token-1"
    assert endpoint.pending == []
    clock.advance(1)  # now inside the margin: refresh
    again = cache.get("grant", endpoint.fetch)
    endpoint.answer(clock)
    assert result_of(again).value == "token-2"
    assert cache.fetches == 2


def test_concurrent_callers_share_one_refresh() -> None:
    clock, endpoint = Clock(), Endpoint()
    cache = TokenCache(clock)
    waiting = [cache.get(("tenant", "scope", "user"), endpoint.fetch) for _ in range(5)]
    assert len(endpoint.pending) == 1
    endpoint.answer(clock)
    assert {result_of(d).value for d in waiting} == {"token-1"}


def test_keys_do_not_share_tokens() -> None:
    clock, endpoint = Clock(), Endpoint()
    cache = TokenCache(clock)
    a, b = cache.get("a", endpoint.fetch), cache.get("b", endpoint.fetch)
    endpoint.answer(clock)
    endpoint.answer(clock)
    assert (result_of(a).value, result_of(b).value) == ("token-1", "token-2")


def test_a_failed_refresh_reaches_every_waiter_and_is_not_cached() -> None:
    clock, endpoint = Clock(), Endpoint()
    cache = TokenCache(clock)
    waiting = [cache.get("grant", endpoint.fetch) for _ in range(3)]
    endpoint.pending.pop(0).errback(RuntimeError("invalid_grant"))
    for d in waiting:
        failure = result_of(d)
        assert failure.check(RuntimeError) and "invalid_grant" in str(failure.value)
    retry = cache.get("grant", endpoint.fetch)
    assert len(endpoint.pending) == 1  # asked again, not answered from a cache
    endpoint.answer(clock)
    assert result_of(retry).value == "token-1"


def test_invalidate_forgets_only_the_refused_token() -> None:
    clock, endpoint = Clock(), Endpoint()
    cache = TokenCache(clock)
    d = cache.get("grant", endpoint.fetch)
    endpoint.answer(clock)
    old = result_of(d).value
    assert cache.invalidate("grant", refused="some-older-token") is False
    assert cache.peek("grant") is not None
    assert cache.invalidate("grant", refused=old) is True
    fresh = cache.get("grant", endpoint.fetch)
    endpoint.answer(clock)
    assert result_of(fresh).value == "token-2"


def test_coroutine_and_plain_fetchers() -> None:
    clock = Clock()
    cache = TokenCache(clock)

    async def coroutine_fetch() -> Token:
        return Token("from-coroutine", None)

    assert result_of(cache.get("c", coroutine_fetch)).value == "from-coroutine"
    assert result_of(cache.get("p", lambda: Token("plain", None))).value == "plain"


def test_a_fetch_that_returns_no_token_is_an_error() -> None:
    cache = TokenCache(Clock())
    failure = result_of(cache.get("x", lambda: "just-a-string"))
    assert failure.check(TypeError)


def test_token_values_never_print() -> None:
    token = Token.expiring("eyJ-secret-value", 60, 0)
    assert "eyJ-secret-value" not in repr(token)
    assert token.expires_at == 60


def test_negative_margin_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenCache(Clock(), margin=-1)


# ------------------------------------------------------------- token endpoint errors

from postroom.api import TokenFailure, classify_token_error  # noqa: E402


def plain(error: str, description: str | None = None) -> bytes:
    body = {"error": error}
    if description is not None:
        body["error_description"] = description
    return json.dumps(body).encode()


def azure(error: str, code: int, text: str) -> bytes:
    return json.dumps(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: 0f3c\r\nTimestamp: 2026-12-06",
            "error_codes": [code],
        }
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, azure("invalid_grant", 50076, "Due to a configuration change ... MFA"), "grant"),
        (400, azure("invalid_grant", 65001, "The user has not consented"), "grant"),
        (400, azure("invalid_grant", 70008, "The refresh token has expired"), "grant"),
        (400, azure("invalid_grant", 50126, "Error validating credentials"), "grant"),
        (401, azure("invalid_client", 7000222, "The client secret keys are expired"), "client"),
        (401, azure("invalid_client", 7000215, "Invalid client secret provided"), "client"),
        (400, plain("invalid_grant", "Token has been expired or revoked."), "grant"),
        (401, plain("invalid_client", "The OAuth client was not found."), "client"),
        (400, b'{"error": "unauthorized_client"}', "client"),
        (503, b"<html>Service Unavailable</html>", "temporary"),
        (429, b"", "temporary"),
        (None, None, "temporary"),
        (400, b'{"error": "temporarily_unavailable"}', "temporary"),
        (400, plain("invalid_scope", "AADSTS70011: bad scope"), "grant"),
        (400, b"not json at all", "grant"),
    ],
)
def test_token_errors_are_told_apart(status: int | None, body: bytes | None, kind: str) -> None:
    assert classify_token_error(status, body).kind == TokenFailure(kind)


def test_the_providers_words_pass_through_on_one_line() -> None:
    error = classify_token_error(401, azure("invalid_client", 7000222, "secret expired"))
    assert str(error).startswith("invalid_client: AADSTS7000222: secret expired Trace ID: 0f3c")
    assert "\n" not in str(error) and error.status == 401


def test_hostile_bodies_are_bounded() -> None:
    body = json.dumps({"error": "x" * 10000, "error_description": "y" * 100000}).encode()
    assert len(str(classify_token_error(400, body))) <= 402

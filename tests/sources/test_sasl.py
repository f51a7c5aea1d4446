"""The SASL messages of the OAuth mechanisms (formats as Dovecot and Postfix accept them)."""

from __future__ import annotations

import base64
import json

import pytest

from postroom.api import (
    ERROR_CHALLENGE_REPLY,
    ErrorChallenge,
    choose_mechanism,
    initial_response,
    oauthbearer_response,
    read_error_challenge,
    xoauth2_response,
)


def test_oauthbearer_as_rfc_7628_spells_it() -> None:
    assert oauthbearer_response("alice@oauth.test", "tok", "127.0.0.1", 11143) == (
        b"n,a=alice@oauth.test,\x01host=127.0.0.1\x01port=11143\x01auth=Bearer tok\x01\x01"
    )


def test_gs2_escapes_comma_and_equals_in_the_user() -> None:
    assert oauthbearer_response("a,b=c", "t", "h", 1).startswith(b"n,a=a=2Cb=3Dc,\x01")


def test_initial_response_picks_the_format() -> None:
    assert initial_response("xoauth2", "u@x", "t", "h", 1) == xoauth2_response("u@x", "t")
    assert initial_response("OAUTHBEARER", "u@x", "t", "h", 1) == oauthbearer_response(
        "u@x", "t", "h", 1
    )
    with pytest.raises(ValueError, match="not an OAuth SASL mechanism"):
        initial_response("PLAIN", "u@x", "t", "h", 1)


@pytest.mark.parametrize(
    ("user", "token"),
    [
        ("", "SECRET.tok"),
        ("a\x01b", "SECRET.tok"),
        ("a\r\nb", "SECRET.tok"),
        ("u", ""),
        ("u", "SECRET tok"),
        ("u", "SECRET\x01tok"),
    ],
)
def test_a_field_that_would_break_the_message_is_refused(user: str, token: str) -> None:
    with pytest.raises(ValueError) as raised:
        xoauth2_response(user, token)
    assert "SECRET" not in str(raised.value)  # the token is never quoted


def test_port_out_of_range() -> None:
    with pytest.raises(ValueError):
        oauthbearer_response("u", "t", "h", 70000)


@pytest.mark.parametrize(
    ("offered", "forced", "chosen"),
    [
        (["PLAIN", "XOAUTH2", "OAUTHBEARER"], None, "OAUTHBEARER"),
        (["plain", "xoauth2"], None, "XOAUTH2"),
        (["PLAIN", "LOGIN"], None, None),
        (["XOAUTH2", "OAUTHBEARER"], "XOAUTH2", "XOAUTH2"),
        (["OAUTHBEARER"], "XOAUTH2", None),  # forced but not offered: no silent switch
        (["XOAUTH2", "OAUTHBEARER"], "PLAIN XOAUTH2", "XOAUTH2"),
    ],
)
def test_choose_mechanism(offered: list[str], forced: str | None, chosen: str | None) -> None:
    assert choose_mechanism(offered, forced) == chosen


def encoded(obj: object) -> bytes:
    return base64.b64encode(json.dumps(obj).encode())


def test_error_challenges_of_both_mechanisms() -> None:
    xoauth2 = read_error_challenge(encoded({"status": "401", "schemes": "bearer", "scope": "mail"}))
    assert xoauth2 == ErrorChallenge("401", "mail", "bearer")
    assert xoauth2.describe() == "token refused by the server (status 401, scope mail)"
    bearer = read_error_challenge(encoded({"status": "invalid_token"}).decode())
    assert bearer == ErrorChallenge("invalid_token")
    assert ERROR_CHALLENGE_REPLY == b"\x01"


@pytest.mark.parametrize(
    "data",
    [b"", b"not base64!", base64.b64encode(b"\xff\xfe"), encoded([1, 2]), encoded({"x": 1}),
     b"A" * 10000],
)
def test_anything_else_is_not_an_error_challenge(data: bytes) -> None:
    assert read_error_challenge(data) is None

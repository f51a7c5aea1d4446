"""Choosing the SASL mechanism and what each one says (no connection)."""

from __future__ import annotations

import pytest

from postroom.drivers import Credentials
from postroom_smtp import sasl


def test_password_mechanisms_prefer_the_named_one_then_the_other() -> None:
    creds = Credentials("u", "p", "LOGIN")
    assert sasl.choose(creds, ["PLAIN", "LOGIN"], "h", 587)[0] == "LOGIN"
    assert sasl.choose(creds, ["PLAIN"], "h", 587)[0] == "PLAIN"
    assert sasl.choose(Credentials("u", "p"), ["login", "cram-md5"], "h", 587)[0] == "LOGIN"
    with pytest.raises(sasl.NoUsableMechanism, match="offers AUTH CRAM-MD5"):
        sasl.choose(creds, ["CRAM-MD5"], "h", 587)


def test_plain_and_login_responses() -> None:
    _name, plain = sasl.choose(Credentials("u", "pä"), ["PLAIN"], "h", 587)
    assert plain(None) == "\0u\0pä"
    _name, login = sasl.choose(Credentials("u", "p", "LOGIN"), ["LOGIN"], "h", 587)
    assert login(None) is None  # no initial response
    assert [login(b"Username:"), login(b"Password:")] == ["u", "p"]


def test_xoauth2_needs_the_server_to_offer_it() -> None:
    creds = Credentials("a@example.test", "tok", "XOAUTH2")
    with pytest.raises(sasl.NoUsableMechanism, match="not XOAUTH2"):
        sasl.choose(creds, ["PLAIN", "LOGIN"], "h", 587)
    name, responder = sasl.choose(creds, ["LOGIN", "XOAUTH2"], "h", 587)
    assert name == "XOAUTH2"
    assert responder(None) == "user=a@example.test\x01auth=Bearer tok\x01\x01"
    assert responder(b'{"status":"401"}') == ""
    assert responder.last_challenge == b'{"status":"401"}'


def test_oauthbearer_gs2_header_host_and_port() -> None:
    creds = Credentials("a@example.test", "tok", "BEARER")
    name, responder = sasl.choose(creds, ["OAUTHBEARER"], "smtp.example.test", 587)
    assert name == "OAUTHBEARER"
    assert responder(None) == (
        "n,a=a@example.test,\x01host=smtp.example.test\x01port=587\x01auth=Bearer tok\x01\x01"
    )
    assert responder(b"error") == "\x01"


def test_secrets_stay_out_of_reprs() -> None:
    _name, plain = sasl.choose(Credentials("u", "hunter2"), ["PLAIN"], "h", 587)
    _name, xoauth = sasl.choose(Credentials("u", "tok3n", "XOAUTH2"), ["XOAUTH2"], "h", 587)
    assert "hunter2" not in repr(plain) and "tok3n" not in repr(xoauth)


def test_unknown_mechanism() -> None:
    with pytest.raises(sasl.NoUsableMechanism, match="does not implement the mechanism GSSAPI"):
        sasl.choose(Credentials("u", "p", "GSSAPI"), ["GSSAPI"], "h", 587)

"""Line ends and MAIL/RCPT parameters: the pure rules, no connection."""

from __future__ import annotations

from typing import Any

import pytest

from postroom_smtp.envelope import (
    EnvelopeError,
    Transaction,
    normalise_line_ends,
    plan_transaction,
)

DSN_SERVER = {"size": "10240000", "dsn": "", "8bitmime": "", "pipelining": ""}
PLAIN_SERVER = {"size": "", "8bitmime": ""}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n"),
        (b"a\r\nb\nc\rd", b"a\r\nb\r\nc\r\nd"),
        (b"\n\n", b"\r\n\r\n"),
        (b"\r\n\n", b"\r\n\r\n"),
        (b"x\n.\ny", b"x\r\n.\r\ny"),  # dots are smtplib's business, after this
        (b"no line end", b"no line end"),
        (b"", b""),
    ],
)
def test_line_ends_become_one_crlf_each(raw: bytes, expected: bytes) -> None:
    assert normalise_line_ends(raw) == expected


def test_crlf_input_is_returned_as_is_without_a_copy() -> None:
    data = b"Subject: x\r\n\r\n" + b"line\r\n" * 1000
    assert normalise_line_ends(data) is data


def test_never_cr_cr_lf() -> None:
    mixed = b"a\r\n" * 3 + b"b\n" * 3 + b"c\r" * 3
    out = normalise_line_ends(mixed)
    assert b"\r\r" not in out
    assert out.count(b"\r\n") == 9 == out.count(b"\n") == out.count(b"\r")


def plan(**kw: Any) -> Transaction:
    args: dict[str, Any] = {
        "mail_from": "agent1@example.test",
        "rcpt_to": ["agent2@example.test"],
        "mail_options": [],
        "rcpt_options": [],
        "features": DSN_SERVER,
        "size": 100,
        "eight_bit": False,
    }
    args.update(kw)
    return plan_transaction(**args)


def test_dsn_parameters_pass_when_the_server_announces_dsn() -> None:
    t = plan(mail_options=["RET=HDRS", "ENVID=abc"], rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    assert t.mail_options == ("SIZE=100", "RET=HDRS", "ENVID=abc")
    assert t.rcpt_options == ("NOTIFY=SUCCESS,FAILURE",)
    assert t.dropped == ()


def test_dsn_parameters_are_dropped_when_the_server_has_no_dsn() -> None:
    t = plan(
        features=PLAIN_SERVER,
        mail_options=["RET=FULL", "ENVID=abc", "X-KEEP=1"],
        rcpt_options=["NOTIFY=NEVER", "ORCPT=rfc822;a@b"],
    )
    assert t.mail_options == ("SIZE=100", "X-KEEP=1")
    assert t.rcpt_options == ()
    assert t.dropped == ("RET=FULL", "ENVID=abc", "NOTIFY=NEVER", "ORCPT=rfc822;a@b")


def test_helo_only_server_gets_no_parameters_we_add() -> None:
    t = plan(features={}, eight_bit=True)
    assert t.mail_options == ()


def test_size_is_declared_and_a_message_over_the_limit_is_refused_before_sending() -> None:
    assert plan(size=5000).mail_options[0] == "SIZE=5000"
    with pytest.raises(EnvelopeError, match="at most 10240000") as info:
        plan(size=10240001)
    assert info.value.permanent


def test_a_size_given_by_a_plugin_is_replaced_by_the_real_one() -> None:
    assert plan(mail_options=["SIZE=1"]).mail_options == ("SIZE=100",)


def test_8bit_content_declares_8bitmime_once() -> None:
    assert plan(eight_bit=True).mail_options == ("SIZE=100", "BODY=8BITMIME")
    given = plan(eight_bit=True, mail_options=["body=8bitmime"]).mail_options
    assert given == ("SIZE=100", "body=8bitmime")


def test_non_ascii_addresses_need_smtputf8() -> None:
    with pytest.raises(EnvelopeError, match="SMTPUTF8"):
        plan(rcpt_to=["jörg@example.test"])
    t = plan(rcpt_to=["jörg@example.test"], features={**DSN_SERVER, "smtputf8": ""})
    assert "SMTPUTF8" in t.mail_options
    assert "BODY=8BITMIME" in t.mail_options


@pytest.mark.parametrize(
    "bad",
    [
        {"mail_from": "a@b\r\nRCPT TO:<evil@x>"},
        {"rcpt_to": ["ok@x", "b@c\nDATA"]},
        {"rcpt_to": []},
        {"rcpt_to": [""]},
        {"rcpt_to": ["<>"]},
        {"mail_options": ["RET=HDRS ENVID=x"]},
        {"mail_options": ["RET=HDRS\r\nRSET"]},
        {"rcpt_options": ["=x"]},
        {"rcpt_options": ["NOTIFY="]},
    ],
)
def test_injection_and_malformed_envelopes_are_refused_for_good(bad: dict[str, object]) -> None:
    with pytest.raises(EnvelopeError) as info:
        plan(**bad)
    assert info.value.permanent


def test_display_names_are_taken_off_and_the_null_sender_is_kept() -> None:
    t = plan(mail_from="<>", rcpt_to=["Agent Two <agent2@example.test>", " agent3@example.test "])
    assert t.mail_from == ""
    assert t.rcpt_to == ("agent2@example.test", "agent3@example.test")

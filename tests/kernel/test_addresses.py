"""Addresses of send requests: RFC 5322 address lists read strictly, in linear time."""

from __future__ import annotations

import pytest

from postroom.addresses import AddressError, Mailbox, parse_address_list, parse_mailbox
from tests.linear import assert_linear


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a@x.example", ["a@x.example"]),
        ("a@x.example, b@y.example", ["a@x.example", "b@y.example"]),
        ("  a@x.example ,\tb@y.example  ", ["a@x.example", "b@y.example"]),
        ("Anna <a@x.example>", ["Anna <a@x.example>"]),
        ("<a@x.example>", ["a@x.example"]),
        ('"Doe, John" <j@x.example>, k@y.example', ['"Doe, John" <j@x.example>', "k@y.example"]),
        ("J. Smith <j@x.example>", ['"J. Smith" <j@x.example>']),
        ("Jürgen   Müller <j@x.example>", ["Jürgen Müller <j@x.example>"]),
        ('"a b"@x.example', ['"a b"@x.example']),
        ("postroom@localhost", ["postroom@localhost"]),
    ],
)
def test_address_lists_are_split_into_mailboxes(text: str, expected: list[str]) -> None:
    assert [str(m) for m in parse_address_list(text)] == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no address"),
        ("   ", "no address"),
        ("not an address", "no domain is ever added"),
        ("not", "no domain is ever added"),
        ("a@", "not a valid address"),
        ("@x.example", "not a valid address"),
        ("a@b..example", "not a valid address"),
        ("a.@x.example", "not a valid address"),
        ("a@x.example b@y.example", "not a valid address"),
        ("a@x.example <b@y.example>", "not a valid address"),
        ("a@x.example,", "empty address after the last comma"),
        ("a@x.example,,b@y.example", "empty address"),
        (",a@x.example", "empty address"),
        ("undisclosed-recipients:;", "groups are not accepted"),
        ("team: a@x.example;", "groups are not accepted"),
        ("a@x.example (Anna)", "comments are not accepted"),
        ("a@[192.0.2.1]", "address literals are not accepted"),
        ("a@192.0.2.1", "bare IP address"),
        ("a@-x.example", "not a host name"),
        ("a@x_y.example", "not a host name"),
        ('""@x.example', "empty local part"),
        ("x" * 65 + "@x.example", "over 64 bytes"),
        ('"unterminated <a@x.example>', "not a valid address"),
        ("a\r\n@x.example", "not a valid address"),
        ("Anna\u2028 <a@x.example>", "not a valid address"),
    ],
)
def test_what_is_not_an_address_is_refused(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=why):
        parse_address_list(text)


def test_internationalised_domains_become_ascii_and_utf8_local_parts_stay() -> None:
    [idn] = parse_address_list("Jürgen <j@bücher.example>")
    assert idn == Mailbox("Jürgen", "j", "xn--bcher-kva.example")
    assert idn.addr_spec == "j@xn--bcher-kva.example" and not idn.needs_smtputf8
    # IDNA 2008 (not 2003, which would turn ß into ss: another domain)
    assert parse_mailbox("a@straße.de").domain == "xn--strae-oqa.de"
    utf8 = parse_mailbox("jürgen@example.de")
    assert utf8.addr_spec == "jürgen@example.de" and utf8.needs_smtputf8
    with pytest.raises(AddressError, match="not a valid host name"):
        parse_mailbox("a@xn--a.example\u0301")


def test_quoted_local_parts_are_quoted_again_only_when_needed() -> None:
    assert parse_mailbox('"plain"@x.example').addr_spec == "plain@x.example"
    assert parse_mailbox('"a\\"b"@x.example').addr_spec == '"a\\"b"@x.example'
    assert parse_mailbox('"a..b"@x.example').addr_spec == '"a..b"@x.example'


def test_a_from_is_one_mailbox() -> None:
    with pytest.raises(AddressError, match="one address expected, found 2"):
        parse_mailbox("a@x.example, b@y.example")


# The standard library's address parser is quadratic on runs of '"a' (the issue:
# 60 KB in 21 s); these families must stay linear, and each result is checked.


def test_runs_of_quote_pairs_are_linear() -> None:
    def make(n: int) -> str:  # an odd number of quotes: the last one is never closed
        return '"a' * (2 * n + 1) + " <x@y.example>"

    def run(text: str) -> None:
        with pytest.raises(AddressError):
            parse_address_list(text)

    assert_linear(make, run, start=2000)
    assert parse_mailbox('"a"' * 3 + " <x@y.example>").display_name == "aaa"


def test_runs_of_blanks_before_a_missing_bracket_are_linear() -> None:
    def make(n: int) -> str:
        return "Anna" + " " * n + "x"

    def run(text: str) -> None:
        with pytest.raises(AddressError):
            parse_address_list(text)

    assert_linear(make, run, start=4000)


def test_long_lists_are_linear() -> None:
    def make(n: int) -> str:
        return ", ".join(f"Person {i} <p{i}@x.example>" for i in range(n))

    found = assert_linear(make, parse_address_list, start=1000)
    assert len(parse_address_list(make(found.n))) == found.n

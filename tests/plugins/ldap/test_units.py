"""The plugin's parts without a directory: the filter, the options, the map, cache, circuit."""

from __future__ import annotations

from typing import Any

import pytest
from ldap3.utils.ciDict import CaseInsensitiveDict
from twisted.internet import task

from postroom.api import Backoff, ConfigError
from postroom.testing import TestKernel, assert_linear, site_config
from postroom_ldap import settings as settings_module
from postroom_ldap.cache import MISS, ContactCache
from postroom_ldap.circuit import Circuit
from postroom_ldap.contacts import MAX_VALUE, Contact, first_value, normalise
from postroom_ldap.search import _contact, search_filter
from tests.plugins.ldap.conftest import LDAP

BASE = {"url": "ldaps://dir.example.com", "base": "ou=people,dc=example,dc=com"}


def settings(**section: Any) -> settings_module.Settings:
    config = site_config({"plugins": ["ldap"], "ldap-contacts": {**BASE, **section}},
                         plugins=[LDAP])  # fmt: skip
    found = settings_module.read(config)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("a@b.example", "(mail=a@b.example)"),
        ("*)(uid=*", "(mail=\\2a\\29\\28uid=\\2a)"),
        ("*@*", "(mail=\\2a@\\2a)"),
        ("x\\y@b.example", "(mail=x\\5cy@b.example)"),
        ("nul\x00@b.example", "(mail=nul\\00@b.example)"),
    ],
)
def test_the_address_is_escaped_into_the_filter(address: str, expected: str) -> None:
    assert search_filter("(mail={address})", address) == expected


def test_every_placeholder_is_replaced_and_nothing_else() -> None:
    template = "(&(objectClass=user)(|(mail={address})(proxyAddresses=smtp:{address})))"
    assert search_filter(template, "*") == (
        "(&(objectClass=user)(|(mail=\\2a)(proxyAddresses=smtp:\\2a)))"
    )


def test_escaping_a_hostile_address_takes_linear_time() -> None:
    assert_linear(lambda n: "*)(" * n, lambda address: search_filter("(mail={address})", address),
                  start=20_000, max_size=1 << 20)  # fmt: skip


def test_without_a_url_the_plugin_does_nothing() -> None:
    with TestKernel([LDAP], {"plugins": ["ldap"]}) as kernel:
        [interaction] = kernel.ingest(b"From: a@b.example\r\n\r\nhi\r\n")
        assert not [k for k in interaction.attached_data if "Contact" in k or "ldap" in k]
        assert settings_module.read(kernel.config) is None


def test_the_options_are_read() -> None:
    found = settings(**{"bind-dn": "cn=r,dc=example,dc=com", "bind-password": "s3cret",
                        "attributes": {"givenName": "FirstName", "employeeID": "Id"},
                        "timeout": "00:00:01.5", "cache-ttl": "00:10:00"})  # fmt: skip
    assert (found.host, found.port, found.ldaps, found.start_tls) == (
        "dir.example.com", 636, True, False)  # fmt: skip
    assert found.attributes == (("givenName", "FirstName"), ("employeeID", "Id"))
    assert found.timeout == 1.5 and found.cache_ttl == 600.0
    assert found.filter == "(mail={address})" and found.id_attribute is None
    assert "s3cret" not in repr(found)
    assert settings(url="ldap://dir.example.com").port == 389


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"url": "https://dir.example.com"}, "expected ldap://host or ldaps://host"),
        ({"url": "ldap://u:p@dir.example.com"}, "give only ldap[s]://host[:port]"),
        ({"start-tls": True}, "StartTLS is for ldap:// only"),
        ({"base": None}, "base: required"),
        ({"bind-password": "x"}, "given without bind-dn"),
        ({"filter": "(mail=someone)"}, "must contain {address}"),
        ({"filter": "mail={address}"}, "expected an LDAP filter in parentheses"),
        ({"filter": "(mail={address})(x=y)"}, "not an LDAP filter"),
        ({"attributes": {"given Name": "FirstName"}}, "is not an attribute name"),
        ({"attributes": {"givenName": "First.Name"}}, "is not a name"),
        ({"retry-initial": 60, "retry-max": 30}, "shorter than retry-initial"),
    ],
)
def test_options_that_cannot_work_are_refused(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(**section)
    assert message in str(refused.value)


def test_the_attribute_map_picks_first_values_case_insensitively() -> None:
    found = settings(**{"attributes": {"givenName": "FirstName", "sn": "LastName",
                                       "objectGUID": "Guid", "mobile": "Mobile"},
                        "id-attribute": "employeeNumber"})  # fmt: skip
    attributes = CaseInsensitiveDict()
    attributes.update({"GIVENNAME": ["", "Ann"], "sn": "Lee", "objectGUID": [b"\x01\xff"],
                       "employeeNumber": ["E-7"], "mobile": []})  # fmt: skip
    contact = _contact(found, {"dn": "uid=ann,dc=example,dc=com", "attributes": attributes})
    assert contact == Contact("uid=ann,dc=example,dc=com", "E-7",
                              (("FirstName", "Ann"), ("LastName", "Lee"), ("Guid", "01ff")))
    assert contact.attached() == {"ContactId": "E-7", "Contact.FirstName": "Ann",
                                  "Contact.LastName": "Lee", "Contact.Guid": "01ff"}
    assert contact.field_values() == {"ContactId": "E-7", "FirstName": "Ann", "LastName": "Lee",
                                      "Guid": "01ff"}  # fmt: skip


def test_long_values_are_cut() -> None:
    assert first_value({"cn": ["x" * 5000]}, "cn") == "x" * MAX_VALUE


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Jürgen <Juergen@Customer.Example>", "juergen@customer.example"),
        ("  A@B.example ", "a@b.example"),
        ("no-at-sign", None),
        ("", None),
        (None, None),
        ("a" * 400 + "@b.example", None),
        ("<" * 5000, None),
    ],
)
def test_addresses_are_normalised(given: str | None, expected: str | None) -> None:
    assert normalise(given) == expected


def test_the_cache_keeps_contacts_and_unknowns_for_their_own_times() -> None:
    clock = task.Clock()
    cache = ContactCache(size=2, ttl=100, negative_ttl=10, now=clock.seconds)
    ann = Contact("uid=ann", "1")
    cache.put("ann@x.example", ann)
    cache.put("nobody@x.example", None)
    assert cache.get("ann@x.example") == ann and cache.get("nobody@x.example") is None
    assert cache.get("other@x.example") is MISS
    clock.advance(10)
    assert cache.get("nobody@x.example") is MISS and cache.get("ann@x.example") == ann
    clock.advance(90)
    assert cache.get("ann@x.example") is MISS


def test_the_cache_is_bounded() -> None:
    clock = task.Clock()
    cache = ContactCache(size=3, ttl=100, negative_ttl=100, now=clock.seconds)
    for n in range(10):
        cache.put(f"{n}@x.example", None)
    assert len(cache) == 3
    assert cache.get("9@x.example") is None and cache.get("0@x.example") is MISS


def test_the_circuit_opens_backs_off_and_lets_one_trial_through() -> None:
    clock = task.Clock()
    circuit = Circuit(Backoff(initial=30, maximum=100, jitter=0.0), clock)
    assert circuit.allows() and circuit.state == "closed"
    assert circuit.failed("refused") == 30
    assert circuit.state == "open" and not circuit.allows()
    clock.advance(29.9)
    assert not circuit.allows()
    clock.advance(0.1)
    assert circuit.allows() and circuit.state == "trial"
    assert not circuit.allows()  # one trial at a time
    assert circuit.failed("refused again") == 60
    clock.advance(60)
    assert circuit.allows()
    assert circuit.failed("and again") == 100  # capped
    clock.advance(100)
    assert circuit.allows()
    assert circuit.succeeded() is True
    assert circuit.state == "closed" and circuit.allows() and circuit.succeeded() is False

"""``postroom ldap-lookup``: the directory's connection check, as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.plugins.ldap.conftest import site, slapd_stopped


def lookup(quickstart: Path, section: dict[str, Any] | None, address: str) -> Any:
    config = yaml.safe_load(quickstart.read_text())
    if section is not None:
        config.update(section)
    quickstart.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "postroom.cli.main", "ldap-lookup", "-c", str(quickstart),
         address],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_it_prints_what_an_address_would_get(
    ldap_server: dict[str, Any], quickstart: Path
) -> None:
    done = lookup(quickstart, site(ldap_server), "Juergen.Mueller@customer.example")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "directory": ldap_server["ldaps_url"],
        "address": "juergen.mueller@customer.example",
        "dn": "uid=jmueller,ou=people,dc=example,dc=test",
        "attached": {"ContactId": "C-1001", "Contact.FirstName": "Jürgen",
                     "Contact.LastName": "Müller", "Contact.PhoneNumber": "+49 30 1234567"},
    }  # fmt: skip


def test_a_directory_that_does_not_answer_exits_1_with_the_reason(
    ldap_server: dict[str, Any], quickstart: Path
) -> None:
    with slapd_stopped(ldap_server):
        done = lookup(quickstart, site(ldap_server), "juergen.mueller@customer.example")
    assert done.returncode == 1
    assert "Connection refused" in done.stderr
    assert ldap_server["bind_password"] not in done.stderr + done.stdout


def test_a_site_without_a_directory_exits_2(ldap_server: dict[str, Any], quickstart: Path) -> None:
    done = lookup(quickstart, {"plugins": ["ldap"]}, "a@b.example")
    assert done.returncode == 2 and "sets no ldap-contacts.url" in done.stderr

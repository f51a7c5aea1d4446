"""The real slapd of the LDAP plugin's tests (``ldap_server``) and kernels over it.

``ldap_server`` is the state of ``contrib/scripts/ldap-test-server`` for
POSTROOM_TEST_LDAP_PORT_BASE: read from POSTROOM_TEST_LDAP_STATE when `make
test` started it, else started here (as the mail servers' fixture does). When
it cannot be had, every test that uses it fails with the reason: nothing is
skipped. Tests using it carry the ``servers`` marker (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from postroom.testing import TestKernel
from postroom_ldap.directory import Directory
from postroom_ldap.plugin import plugin
from tests.ldap_server import ENV_STATE, run_slapd, stop_slapd

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "contrib" / "scripts" / "ldap-test-server"
LDAP = EntryPoint(name="ldap", value="postroom_ldap.plugin:plugin", group="postroom.plugins")


def _start() -> dict[str, Any]:
    given = os.environ.get(ENV_STATE)
    if given:
        try:
            state: dict[str, Any] = json.loads(Path(given).read_text())
            return state
        except (OSError, ValueError) as exc:
            pytest.fail(f"{ENV_STATE}={given}: {exc}", pytrace=False)
    done = subprocess.run(
        [str(SCRIPT), "start", "--json"], capture_output=True, text=True, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"the LDAP test server is not available: {done.stderr.strip()[-2000:]}",
                    pytrace=False)  # fmt: skip
    started: dict[str, Any] = json.loads(done.stdout)
    return started


@pytest.fixture(scope="session")
def ldap_server() -> dict[str, Any]:
    """The running slapd's state: url, ldaps_url, bind_dn, bind_password,
    search_base, ca_file (started on first use, left running afterwards)."""
    return _start()


@contextmanager
def slapd_stopped(state: dict[str, Any]) -> Iterator[None]:
    """slapd stopped inside the block, started again (same data) after it."""
    stop_slapd(state)
    try:
        yield
    finally:
        run_slapd(state)


def site(state: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A site configuration with the ``ldap-contacts`` section for *state*."""
    section: dict[str, Any] = {
        "url": state["ldaps_url"],
        "ca-file": state["ca_file"],
        "bind-dn": state["bind_dn"],
        "bind-password": state["bind_password"],
        "base": state["search_base"],
        "id-attribute": "employeeNumber",
        "attributes": {"givenName": "FirstName", "sn": "LastName",
                       "telephoneNumber": "PhoneNumber"},
    }  # fmt: skip
    section.update(overrides)
    return {"plugins": ["ldap"], "ldap-contacts": section}


def directory_of(kernel: TestKernel) -> Directory:
    found = plugin.directory(kernel.kernel.ctx)
    assert found is not None, "the ldap plugin has no directory configured"
    return found


def mail(sender: str, subject: str = "Invoice") -> bytes:
    return (
        f"From: {sender}\r\nTo: support@centre.example\r\nSubject: {subject}\r\n"
        "Message-ID: <" + subject.replace(" ", ".") + "@customer.example>\r\n\r\nHello\r\n"
    ).encode()

"""contrib/scripts/ldap-test-server: idempotent, loopback only, and a directory that
demands the service account (so the plugin's bind is what the tests exercise)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from ldap3 import Connection, Server

from tests.ldap_server import PEOPLE, current_pid, layout_of
from tests.plugins.ldap.conftest import SCRIPT


def test_start_again_reuses_the_running_slapd(ldap_server: dict[str, Any]) -> None:
    pid = current_pid(layout_of(ldap_server))
    done = subprocess.run([str(SCRIPT), "start", "--json"], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    assert again["started"] == ldap_server["started"] and current_pid(layout_of(again)) == pid
    assert again["url"].startswith("ldap://127.0.0.1:")
    assert again["ldaps_url"].startswith("ldaps://127.0.0.1:")


def test_only_the_service_account_reads_the_people(ldap_server: dict[str, Any]) -> None:
    server = Server(ldap_server["url"])
    anonymous = Connection(server)
    assert anonymous.bind() is False  # disallow bind_anon
    reader = Connection(server, ldap_server["bind_dn"], ldap_server["bind_password"])
    assert reader.bind()
    reader.search(ldap_server["search_base"], "(objectClass=inetOrgPerson)", attributes=["uid"])
    assert sorted(str(e.uid) for e in reader.entries) == sorted(PEOPLE)
    reader.unbind()

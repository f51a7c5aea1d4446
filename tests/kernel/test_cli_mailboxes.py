"""``postroom mailboxes``: the states a gateway kept, and grants waiting for an administrator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from twisted.internet import task

from postroom.kernel import Kernel
from postroom.runner import InlineRunner
from tests.conftest import run
from tests.kernel.test_cli import postroom

SITE = """\
store: {{driver: sqlite, path: {db}}}
pop-client:
  - name: local
    type: maildir
    folder-path: {maildir}
  - name: sales
    type: imap
    server: 127.0.0.1
    port: 1
    mailbox: sales@contoso.test
    password: sales-password-1
    auth: azure-ropc
    directory-id: contoso.test
    client-id: app-1
    token-endpoint: https://127.0.0.1:1/token
  - name: support
    type: imap
    server: 127.0.0.1
    port: 1
    mailbox: support@contoso.test
    password: support-password-2
smtp-client:
  server-type: file
  folder-path: {outbox}
"""


def make_site(tmp_path: Path) -> Path:
    (tmp_path / "maildir").mkdir()
    site = tmp_path / "site.yaml"
    site.write_text(
        SITE.format(
            db=tmp_path / "store.db", maildir=tmp_path / "maildir", outbox=tmp_path / "out"
        ),
        encoding="utf-8",
    )
    return site


def test_states_and_a_grant_needing_reauthorisation(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    clock = task.Clock()
    clock.advance(1_800_000_000)
    kernel = Kernel(site, clock=clock, runner=InlineRunner())
    run(kernel.open())
    # what a gateway would have kept: support refused, local connected
    later = datetime.fromtimestamp(1_800_000_060, UTC)
    refused = "login refused: [AUTH]"
    run(kernel.store.save_mailbox_state("support", "auth-failed", refused, 2, later))
    run(kernel.store.save_mailbox_state("local", "connected"))
    # and what the azure-ropc driver marks when the identity provider refuses the grant
    sales = kernel.config.mailbox("sales")
    driver = kernel.build_source(sales).context.authenticator
    run(kernel.oauth.mark(driver.grant_key(), driver.configured(),
                          "invalid_grant: AADSTS50076: MFA required"))  # fmt: skip
    run(kernel.close())

    done = postroom("mailboxes", "-c", str(site), "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert list(rows) == ["local", "sales", "support", "smtp-client"]
    assert rows["local"] | {"since": None} == {
        "name": "local", "kind": "maildir", "auth": "-", "state": "connected", "reason": None,
        "failures": 0, "next_attempt": None, "since": None,
    }  # fmt: skip
    assert rows["sales"]["state"] == "needs-reauthorisation"
    assert rows["sales"]["auth"] == "azure-ropc" and "AADSTS50076" in rows["sales"]["reason"]
    assert rows["support"]["state"] == "auth-failed" and rows["support"]["failures"] == 2
    assert rows["support"]["next_attempt"] == later.isoformat()
    assert rows["smtp-client"]["state"] == "unknown"

    table = postroom("mailboxes", "-c", str(site))
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "AUTH", "STATE", "FAILURES", "NEXT", "ATTEMPT",
                                "SINCE"]  # fmt: skip
    assert "sales: invalid_grant: AADSTS50076: MFA required" in lines
    assert "support: login refused: [AUTH]" in lines
    assert "sales-password-1" not in table.stdout + done.stdout


def test_a_new_password_in_the_file_clears_the_mark(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    kernel = Kernel(site, clock=task.Clock(), runner=InlineRunner())
    run(kernel.open())
    driver = kernel.build_source(kernel.config.mailbox("sales")).context.authenticator
    run(kernel.oauth.mark(driver.grant_key(), driver.configured(), "invalid_grant: revoked"))
    run(kernel.close())
    site.write_text(site.read_text().replace("sales-password-1", "sales-password-new"))
    done = postroom("mailboxes", "-c", str(site), "--json")
    rows = {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows["sales"]["state"] == "unknown" and rows["sales"]["reason"] is None

"""The kernel builds auth drivers from the drivers' ``needs_auth``, naming none itself."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import task

from postroom.api import AUTH_GROUP, InlineRunner, Kernel
from postroom_auth_basic import BasicAuthenticator
from postroom_imap.source import IMAPSource

SITE = """\
store: {driver: memory}
pop-client:
  - {name: local, type: maildir, folder-path: maildir, auth: not-installed}
  - {name: remote, type: imap, server: imap.test, mailbox: agent, password: pw}
smtp-client:
  server-type: file
  folder-path: outbox
  enable-authentication: true
  auth: not-installed-either
"""


def test_auth_drivers_only_for_drivers_that_log_in(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    clock = task.Clock()
    kernel = Kernel(site, reactor=clock, clock=clock, runner=InlineRunner())
    # maildir and file need none: their (uninstalled) auth drivers are not even loaded
    assert [name for group, name in kernel.drivers if group == AUTH_GROUP] == ["basic"]
    local, remote = kernel.config.mailboxes
    assert kernel.build_source(local).context.authenticator is None
    imap = kernel.build_source(remote)
    assert isinstance(imap, IMAPSource)
    assert isinstance(imap.context.authenticator, BasicAuthenticator)
    assert kernel.build_sender().context.authenticator is None

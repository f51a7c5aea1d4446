"""Fixtures: the kernel's declarations plus stand-ins for the drivers' own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.config.core import kernel_schema
from postroom.config.options import OptionSchema, Scope

EXAMPLE = """\
tenant-id: 101
store: {driver: sqlite, path: var/postroom.db}    # or {driver: postgresql, dsn: "postgresql://..."}
# plugins: [dsn, mdn]          # optional: exactly these hook plugins, in this order; \
absent = all installed
email-processing:
  default-domain: example.com
  maximum-msg-size: 10MB
  enable-message-id-check: true
pop-client:
  - name: support
    type: maildir            # later: pop3 | imap | ews
    folder-path: examples/quickstart/maildir
smtp-client:
  server-type: file          # later: smtp | ews
  folder-path: var/outbox
"""


def driver_options(schema: OptionSchema) -> OptionSchema:
    """What the maildir source, the file sender and a pop3/imap source would declare."""
    from postroom.store.sqlite import SQLiteStore

    with schema.declaring("sqlite"):
        SQLiteStore.postroom_add_options(schema)
    with schema.declaring("maildir"):
        schema.add("folder-path", "path", scope=Scope.MAILBOX, types=("maildir",),
                   required=True, description="Maildir directory.")
    with schema.declaring("file"):
        schema.add("folder-path", "path", scope=Scope.SMTP_CLIENT, types=("file",),
                   required=True, description="Directory the outbound messages are written to.")
    with schema.declaring("postgresql"):
        schema.add("dsn", "secret", scope=Scope.STORE, types=("postgresql",), required=True,
                   description="libpq connection string.")
    with schema.declaring("imap"):
        schema.add("server", scope=Scope.MAILBOX, types=("imap", "pop3"), required=True,
                   description="Host name of the server.")
        schema.add("port", "port", scope=Scope.MAILBOX, types=("imap", "pop3"),
                   description="Port of the server.")
        schema.add("password", "secret", scope=Scope.MAILBOX, types=("imap", "pop3"),
                   description="Password of the mailbox.")
        schema.add("connect-timeout", "duration", scope=Scope.MAILBOX, types=("imap", "pop3"),
                   default="00:00:30", description="Time allowed to connect.")
        schema.add("greeting", scope=Scope.MAILBOX, types=("imap", "pop3"),
                   description="A text option, to check text stays text.")
        schema.add("mail.pop3.disabletop", "bool", scope=Scope.MAILBOX, types=("pop3",),
                   default=False, description="RETR only: for servers whose TOP is broken.")
    return schema


@pytest.fixture
def schema() -> OptionSchema:
    return driver_options(kernel_schema())


@pytest.fixture
def make_schema() -> Callable[[], OptionSchema]:
    """A fresh schema each call (to compare independent renderings)."""
    return lambda: driver_options(kernel_schema())


@pytest.fixture
def example() -> str:
    """The configuration of the issue, as written there."""
    return EXAMPLE


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "postroom.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write

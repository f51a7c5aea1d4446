"""Helpers for the autoreply tests: a site, a real (in-memory) store, a clock, messages.

The plugin runs through the kernel's hook facade as it would in a gateway;
its options come from YAML text validated against the real declarations; the
store is the kernel's own ``memory`` store (SQLite in memory), so the
exchange counting under test is the one a site gets.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from twisted.internet import task

from postroom.config.document import parse_document
from postroom.config.options import OptionSchema
from postroom.config.validator import validate
from postroom.context import Context
from postroom.drivers import load_driver
from postroom.model import Interaction, ParsedMessage, RawRef
from postroom.parsing.limits import ParseLimits
from postroom.parsing.parser import parse_bytes
from postroom.plugins.facade import Hooks
from postroom.plugins.manager import load_plugins
from postroom.runner import InlineRunner
from postroom.store.async_store import AsyncStore
from postroom.store.plugintables import add_plugin_tables
from postroom.store.sql.dialect import to_utc
from postroom.store.sqlite import MemoryStore
from postroom_autoreply import exchanges
from tests.conftest import run
from tests.plugins.analysis import analysed

#: 2023-11-14T22:13:20Z: any fixed instant will do; not the epoch, to catch
#: code that would read the wall clock instead of ctx.clock
START = 1_700_000_000.0

OUR_MAILBOX = "support@centre.example"
CUSTOMER = "customer@example.org"

#: a site with one IMAP mailbox, so the centre has an address of its own
SITE_WITH_MAILBOX = f"""
pop-client:
  - name: support
    type: imap
    server: imap.centre.example
    mailbox: {OUR_MAILBOX}
    password: secret
"""

_counter = itertools.count(1)


def schema() -> tuple[Hooks, OptionSchema]:
    # the installed entry point, loaded the way a site's ``plugins: [autoreply]`` does
    hooks = Hooks(load_plugins(["autoreply"]))
    declared = OptionSchema()
    hooks.add_options(declared)
    for group, name in (("postroom.sources", "imap"), ("postroom.senders", "smtp")):
        hooks.add_options_of(load_driver(group, name), f"{group}:{name}", declared)
    return hooks, declared


class Harness:
    """The built-in plugins plus the installed ``autoreply``, a validated site, a store, a clock."""

    def __init__(self, tmp_path: Path, site: str = "", **email_processing: Any) -> None:
        self.tmp_path = tmp_path
        self.hooks, declared = schema()
        if email_processing:
            lines = "".join(f"  {k}: {v}\n" for k, v in email_processing.items())
            site += "\nemail-processing:\n" + lines
        self.config = validate(parse_document(site, file="site.yaml"), declared)
        self.hooks.configure(self.config)
        self.clock = task.Clock()
        self.clock.advance(START)
        # as the kernel builds it: its clock, the plugins' own tables
        self.driver = MemoryStore(now=lambda: to_utc(self.clock.seconds()))
        add_plugin_tables(self.driver, self.hooks)
        self.driver.open()
        self.store = AsyncStore(self.driver, InlineRunner())
        self.ctx = Context(
            config=self.config, store=self.store, clock=self.clock, runner=InlineRunner()
        )

    def enrich(self, message: ParsedMessage, subtype: str = "InboundNew") -> Interaction:
        """analyze, then enrich as after a classifier decided *subtype*."""
        analysed(self.hooks, message, self.ctx)
        interaction = Interaction(
            subtype=subtype,
            from_addr=message.from_addr,
            subject=message.subject,
            message_id=message.message_id,
        )
        run(self.hooks.enrich(message, interaction, self.ctx))
        assert "_PluginErrors" not in interaction.attached_data, interaction.attached_data
        return interaction

    def committed(self, interaction: Interaction) -> None:
        """The side effects of the commit (``postroom_committed``)."""
        assert run(self.hooks.committed(interaction, self.ctx)) == []

    def sent(self, interaction: Interaction) -> None:
        run(self.hooks.sent(interaction, self.ctx))

    def count(self, address: str, seconds: float = 600) -> int:
        since = self.clock.seconds() - seconds
        return int(run(exchanges.count(self.store, address, since)))

    def exchange(self, address: str, direction: str = "out", n: int = 1) -> None:
        """*n* automatic mails exchanged with *address* now, as if recorded by the hooks."""
        for _ in range(n):
            run(exchanges.record(self.store, address, direction, self.clock.seconds(), new_key()))

    def keep(self, interaction: Interaction) -> Interaction:
        """Commit an inbound interaction to the store, as the pipeline does."""
        raw = self.tmp_path / f"raw-{interaction.id}.eml"
        raw.write_bytes(b"From: x@example.org\r\n\r\nbody\r\n")
        self.driver.commit_fetched("support", f"key-{interaction.id}", RawRef.from_path(raw),
                                   [interaction])  # fmt: skip
        return interaction


def new_key() -> str:
    return f"test-{next(_counter)}"


def message(
    *headers: str,
    subject: str = "Question about my order",
    sender: str = CUSTOMER,
    body: str = "Hello, where is my parcel?",
) -> ParsedMessage:
    """A message parsed by the kernel's parser; *headers* are raw lines (may be folded)."""
    lines = [
        f"From: {sender}",
        f"To: {OUR_MAILBOX}",
        f"Subject: {subject}",
        f"Message-ID: <{new_key()}@example.org>",
        "Date: Tue, 14 Nov 2023 22:13:20 +0000",
        *headers,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    raw = ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode("utf-8")
    return parse_bytes(raw, ParseLimits())


def parse_file(path: Path) -> ParsedMessage:
    return parse_bytes(path.read_bytes(), ParseLimits())

"""The ``split`` plugin: options, the fan-out rule, and its crash safety on SQLite.

Unit tests call the hooks through the facade with a real, validated site
configuration; the crash tests run the real gateway (maildir source, SQLite
store, ``task.Clock`` and an inline runner) with the installed plugin enabled
by name, and break the store or the source at chosen points.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import fail

from postroom import hookimpl
from postroom.config.document import parse_document
from postroom.config.options import OptionSchema
from postroom.config.site import SiteConfig
from postroom.config.validator import validate
from postroom.context import Context
from postroom.drivers.maildir import MaildirSource
from postroom.errors import ConfigError, ConfigErrors
from postroom.kernel import Kernel
from postroom.model import FetchedMessage, Interaction, ParsedMessage, RawRef
from postroom.parsing import ParseLimits, parse_bytes
from postroom.pipeline.inbound import InboundPipeline
from postroom.plugins.facade import Hooks
from postroom.plugins.manager import load_plugins
from postroom.runner import InlineRunner
from postroom.services.gateway import Gateway
from postroom.store.sqlite import SQLiteStore
from postroom_split import plugin
from postroom_split.recipients import unique_recipients
from tests.conftest import run
from tests.hooks.support import make_ctx
from tests.linear import assert_linear
from tests.plugins.analysis import analysed

SPLIT_EP = EntryPoint(name="split", value="postroom_split.plugin", group="postroom.plugins")


def site_yaml(mailbox_options: str = "", *, store: bool = True) -> str:
    """A site with one maildir mailbox, *mailbox_options* added to it."""
    extra = "".join(f"    {line}\n" for line in mailbox_options.splitlines())
    return (
        "tenant-id: 5\n"
        + ("store: {driver: sqlite, path: postroom.db}\n" if store else "")
        + "email-processing: {enable-message-id-check: true}\n"
        "pop-client:\n"
        "  - name: support\n"
        "    type: maildir\n"
        "    folder-path: maildir\n" + extra
    )


SPLIT_ON = "copy-message-to-recipients: true"


def message(to: str, cc: str = "", *, n: int = 1) -> bytes:
    lines = [
        "From: Customer <customer@client.example>",
        f"To: {to}",
        *([f"Cc: {cc}"] if cc else []),
        f"Subject: Order {n}",
        f"Message-ID: <order-{n}@client.example>",
        "Date: Mon, 3 Mar 2025 10:00:00 +0000",
        "",
        "Please deliver on Monday.",
        "",
    ]
    return "\r\n".join(lines).encode()


# ------------------------------------------------------------------ unit level


def configured(options: str = "") -> tuple[Hooks, SiteConfig, Context]:
    """The plugin loaded from its entry point, options from a real site file."""
    hooks = Hooks(load_plugins(["split"], available=[SPLIT_EP]))
    schema = OptionSchema()
    hooks.add_options(schema)
    # driver options (maildir's folder-path) are declared by the driver
    MaildirSource.postroom_add_options(schema)
    config = validate(parse_document(site_yaml(options, store=False), file="site.yaml"), schema)
    hooks.configure(config)
    ctx = make_ctx(config=config).for_mailbox(config.mailbox("support"))
    return hooks, config, ctx


def expand(data: bytes, options: str = SPLIT_ON) -> tuple[Interaction, list[Interaction]]:
    hooks, _config, ctx = configured(options)
    parsed = analysed(hooks, parse_bytes(data, ParseLimits()), ctx)
    original = Interaction(
        to=list(parsed.to), cc=list(parsed.cc), attached_data={"_AttachmentFileNames": "a.pdf"}
    )
    return original, hooks.expand(original, parsed, ctx)


def test_the_entry_point_is_the_plugin_and_it_is_enabled_by_default() -> None:
    assert SPLIT_EP.load() is plugin
    plugins = load_plugins(None, available=[SPLIT_EP])
    assert plugins.order[-1] == "split" and plugins.warnings == []


def test_options_are_per_mailbox_with_the_products_defaults() -> None:
    _hooks, config, _ctx = configured()
    mailbox = config.mailbox("support")
    assert mailbox.get("copy-message-to-recipients") is False
    assert mailbox.get("copy-message-with-header") == "X-Genesys-To"
    assert mailbox.get("inbound-msg-copy-limit") == 10
    declared = {o.name: o for o in config.schema or [] if o.declared_by == "split"}
    assert set(declared) == {
        "copy-message-to-recipients",
        "copy-message-with-header",
        "inbound-msg-copy-limit",
    }
    assert {o.scope.value for o in declared.values()} == {"mailbox"}
    assert all(o.description for o in declared.values())


def test_disabled_by_default_the_interaction_is_left_alone() -> None:
    original, copies = expand(message("a@centre.example, b@centre.example"), options="")
    assert copies == [original] and original.copy_key is None
    assert "X-Genesys-To" not in original.attached_data


def test_one_copy_per_unique_recipient_to_then_cc() -> None:
    original, copies = expand(message(
        "Sales <Sales@Centre.example>, support@centre.example, sales@centre.example",
        "SUPPORT@centre.example, billing@centre.example, <SALES@centre.EXAMPLE>"))  # fmt: skip
    assert [c.attached_data["X-Genesys-To"] for c in copies] == [
        "Sales@Centre.example",
        "support@centre.example",
        "billing@centre.example",
    ]
    assert [c.copy_key for c in copies] == [
        "sales@centre.example",
        "support@centre.example",
        "billing@centre.example",
    ]
    ids = {c.id for c in copies}
    assert len(ids) == 3 and original.id not in ids
    for copy in copies:  # same content; the rest of the attached data kept
        assert copy.to == original.to and copy.cc == original.cc
        assert copy.attached_data["_AttachmentFileNames"] == "a.pdf"
        assert "split.RecipientsDropped" not in copy.attached_data
    copies[0].attached_data["x"] = 1
    copies[0].to.append("z@example.com")
    assert "x" not in copies[1].attached_data and "x" not in original.attached_data
    assert "z@example.com" not in copies[1].to + original.to


def test_the_header_key_is_configurable() -> None:
    _original, copies = expand(
        message("a@centre.example", "b@centre.example"),
        f"{SPLIT_ON}\ncopy-message-with-header: X-Routed-To",
    )
    assert [c.attached_data["X-Routed-To"] for c in copies] == [
        "a@centre.example",
        "b@centre.example",
    ]
    assert all("X-Genesys-To" not in c.attached_data for c in copies)


def recipients(count: int) -> str:
    return ", ".join(f"agent{i:02d}@centre.example" for i in range(count))


@pytest.mark.parametrize(
    ("limit", "count"), [(1, 1), (1, 3), (50, 50), (50, 60), (None, 12), (10, 35)]
)
def test_the_copy_limit(limit: int | None, count: int, caplog: pytest.LogCaptureFixture) -> None:
    options = SPLIT_ON + (f"\ninbound-msg-copy-limit: {limit}" if limit is not None else "")
    caplog.set_level(logging.WARNING, logger="postroom_split")
    _original, copies = expand(message(recipients(count)), options)
    kept = min(count, limit or 10)
    assert [c.copy_key for c in copies] == [f"agent{i:02d}@centre.example" for i in range(kept)]
    dropped = count - kept
    warnings = [r for r in caplog.records if r.name.startswith("postroom_split")]
    if dropped:
        assert {c.attached_data["split.RecipientsDropped"] for c in copies} == {dropped}
        [warning] = warnings
        assert "mailbox support" in warning.getMessage()
        assert f"{dropped} got no copy" in warning.getMessage()
        named = [f"agent{i:02d}@centre.example" for i in range(kept, count)]
        assert all(address in warning.getMessage() for address in named[:20])
        assert all(address not in warning.getMessage() for address in named[20:])
        if dropped > 20:  # the rest counted, not listed: a long To makes no long log line
            assert f"and {dropped - 20} more)" in warning.getMessage()
    else:
        assert all("split.RecipientsDropped" not in c.attached_data for c in copies)
        assert warnings == []


@pytest.mark.parametrize("limit", ["0", "51", "-3", "ten"])
def test_a_limit_outside_1_to_50_is_a_configuration_error(limit: str) -> None:
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        configured(f"{SPLIT_ON}\ninbound-msg-copy-limit: {limit}")
    text = str(info.value)
    assert "inbound-msg-copy-limit" in text and "site.yaml" in text


def test_an_empty_header_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="copy-message-with-header"):
        configured(f"{SPLIT_ON}\ncopy-message-with-header: '  '")


def test_a_single_recipient_gives_one_tagged_copy() -> None:
    original, [copy] = expand(message("Support@Centre.example"))
    assert copy.id != original.id and copy.copy_key == "support@centre.example"
    assert copy.attached_data["X-Genesys-To"] == "Support@Centre.example"


def test_no_recipient_or_a_wrapping_message_is_not_split() -> None:
    original, copies = expand(message("undisclosed-recipients:;"))
    assert copies == [original]
    hooks, _config, ctx = configured(SPLIT_ON)
    wrapped = ParsedMessage(to=["a@centre.example", "b@centre.example"],
                            wrapping_reason="NUL bytes in the header block")  # fmt: skip
    interaction = Interaction()
    assert hooks.expand(interaction, wrapped, ctx) == [interaction]


def test_expand_reads_the_analysed_recipients_not_the_message() -> None:
    hooks, _config, ctx = configured(SPLIT_ON)
    parsed = analysed(hooks, parse_bytes(message("a@centre.example, b@centre.example"),
                                         ParseLimits()), ctx)  # fmt: skip
    assert parsed.analysis["split.recipients"] == ("a@centre.example", "b@centre.example")
    parsed.to, parsed.headers = [], []  # nothing left to read
    copies = hooks.expand(Interaction(), parsed, ctx)
    assert [c.copy_key for c in copies] == ["a@centre.example", "b@centre.example"]


def test_a_message_that_was_not_analysed_stops_the_split_loudly() -> None:
    hooks, _config, ctx = configured(SPLIT_ON)
    parsed = parse_bytes(message("a@centre.example, b@centre.example"), ParseLimits())
    with pytest.raises(plugin.NotAnalysed, match=r"no analysis under 'split\.recipients'"):
        hooks.expand(Interaction(), parsed, ctx)
    # a mailbox that does not split never needs it
    hooks, _config, ctx = configured("")
    interaction = Interaction()
    assert hooks.expand(interaction, parsed, ctx) == [interaction]


def test_listing_the_recipients_takes_linear_time() -> None:
    def addressed(n: int) -> ParsedMessage:
        # every address twice, in another case: each is compared once
        to = [f"Agent{i}@Centre.example" for i in range(n)]
        return ParsedMessage(to=to, cc=[a.lower() for a in to])

    found = plugin.postroom_analyze(addressed(3))["split.recipients"]
    assert found == ("Agent0@Centre.example", "Agent1@Centre.example", "Agent2@Centre.example")
    assert_linear(addressed, plugin.postroom_analyze, start=1 << 17)


def test_unique_recipients_rule() -> None:
    assert unique_recipients(["A@x.example", " b@x.example ", "", "group"], ["a@X.example"]) == [
        "A@x.example",
        "b@x.example",
    ]


# ----------------------------------------------------- the real gateway, SQLite


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site" / "postroom.yaml"
    (path.parent / "maildir" / "new").mkdir(parents=True)
    path.write_text(site_yaml(SPLIT_ON), encoding="utf-8")
    return path


def drop(site: Path, name: str, data: bytes) -> None:
    (site.parent / "maildir" / "new" / name).write_bytes(data)


def kernel_for(site: Path, plugins: Sequence[tuple[str, object]] = ()) -> Kernel:
    return Kernel(site, reactor=task.Clock(), clock=task.Clock(), runner=InlineRunner(),
                  plugins=plugins, enabled_plugins=["split"])  # fmt: skip


def run_once(site: Path, plugins: Sequence[tuple[str, object]] = ()) -> tuple[bool, Gateway]:
    gateway = Gateway(kernel_for(site, plugins), once=True)
    gateway.startService()
    try:
        ok = run(gateway.run_once())
    finally:
        run(gateway.stopService())
    return ok, gateway


def stored(site: Path) -> list[Interaction]:
    kernel = kernel_for(site)
    run(kernel.open())
    try:
        found = run(kernel.store.list_interactions(1000))
        for interaction in found:
            interaction.handoff_state = run(kernel.store.handoff_status(interaction.id))[0]
    finally:
        run(kernel.close())
    return list(reversed(found))


FOUR = message(
    "a@centre.example, B@centre.example", "b@centre.example, c@centre.example, d@x.example"
)
FOUR_KEYS = ["a@centre.example", "b@centre.example", "c@centre.example", "d@x.example"]


def test_through_the_pipeline_on_sqlite_each_copy_is_stored(site: Path, tmp_path: Path) -> None:
    kernel = kernel_for(site)
    run(kernel.open())
    try:
        path = tmp_path / "m.eml"
        path.write_bytes(FOUR)
        fetched = FetchedMessage(mailbox="support", source_key="m.eml", raw=RawRef.from_path(path))
        pipeline = InboundPipeline(kernel.hooks, kernel.ctx)
        first = run(pipeline.process(fetched, kernel.config.mailbox("support")))
        again = run(pipeline.process(fetched, kernel.config.mailbox("support")))
    finally:
        run(kernel.close())
    assert [i.copy_key for i in first.result.new] == FOUR_KEYS
    assert first.result.duplicates == [] and again.result.new == []
    assert sorted(i.duplicate_of for i in again.result.duplicates) == sorted(
        i.id for i in first.result.new
    )
    found = stored(site)
    assert sorted(i.copy_key for i in found) == FOUR_KEYS
    assert {i.attached_data["X-Genesys-To"] for i in found} == {
        "a@centre.example",
        "B@centre.example",
        "c@centre.example",
        "d@x.example",
    }
    # one message, one Message-ID, four interactions: copies are exempt from the
    # Message-ID check this site enables
    assert {i.message_id for i in found} == {"<order-1@client.example>"}


@pytest.mark.parametrize("crash_at", [1, 3, 4])
def test_a_crash_in_the_middle_of_the_copies_leaves_none_and_a_retry_makes_each_once(
    site: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    drop(site, "1.eml", FOUR)
    drop(site, "2.eml", message("e@centre.example, f@centre.example", n=2))
    inserts = {"n": 0}
    original = SQLiteStore._insert_interaction

    def failing(self: Any, tx: Any, item: Interaction, *args: Any) -> None:
        inserts["n"] += 1
        if inserts["n"] == crash_at:
            raise OSError("disk I/O error (simulated)")
        original(self, tx, item, *args)

    monkeypatch.setattr(SQLiteStore, "_insert_interaction", failing)
    ok, _gateway = run_once(site)
    assert not ok and inserts["n"] >= crash_at
    # the transaction that failed stored none of its copies, the other all of its own
    after_crash = Counter(i.subject for i in stored(site))
    assert sum(after_crash.values()) < 6
    assert set(after_crash.items()) <= {("Order 1", 4), ("Order 2", 2)}
    monkeypatch.setattr(SQLiteStore, "_insert_interaction", original)
    ok, _gateway = run_once(site)
    assert ok
    found = stored(site)
    keys = Counter((i.subject, i.copy_key) for i in found)
    assert sorted(keys) == sorted(
        [("Order 1", k) for k in FOUR_KEYS]
        + [("Order 2", "e@centre.example"), ("Order 2", "f@centre.example")]
    )
    assert set(keys.values()) == {1}
    assert os.listdir(site.parent / "maildir" / "new") == []


def test_a_lost_acknowledgement_then_a_refetch_makes_no_new_copy(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop(site, "1.eml", FOUR)
    monkeypatch.setattr(MaildirSource, "acknowledge",
                        lambda self, message: fail(ConnectionError("lost")))  # fmt: skip
    run_once(site)
    first = stored(site)
    assert sorted(i.copy_key for i in first) == FOUR_KEYS
    assert os.listdir(site.parent / "maildir" / "new") == ["1.eml"]  # not acknowledged
    monkeypatch.undo()
    ok, gateway = run_once(site)
    assert ok
    health = gateway.mailboxes[0].health
    assert (health.ingested, health.duplicates) == (0, 4)
    assert [i.id for i in stored(site)] == [i.id for i in first]
    assert os.listdir(site.parent / "maildir" / "new") == []


class Routing:
    """Records hand-offs; fails while ``down``."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.seen: list[str] = []

    @hookimpl
    def postroom_submit(self, interaction: Interaction) -> None:
        if self.down:
            raise ConnectionError("routing is down")
        self.seen.append(interaction.id)


def test_every_copy_is_handed_off_after_a_restart(site: Path, tmp_path: Path) -> None:
    # a process that committed the copies and died before handing them off
    kernel = kernel_for(site)
    run(kernel.open())
    path = tmp_path / "m.eml"
    path.write_bytes(FOUR)
    fetched = FetchedMessage(mailbox="support", source_key="m.eml", raw=RawRef.from_path(path))
    committed = run(InboundPipeline(kernel.hooks, kernel.ctx).process(
        fetched, kernel.config.mailbox("support"))).result.new  # fmt: skip
    run(kernel.close())
    assert {i.handoff_state for i in stored(site)} == {"pending"}
    # the next process hands every one of them off
    routing = Routing()
    ok, _gateway = run_once(site, [("routing", routing)])
    assert ok
    assert sorted(routing.seen) == sorted(i.id for i in committed)
    assert {i.handoff_state for i in stored(site)} == {"done"}


def test_copies_whose_hand_off_failed_are_handed_off_by_the_next_process(site: Path) -> None:
    drop(site, "1.eml", FOUR)
    # a long-running gateway whose routing is down stops before any retry is due
    gateway = Gateway(kernel_for(site, [("routing", Routing(down=True))]), once=False)
    gateway.startService()
    run(gateway.stopService())
    assert len(stored(site)) == 4 and {i.handoff_state for i in stored(site)} == {"failed"}
    up = Routing()
    ok, _gateway = run_once(site, [("routing", up)])
    assert ok
    assert sorted(up.seen) == sorted(i.id for i in stored(site))
    assert {i.handoff_state for i in stored(site)} == {"done"}


# ---------------------------------------------------------------- the command


def test_postroom_ingest_json_shows_the_copies(tmp_path: Path) -> None:
    site = tmp_path / "postroom.yaml"
    site.write_text(site_yaml(SPLIT_ON), encoding="utf-8")
    (tmp_path / "m.eml").write_bytes(FOUR)
    postroom = str(Path(sys.executable).with_name("postroom"))
    command = [postroom, "ingest", "-c", str(site), "--mailbox", "support", "--json"]
    result = subprocess.run(
        [*command, str(tmp_path / "m.eml")], capture_output=True, text=True, timeout=300,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [row["attached_data"]["X-Genesys-To"] for row in rows] == [
        "a@centre.example",
        "B@centre.example",
        "c@centre.example",
        "d@x.example",
    ]
    assert len({row["id"] for row in rows}) == 4
    assert {(row["subject"], row["mailbox"]) for row in rows} == {("Order 1", "support")}
    # a second ingest of the same file into the site's store: four duplicates
    again = subprocess.run(
        [*command, str(tmp_path / "m.eml")], capture_output=True, text=True, timeout=300,
        cwd=tmp_path,
    )  # fmt: skip
    rows2 = [json.loads(line) for line in again.stdout.splitlines() if line.strip()]
    assert sorted(row["duplicate_of"] for row in rows2) == sorted(row["id"] for row in rows)


def test_postroom_ingest_names_an_unknown_mailbox(tmp_path: Path) -> None:
    site = tmp_path / "postroom.yaml"
    site.write_text(site_yaml(SPLIT_ON), encoding="utf-8")
    (tmp_path / "m.eml").write_bytes(FOUR)
    postroom = str(Path(sys.executable).with_name("postroom"))
    result = subprocess.run(
        [postroom, "ingest", "-c", str(site), "--mailbox", "sales", str(tmp_path / "m.eml")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no mailbox 'sales' in the site (mailboxes: support)" in result.stderr

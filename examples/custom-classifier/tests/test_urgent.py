"""Tests of the ``urgent`` plugin, through postroom's hooks facade (no gateway needed).

The plugin is loaded the way the kernel loads an installed one, from its entry
point, into a plugin set of its own; its options come from real site
configurations (YAML text), so the declarations are tested too.
"""

from __future__ import annotations

import configparser
import pickle
from collections.abc import Coroutine
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from postroom.config.document import parse_document
from postroom.config.options import OptionSchema
from postroom.config.site import SiteConfig
from postroom.config.validator import validate
from postroom.context import AnalysisContext, Context
from postroom.errors import ConfigError
from postroom.model import Interaction, ParsedMessage
from postroom.plugins.facade import Hooks
from postroom.plugins.manager import load_plugins
from postroom.runner import InlineRunner
from postroom_urgent import plugin
from tests.linear import assert_linear

DISTRIBUTION = Path(__file__).resolve().parents[1]
URGENT = EntryPoint(name="urgent", value="postroom_urgent.plugin", group="postroom.plugins")


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that must complete at once (no reactor here)."""
    d: Deferred[Any] = ensureDeferred(coroutine)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class NoStore:
    """The plugin never touches the store; make sure of it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected store call: {name}")


def kernel_like(site_yaml: str = "") -> tuple[Hooks, SiteConfig, Context]:
    """What a kernel would build: plugins (only this one installed), schema, config, ctx."""
    hooks = Hooks(load_plugins(["urgent"], available=[URGENT]))
    schema = OptionSchema()
    hooks.add_options(schema)
    config = validate(parse_document(site_yaml, file="site.yaml"), schema)
    hooks.configure(config)
    ctx = Context(config=config, store=NoStore(), clock=task.Clock(),  # type: ignore[arg-type]
                  runner=InlineRunner())
    return hooks, config, ctx


def analysed(hooks: Hooks, config: SiteConfig, message: ParsedMessage) -> ParsedMessage:
    """What the kernel does right after parsing, in the worker process."""
    hooks.analyze(message, AnalysisContext(config=config))
    assert message.analysis_errors == []
    return message


def enrich(message: ParsedMessage, site_yaml: str = "") -> dict[str, Any]:
    """analyze, then enrich, as the pipeline runs them."""
    hooks, config, ctx = kernel_like(site_yaml)
    interaction = Interaction(subject=message.subject)
    run(hooks.enrich(analysed(hooks, config, message), interaction, ctx))
    assert "_PluginErrors" not in interaction.attached_data
    return dict(interaction.attached_data)


# ------------------------------------------------------------------- packaging


def test_the_distribution_advertises_the_plugin() -> None:
    setup = configparser.ConfigParser()
    setup.read(DISTRIBUTION / "setup.cfg", encoding="utf-8")
    assert setup["metadata"]["name"] == "postroom-urgent"
    assert "postroom" in setup["options"]["install_requires"].split()
    entry_points = setup["options.entry_points"]["postroom.plugins"].strip().splitlines()
    assert entry_points == [f"{URGENT.name} = {URGENT.value}"]
    assert URGENT.load() is plugin


def test_it_is_enabled_like_any_installed_plugin() -> None:
    plugins = load_plugins(None, available=[URGENT])
    assert plugins.order[-1] == "urgent" and plugins.warnings == []
    assert plugins.hooks_of(plugin) == [
        "postroom_add_options", "postroom_analyze", "postroom_configure", "postroom_enrich"]


# --------------------------------------------------------------------- options


def test_options_are_declared_by_the_plugin_with_defaults() -> None:
    _hooks, config, _ctx = kernel_like()
    assert config.get("urgent", "keywords") == ["urgent", "asap", "emergency", "dringend"]
    assert config.get("urgent", "priority-headers") is True
    declared = {o.name: o for o in config.schema or [] if o.section == "urgent"}
    assert set(declared) == {"keywords", "priority-headers"}
    assert {o.declared_by for o in declared.values()} == {"urgent"}
    assert all(o.description for o in declared.values())


def test_an_empty_keyword_list_is_a_configuration_error_at_its_line() -> None:
    with pytest.raises(Exception) as info:
        kernel_like("tenant-id: 3\nurgent:\n  keywords: []\n")
    error = info.value if isinstance(info.value, ConfigError) else info.value.__cause__
    assert isinstance(error, ConfigError)
    assert (error.file, error.line, error.option) == ("site.yaml", 3, "urgent.keywords")
    assert "at least one keyword" in str(error)


def test_an_unknown_option_of_the_section_is_refused() -> None:
    with pytest.raises(Exception, match="keyword"):
        kernel_like("urgent:\n  keyword: [urgent]\n")


# ------------------------------------------------------------------ the rule


@pytest.mark.parametrize(
    "subject",
    ["URGENT: server down", "Bitte dringend zurückrufen", "reply asap please",
     "Re: Emergency at site 4", "Dringende Anfrage"],
)
def test_a_keyword_in_the_subject_makes_it_urgent(subject: str) -> None:
    assert enrich(ParsedMessage(subject=subject)) == {"Urgent": "true"}


@pytest.mark.parametrize(
    "headers",
    [[("X-Priority", "1")], [("X-Priority", "1 (Highest)")], [("x-priority", " 1")],
     [("Importance", "high")], [("Importance", "High")]],
)
def test_a_priority_header_makes_it_urgent(headers: list[tuple[str, str]]) -> None:
    assert enrich(ParsedMessage(subject="Invoice 4711", headers=headers)) == {"Urgent": "true"}


@pytest.mark.parametrize(
    "headers",
    [[], [("X-Priority", "3 (Normal)")], [("X-Priority", "10")], [("Importance", "normal")],
     [("Importance", "low")], [("Priority", "urgent")]],
)
def test_other_mail_gets_no_urgent_key(headers: list[tuple[str, str]]) -> None:
    assert enrich(ParsedMessage(subject="Invoice 4711", headers=headers)) == {}


def test_configured_keywords_replace_the_defaults() -> None:
    site = "urgent:\n  keywords: [Eilt, sofort]\n"
    assert enrich(ParsedMessage(subject="EILT: Lieferung"), site) == {"Urgent": "true"}
    assert enrich(ParsedMessage(subject="Bitte SOFORT"), site) == {"Urgent": "true"}
    assert enrich(ParsedMessage(subject="urgent"), site) == {}


def test_priority_headers_can_be_ignored() -> None:
    site = "urgent:\n  priority-headers: no\n"
    message = ParsedMessage(subject="Invoice", headers=[("Importance", "high")])
    assert enrich(message, site) == {}
    assert enrich(ParsedMessage(subject="asap", headers=[("Importance", "high")]), site) == {
        "Urgent": "true"}


def test_other_plugins_keys_are_left_alone() -> None:
    hooks, config, ctx = kernel_like()
    interaction = Interaction(attached_data={"_AttachmentFileNames": "a.pdf"})
    message = analysed(hooks, config, ParsedMessage(subject="urgent"))
    run(hooks.enrich(message, interaction, ctx))
    assert interaction.attached_data == {"_AttachmentFileNames": "a.pdf", "Urgent": "true"}


# ------------------------------------------------------------ where it runs


def test_the_analysis_is_one_picklable_finding() -> None:
    # it crosses from the worker process to the gateway
    hooks, config, _ctx = kernel_like()
    message = analysed(hooks, config, ParsedMessage(subject="ASAP please"))
    assert message.analysis == {"urgent.urgent": True}
    assert pickle.loads(pickle.dumps(message.analysis)) == message.analysis
    assert analysed(hooks, config, ParsedMessage(subject="hello")).analysis == {
        "urgent.urgent": False}


def test_the_gateway_never_reads_the_message_itself() -> None:
    # an urgent subject, but no analysis: enrich reads nothing, and says why
    hooks, _config, ctx = kernel_like()
    interaction = Interaction()
    run(hooks.enrich(ParsedMessage(subject="URGENT"), interaction, ctx))
    assert "Urgent" not in interaction.attached_data
    assert "no analysis under 'urgent.urgent'" in interaction.attached_data["_PluginErrors"]


def test_the_analysis_takes_linear_time_in_the_subject_and_the_headers() -> None:
    hooks, config, _ctx = kernel_like()

    def message(n: int) -> ParsedMessage:
        # no keyword, and an X-Priority of blanks that never reaches a "1"
        return ParsedMessage(subject="urgen " * n, headers=[("X-Priority", " " * n + "2")])

    def run_analysis(m: ParsedMessage) -> None:
        m.analysis.clear()
        hooks.analyze(m, AnalysisContext(config=config))

    assert_linear(message, run_analysis, start=1 << 20)
    assert analysed(hooks, config, message(1000)).analysis == {"urgent.urgent": False}

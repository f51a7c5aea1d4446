"""Tests of the ``urgent`` plugin, with ``postroom.testing`` (no gateway, no server needed).

Each test builds a :class:`~postroom.testing.TestKernel`: the kernel the gateway
runs, with this plugin loaded from its entry point (as if installed, without
installing it), a memory store and a clock that stands still. Its options come
from real site configurations (YAML text), so the declarations are tested too.
"""

from __future__ import annotations

import configparser
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from postroom.api import ConfigError, Interaction, ParsedMessage
from postroom.testing import TestKernel, assert_linear, site_config
from postroom_urgent import plugin

DISTRIBUTION = Path(__file__).resolve().parents[1]
URGENT = EntryPoint(name="urgent", value="postroom_urgent.plugin", group="postroom.plugins")


def enrich(message: ParsedMessage, site_yaml: str = "") -> dict[str, Any]:
    """analyze, then classify and enrich, as the pipeline runs them: the attached data."""
    with TestKernel([URGENT], site_yaml) as kernel:
        interaction = kernel.enrich(kernel.analyze(message))
    assert "_PluginErrors" not in interaction.attached_data
    return dict(interaction.attached_data)


# ------------------------------------------------------------------- packaging


def test_the_distribution_advertises_the_plugin() -> None:
    setup = configparser.ConfigParser()
    setup.read(DISTRIBUTION / "setup.cfg", encoding="utf-8")
    assert setup["metadata"]["name"] == "postroom-urgent"
    assert any(r.startswith("postroom>=") for r in setup["options"]["install_requires"].split())
    entry_points = setup["options.entry_points"]["postroom.plugins"].strip().splitlines()
    assert entry_points == [f"{URGENT.name} = {URGENT.value}"]
    assert URGENT.load() is plugin


def test_it_is_loaded_after_the_built_ins_with_its_hooks() -> None:
    with TestKernel([URGENT]) as kernel:
        assert kernel.plugins[-1] == "urgent"
        assert kernel.hooks_of("urgent") == [
            "postroom_add_options", "postroom_analyze", "postroom_configure", "postroom_enrich"]


# --------------------------------------------------------------------- options


def test_options_are_declared_by_the_plugin_with_defaults() -> None:
    config = site_config("", plugins=[URGENT])
    assert config.get("urgent", "keywords") == ["urgent", "asap", "emergency", "dringend"]
    assert config.get("urgent", "priority-headers") is True
    declared = {o.name: o for o in config.schema or [] if o.section == "urgent"}
    assert set(declared) == {"keywords", "priority-headers"}
    assert {o.declared_by for o in declared.values()} == {"urgent"}
    assert all(o.description for o in declared.values())


def test_an_empty_keyword_list_is_a_configuration_error_at_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        site_config("tenant-id: 3\nurgent:\n  keywords: []\n", plugins=[URGENT])
    error = info.value
    assert (error.file, error.line, error.option) == ("site.yaml", 3, "urgent.keywords")
    assert "at least one keyword" in str(error)


def test_an_unknown_option_of_the_section_is_refused() -> None:
    with pytest.raises(ConfigError, match="keyword"):
        site_config("urgent:\n  keyword: [urgent]\n", plugins=[URGENT])


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
    with TestKernel([URGENT]) as kernel:
        interaction = Interaction(attached_data={"_AttachmentFileNames": "a.pdf"})
        kernel.enrich(kernel.analyze(ParsedMessage(subject="urgent")), interaction)
    assert interaction.attached_data == {"_AttachmentFileNames": "a.pdf", "Urgent": "true"}


def test_a_received_message_is_stored_with_the_key() -> None:
    # the whole inbound pipeline: parse, analyze, classify, enrich, commit, hand-off
    eml = (b"From: Customer <customer@client.example>\r\nTo: support@centre.example\r\n"
           b"Subject: Invoice 4711\r\nImportance: High\r\nMessage-ID: <4711@client.example>\r\n"
           b"\r\nPlease call me back.\r\n")  # fmt: skip
    with TestKernel([URGENT]) as kernel:
        [interaction] = kernel.ingest(eml)
        assert interaction.attached_data == {"Urgent": "true"}
        assert [i.id for i in kernel.interactions()] == [interaction.id]


# ------------------------------------------------------------ where it runs


def test_the_analysis_is_one_picklable_finding() -> None:
    # it crosses from the worker process to the gateway: analyze() checks it pickles
    with TestKernel([URGENT]) as kernel:
        message = kernel.analyze(ParsedMessage(subject="ASAP please"))
        assert message.analysis == {"urgent.urgent": True}
        assert kernel.analyze(ParsedMessage(subject="hello")).analysis == {
            "urgent.urgent": False}


def test_the_gateway_never_reads_the_message_itself() -> None:
    # an urgent subject, but no analysis: enrich reads nothing, and says why
    with TestKernel([URGENT]) as kernel:
        interaction = kernel.enrich(ParsedMessage(subject="URGENT"))
    assert "Urgent" not in interaction.attached_data
    assert "no analysis under 'urgent.urgent'" in interaction.attached_data["_PluginErrors"]


def test_the_analysis_takes_linear_time_in_the_subject_and_the_headers() -> None:
    def message(n: int) -> ParsedMessage:
        # no keyword, and an X-Priority of blanks that never reaches a "1"
        return ParsedMessage(subject="urgen " * n, headers=[("X-Priority", " " * n + "2")])

    with TestKernel([URGENT]) as kernel:

        def run_analysis(m: ParsedMessage) -> None:
            m.analysis.clear()
            kernel.analyze(m)

        assert_linear(message, run_analysis, start=1 << 20)
        assert kernel.analyze(message(1000)).analysis == {"urgent.urgent": False}

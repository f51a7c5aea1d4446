"""Finding, enabling and registering hook plugins (postroom.plugins.manager).

The enabling rule: no ``plugins:`` key = every installed plugin, sorted by
entry-point name, a load failure is a warning; a ``plugins:`` list = exactly
those, in that order, a load failure is fatal and names plugin, distribution
and cause. Entry points here point at tests/hooks/sample_plugins.py and
tests/hooks/broken_plugin.py (which raises ImportError when imported).
"""

from __future__ import annotations

import logging

import pytest

from postroom import hookimpl
from postroom.errors import PluginLoadError
from postroom.model import Interaction, ParsedMessage
from postroom.plugins.facade import Hooks
from postroom.plugins.manager import BUILTIN_PLUGINS, describe, load_plugins
from tests.conftest import run
from tests.hooks.sample_plugins import TRACE, alpha
from tests.hooks.support import BROKEN, entry_point, make_ctx, sample

BUILTINS = [name for name, _module in BUILTIN_PLUGINS]


def trace(hooks: Hooks) -> str:
    interaction = Interaction()
    run(hooks.enrich(ParsedMessage(), interaction, make_ctx()))
    return str(interaction.attached_data.get(TRACE, ""))


# ------------------------------------------------------------- no plugins: key


def test_without_a_list_every_installed_plugin_is_enabled_sorted_by_name() -> None:
    plugins = load_plugins(None, available=[sample("gamma"), sample("alpha"), sample("beta")])
    assert plugins.order == [*BUILTINS, "alpha", "beta", "gamma"]
    assert plugins.warnings == []
    assert trace(Hooks(plugins)) == "alpha,beta,gamma"


def test_without_a_list_a_broken_plugin_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="postroom.plugins.manager"):
        plugins = load_plugins(None, available=[sample("beta"), BROKEN, sample("alpha")])
    assert plugins.order == [*BUILTINS, "alpha", "beta"]
    [warning] = plugins.warnings
    assert "'broken'" in warning and "postroom-broken" in warning
    assert "ImportError" in warning and "acme-sdk" in warning
    assert "continuing without it" in warning
    assert "'broken'" in caplog.text
    [info] = [i for i in plugins.infos if i.name == "broken"]
    assert not info.enabled and info.error is not None and "acme-sdk" in info.error
    assert info.distribution == "postroom-broken" and info.version == "1.0"
    assert trace(Hooks(plugins)) == "alpha,beta"


def test_without_a_list_an_unknown_hook_is_a_warning_naming_it() -> None:
    plugins = load_plugins(None, available=[sample("typo"), sample("alpha")])
    assert "typo" not in plugins.order and "alpha" in plugins.order
    [warning] = plugins.warnings
    assert "'typo'" in warning and "postroom_clasify" in warning


def test_without_a_list_an_argument_the_hook_lacks_is_a_warning() -> None:
    plugins = load_plugins(None, available=[sample("odd", "unknown_argument")])
    assert "odd" not in plugins.order
    [warning] = plugins.warnings
    assert "'odd'" in warning and "mailbox_name" in warning


def test_a_name_claimed_twice_is_a_warning_without_a_list_and_fatal_with_one() -> None:
    twice = [sample("alpha"), entry_point("alpha", "tests.hooks.sample_plugins:beta")]
    plugins = load_plugins(None, available=twice)
    assert plugins.pm.get_plugin("alpha") is alpha
    assert any("claimed by two distributions" in w for w in plugins.warnings)
    with pytest.raises(PluginLoadError, match="claimed by two distributions"):
        load_plugins(["alpha"], available=twice)


# --------------------------------------------------------------- a plugins: list


def test_with_a_list_exactly_those_in_that_order() -> None:
    plugins = load_plugins(["gamma", "alpha"], available=[sample("alpha"), sample("beta"),
                                                         sample("gamma"), BROKEN])
    assert plugins.order == [*BUILTINS, "gamma", "alpha"]
    assert plugins.warnings == []  # the broken one is not asked for, so not even imported
    assert trace(Hooks(plugins)) == "gamma,alpha"


def test_an_empty_list_enables_no_installed_plugin() -> None:
    plugins = load_plugins([], available=[sample("alpha"), BROKEN])
    assert plugins.order == BUILTINS


def test_with_a_list_a_broken_plugin_is_fatal_naming_plugin_distribution_and_cause() -> None:
    with pytest.raises(PluginLoadError) as info:
        load_plugins(["alpha", "broken"], available=[sample("alpha"), BROKEN])
    error = info.value
    assert (error.group, error.name, error.distribution) == (
        "postroom.plugins", "broken", "postroom-broken")
    assert isinstance(error.cause, ImportError)
    message = str(error)
    assert "'broken'" in message and "postroom-broken" in message and "acme-sdk" in message


def test_with_a_list_a_plugin_not_installed_is_fatal_with_a_suggestion() -> None:
    with pytest.raises(PluginLoadError) as info:
        load_plugins(["alpah"], available=[sample("alpha"), sample("beta")])
    message = str(info.value)
    assert "'alpah'" in message and "not installed" in message
    assert "did you mean 'alpha'?" in message
    assert "alpha, beta" in message  # what is installed


def test_with_a_list_an_unknown_hook_is_fatal_naming_it() -> None:
    with pytest.raises(PluginLoadError, match=r"'typo'.*postroom_clasify"):
        load_plugins(["typo"], available=[sample("typo")])


def test_with_a_list_an_argument_the_hook_lacks_is_fatal() -> None:
    with pytest.raises(PluginLoadError, match=r"(?s)'odd'.*mailbox_name"):
        load_plugins(["odd"], available=[sample("odd", "unknown_argument")])


def test_an_embedded_plugin_with_an_unknown_hook_is_fatal() -> None:
    class Embedded:
        @hookimpl
        def postroom_clasify(self) -> None:
            return None

    with pytest.raises(PluginLoadError, match=r"'mine'.*postroom_clasify"):
        load_plugins(None, extra=[("mine", Embedded())], available=[])


def test_an_undecorated_function_is_not_a_hook() -> None:
    class Forgetful:
        def postroom_enrich(self, interaction: Interaction) -> None:
            raise AssertionError("not a hook: no @hookimpl")

    plugins = load_plugins([], extra=[("forgetful", Forgetful())])
    assert "forgetful" in plugins.order
    assert plugins.hooks_of(plugins.pm.get_plugin("forgetful")) == []
    assert trace(Hooks(plugins)) == ""


def test_describe_lists_plugins_with_their_hooks() -> None:
    rows = {row["name"]: row for row in describe(load_plugins(None, available=[sample("alpha"),
                                                                               BROKEN]))}
    assert rows["alpha"]["enabled"] and rows["alpha"]["kind"] == "hook"
    assert rows["alpha"]["hooks"] == ["postroom_add_options", "postroom_classify",
                                      "postroom_enrich"]
    assert all(rows[name]["kind"] == "builtin" and rows[name]["enabled"] for name in BUILTINS)
    assert not rows["broken"]["enabled"] and "ImportError" in rows["broken"]["error"]


# ------------------------------------------------------------------ isolation


def test_two_kernels_plugin_sets_do_not_share_state() -> None:
    class Counter:
        def __init__(self) -> None:
            self.calls = 0

        @hookimpl
        def postroom_enrich(self) -> None:
            self.calls += 1

    counter = Counter()
    first = load_plugins(["alpha"], extra=[("counter", counter)], available=[sample("alpha")])
    second = load_plugins(["beta"], available=[sample("alpha"), sample("beta")])
    assert first.pm is not second.pm
    assert "counter" not in second.order and "alpha" not in second.order
    assert trace(Hooks(second)) == "beta"
    assert counter.calls == 0
    assert trace(Hooks(first)) == "alpha"
    assert counter.calls == 1
    # the same installed plugin object may serve both kernels
    third = load_plugins(["alpha"], available=[sample("alpha")])
    assert third.pm.get_plugin("alpha") is first.pm.get_plugin("alpha") is alpha
    first.pm.unregister(name="alpha")
    assert trace(Hooks(third)) == "alpha"

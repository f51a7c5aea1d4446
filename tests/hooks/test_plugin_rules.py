"""Plugin mistakes the kernel refuses loudly instead of misbehaving quietly."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from postroom import hookimpl
from postroom.errors import ConfigError, PluginLoadError
from postroom.model import Interaction, ParsedMessage
from postroom.plugins.facade import PluginFailure
from postroom.plugins.manager import load_plugins
from tests.hooks.support import hooks_with, make_ctx, sample


def test_config_error_from_configure_passes_through_unwrapped() -> None:
    class Picky:
        @hookimpl
        def postroom_configure(self) -> None:
            raise ConfigError("needs at least one keyword", file="site.yaml", line=3,
                              option="urgent.keywords")

    with pytest.raises(ConfigError, match=r"site\.yaml:3"):
        hooks_with(("picky", Picky())).configure(object())


def test_async_def_on_a_synchronous_hook_is_refused() -> None:
    class Eager:
        @hookimpl
        async def postroom_expand(self, interaction: Interaction) -> list[Interaction]:
            return [interaction]

    with pytest.raises(PluginFailure, match="postroom_expand is synchronous"):
        hooks_with(("eager", Eager())).expand(Interaction(), ParsedMessage(), make_ctx())


def test_expand_returning_nothing_is_an_error_not_a_lost_message() -> None:
    class Eraser:
        @hookimpl
        def postroom_expand(self) -> list[Interaction]:
            return []

    with pytest.raises(ValueError, match="no interaction"):
        hooks_with(("eraser", Eraser())).expand(Interaction(), ParsedMessage(), make_ctx())


def test_hook_wrappers_are_refused_naming_the_plugin() -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def postroom_render(self) -> Generator[None, None, None]:
            return (yield)

    with pytest.raises(PluginLoadError, match=r"hook wrappers.*postroom_render"):
        load_plugins([], extra=[("wrapper", Wrapper())])


def test_installed_plugin_cannot_take_a_builtin_name() -> None:
    plugins = load_plugins(None, available=[sample("core-parser", "alpha")])
    assert any("reserved" in w and "core-parser" in w for w in plugins.warnings)
    builtin = next(i for i in plugins.infos if i.name == "core-parser")
    assert builtin.kind == "builtin" and builtin.enabled
    with pytest.raises(PluginLoadError, match="reserved"):
        load_plugins(["core-parser"], available=[sample("core-parser", "alpha")])

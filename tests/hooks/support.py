"""Helpers for calling hooks without a kernel: a context, a store, plugin sets."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any, cast

from twisted.internet import task

from postroom.context import Context
from postroom.interfaces import PLUGINS_GROUP
from postroom.model import Interaction
from postroom.plugins.facade import Hooks
from postroom.plugins.manager import PluginSet, load_plugins
from postroom.runner import InlineRunner

SAMPLES = "tests.hooks.sample_plugins"


class FakeConfig:
    """Just enough of a SiteConfig: ``get(section, name)`` from a dict."""

    def __init__(self, values: dict[tuple[str | None, str], Any] | None = None) -> None:
        self.values = dict(values or {})
        self.tenant_id = 7
        self.smtp = None  # no smtp-client section

    def get(self, section: str | None, name: str) -> Any:
        return self.values[(section, name)]


class FakeStore:
    """The store as hook implementations see it (methods to await)."""

    def __init__(self, interactions: list[Interaction] | None = None) -> None:
        self.interactions = list(interactions or [])
        self.looked_up: list[str] = []

    async def find_by_message_id(self, message_id: str, type: str | None = None) -> list[Any]:
        self.looked_up.append(message_id)
        return [
            i for i in self.interactions
            if i.message_id == message_id and (type is None or i.type == type)
        ]


def make_ctx(
    config: Any = None, store: Any = None, clock: task.Clock | None = None
) -> Context:
    return Context(
        config=cast(Any, config if config is not None else FakeConfig()),
        store=cast(Any, store if store is not None else FakeStore()),
        clock=clock if clock is not None else task.Clock(),
        runner=InlineRunner(),
    )


def plugin_set(*plugins: tuple[str, object]) -> PluginSet:
    """The built-in plugins plus *plugins* (in-process), and no installed plugin."""
    return load_plugins([], extra=plugins)


def hooks_with(*plugins: tuple[str, object]) -> Hooks:
    return Hooks(plugin_set(*plugins))


def entry_point(name: str, value: str, dist: Any = None) -> EntryPoint:
    ep = EntryPoint(name=name, value=value, group=PLUGINS_GROUP)
    if dist is not None:
        vars(ep).update(dist=dist)  # how importlib.metadata ties installed ones to theirs
    return ep


def sample(name: str, attr: str | None = None) -> EntryPoint:
    """An entry point to one of the objects of tests/hooks/sample_plugins.py."""
    return entry_point(name, f"{SAMPLES}:{attr or name}")


class FakeDistribution:
    def __init__(self, name: str, version: str) -> None:
        self.metadata = {"Name": name}
        self.version = version


#: a plugin whose module raises ImportError when imported, from distribution postroom-broken
BROKEN = entry_point(
    "broken", "tests.hooks.broken_plugin", FakeDistribution("postroom-broken", "1.0")
)

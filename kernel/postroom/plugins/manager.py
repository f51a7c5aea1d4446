"""Finding, enabling and registering hook plugins: one manager per kernel.

The enabling rule (one rule, documented in docs/writing-plugins.md):

* no ``plugins:`` key: every installed hook plugin (entry-point group
  ``postroom.plugins``) is enabled, sorted by entry-point name; one that
  fails to load is a warning naming it, and the gateway starts without it;
* a ``plugins:`` list: exactly those, in that order; one that is not
  installed or fails to load stops start-up with a
  :class:`~postroom.errors.PluginLoadError` naming the plugin, its
  distribution and the cause.

The kernel's built-in plugins are always enabled and come first; plugins an
embedding application passes in come right after them.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs
import pluggy

from postroom import PROJECT_NAME, hookspecs
from postroom._apiversion import VERSION, check_api, declared_api
from postroom.errors import PluginLoadError
from postroom.interfaces import PLUGINS_GROUP

log = logging.getLogger(__name__)

#: The kernel's own hook plugins, always enabled, in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("core-options", "postroom.config.core"),
    ("core-parser", "postroom.builtin.parser"),
    ("core-metadata", "postroom.builtin.metadata"),
    ("core-threading", "postroom.builtin.threading"),
)


@attrs.define
class PluginInfo:
    """What ``postroom plugins`` shows about one plugin or driver."""

    name: str
    kind: str  # "builtin", "hook", "embedded", or a driver group
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = attrs.field(factory=list)
    enabled: bool = False
    error: str | None = None
    #: the ``POSTROOM_API`` it declares (None: undeclared; the kernel's own: its VERSION)
    api: str | None = None


def _dist_of(ep: EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def installed_plugin_entry_points() -> list[EntryPoint]:
    """Installed hook plugins, sorted by name (the default plugin order)."""
    return sorted(entry_points(group=PLUGINS_GROUP), key=lambda ep: ep.name)


class PluginSet:
    """The plugin manager of one kernel, with what was loaded and what failed."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.infos: list[PluginInfo] = []
        self.warnings: list[str] = []
        #: plugin order: names as registered, first called first
        self.order: list[str] = []

    def hooks_of(self, plugin: object) -> list[str]:
        return sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])


def load_plugins(
    enabled: Sequence[str] | None,
    *,
    extra: Iterable[tuple[str, object]] = (),
    available: Sequence[EntryPoint] | None = None,
) -> PluginSet:
    """Build the plugin manager for one kernel.

    *enabled* is the site's ``plugins:`` list, or None when absent. *extra*
    are ``(name, plugin)`` pairs an embedding application registers.
    *available* replaces the installed entry points (tests).
    """
    plugins = PluginSet()
    eps = list(available) if available is not None else installed_plugin_entry_points()
    by_name: dict[str, EntryPoint] = {}
    reserved = {name for name, _module in BUILTIN_PLUGINS} | {name for name, _obj in extra}
    for ep in eps:
        if ep.name in reserved:
            if enabled is not None and ep.name not in enabled:
                continue  # not asked for: it would not be loaded anyway
            message = (
                f"hook plugin name {ep.name!r} of distribution {_dist_of(ep)[0]} is reserved "
                "(a built-in or embedded plugin has it); ignoring that plugin"
            )
            if enabled is not None and ep.name in enabled:
                raise PluginLoadError(PLUGINS_GROUP, ep.name, _dist_of(ep)[0], ValueError(message))
            plugins.warnings.append(message)
            log.warning(message)
            continue
        if ep.name in by_name and by_name[ep.name].value != ep.value:
            message = (
                f"hook plugin name {ep.name!r} is claimed by two distributions "
                f"({_dist_of(by_name[ep.name])[0]} and {_dist_of(ep)[0]}); using the first"
            )
            if enabled is not None and ep.name in enabled:
                raise PluginLoadError(PLUGINS_GROUP, ep.name, _dist_of(ep)[0], ValueError(message))
            plugins.warnings.append(message)
            continue
        by_name.setdefault(ep.name, ep)

    ordered: list[tuple[str, object, PluginInfo]] = []
    for name, module_name in BUILTIN_PLUGINS:
        module = __import__(module_name, fromlist=["_"])
        ordered.append((name, module, PluginInfo(name, "builtin", "postroom", None, api=VERSION)))
    for name, obj in extra:
        check_api(obj, PLUGINS_GROUP, name, None)
        ordered.append((name, obj, PluginInfo(name, "embedded", api=declared_api(obj))))

    if enabled is None:
        wanted = [(ep.name, ep) for ep in by_name.values()]
        wanted.sort(key=lambda pair: pair[0])
        strict = False
    else:
        wanted = []
        for name in enabled:
            if name not in by_name:
                close = difflib.get_close_matches(name, list(by_name), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                installed = ", ".join(sorted(by_name)) or "none"
                raise PluginLoadError(
                    PLUGINS_GROUP,
                    name,
                    None,
                    LookupError(f"not installed (installed: {installed}){hint}"),
                )
            wanted.append((name, by_name[name]))
        strict = True

    for name, ep in wanted:
        dist, version = _dist_of(ep)
        info = PluginInfo(name, "hook", dist, version)
        try:
            obj = ep.load()
            check_api(obj, PLUGINS_GROUP, name, dist)
        except Exception as exc:  # a plugin's import error must not look like ours
            error = (
                exc
                if isinstance(exc, PluginLoadError)
                else PluginLoadError(PLUGINS_GROUP, name, dist, exc)
            )
            if strict:
                raise error from exc
            info.error = (
                str(error.cause)
                if isinstance(exc, PluginLoadError)
                else f"{type(exc).__name__}: {exc}"
            )
            plugins.infos.append(info)
            warning = str(error) + "; continuing without it"
            plugins.warnings.append(warning)
            log.warning(warning)
            continue
        info.api = declared_api(obj)
        ordered.append((name, obj, info))

    # pluggy calls the last registered first: register in reverse plugin order.
    for name, obj, info in reversed(ordered):
        try:
            plugins.pm.register(obj, name=name)
        except Exception as exc:
            if strict or info.kind != "hook":
                raise PluginLoadError(PLUGINS_GROUP, name, info.distribution, exc) from exc
            info.error = f"{type(exc).__name__}: {exc}"
            plugins.warnings.append(
                str(PluginLoadError(PLUGINS_GROUP, name, info.distribution, exc))
                + "; continuing without it"
            )
            continue
    for name, obj, info in ordered:
        if plugins.pm.is_registered(obj):
            info.enabled = True
            info.hooks = plugins.hooks_of(obj)
            plugins.order.append(name)
        plugins.infos.append(info)
    _check_unknown_hooks(plugins, strict)
    return plugins


def _check_unknown_hooks(plugins: PluginSet, strict: bool) -> None:
    """A ``postroom_*`` function that matches no spec is a typo, and a hook
    wrapper would be silently skipped by the facade: say so."""
    for name in list(plugins.order):
        obj = plugins.pm.get_plugin(name)
        callers = plugins.pm.get_hookcallers(obj) or []
        unknown = sorted(caller.name for caller in callers if caller.spec is None)
        wrappers = sorted(
            caller.name
            for caller in callers
            for impl in caller.get_hookimpls()
            if impl.plugin is obj and (impl.wrapper or impl.hookwrapper)
        )
        if not unknown and not wrappers:
            continue
        info = next(i for i in plugins.infos if i.name == name)
        problems = []
        if unknown:
            problems.append("implements unknown hook(s) " + ", ".join(unknown))
        if wrappers:
            problems.append(
                "uses hook wrappers, which postroom does not support, in " + ", ".join(wrappers)
            )
        cause = LookupError("; ".join(problems) + " (see docs/hooks.md)")
        if strict or info.kind != "hook":
            raise PluginLoadError(PLUGINS_GROUP, name, info.distribution, cause)
        plugins.pm.unregister(obj)
        plugins.order.remove(name)
        info.enabled = False
        info.error = str(cause)
        plugins.warnings.append(
            str(PluginLoadError(PLUGINS_GROUP, name, info.distribution, cause))
            + "; continuing without it"
        )


def describe(plugins: PluginSet) -> list[dict[str, Any]]:
    return [attrs.asdict(info) for info in plugins.infos]

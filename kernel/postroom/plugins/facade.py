"""The typed facade over the hooks: kernel code calls these methods, never ``pm.hook``.

One place decides how hook results are awaited (plain values, Deferreds and
coroutines alike), in which order plugins run, what a failing plugin costs,
and how classifier verdicts are reduced to one subtype.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs
from twisted.internet.defer import Deferred, ensureDeferred

from postroom import keys
from postroom.errors import ConfigError, ConfigErrors, PluginLoadError
from postroom.interfaces import PLUGINS_GROUP
from postroom.model import AttachedValue, Subtype, Verdict
from postroom.routes import Route
from postroom.sendrequest import RequestError

if TYPE_CHECKING:
    from postroom.config.options import OptionSchema
    from postroom.context import AnalysisContext, Context
    from postroom.interfaces import IParser
    from postroom.model import Envelope, FetchedMessage, Interaction, OutboundRequest, ParsedMessage
    from postroom.plugins.manager import PluginSet
    from postroom.store.sql.migrations import PluginMigrations

log = logging.getLogger(__name__)

#: attached key listing plugins that failed on an interaction (processing goes on)
PLUGIN_ERRORS_KEY = keys.PLUGIN_ERRORS


async def resolve(value: Any) -> Any:
    """Await a hook result whatever it is: plain value, Deferred or coroutine."""
    if isinstance(value, Deferred):
        return await value
    if inspect.isawaitable(value):
        return await cast(Awaitable[Any], value)
    return value


class PluginFailure(Exception):
    """A plugin raised in a hook; names the plugin."""

    def __init__(self, plugin: str, hook: str, cause: BaseException) -> None:
        self.plugin = plugin
        self.hook = hook
        self.cause = cause
        super().__init__(f"plugin {plugin!r} failed in {hook}: {type(cause).__name__}: {cause}")


@attrs.frozen
class Veto:
    """A plugin's refusal of an outbound request (``postroom_veto``)."""

    plugin: str
    reason: str

    def __str__(self) -> str:
        return f"vetoed by {self.plugin}: {self.reason}"


def reduce_verdicts(verdicts: list[Verdict]) -> Verdict:
    """The documented rule: highest priority wins; ties go to plugin order.

    *verdicts* must be in plugin order. No verdict means ``InboundNew``.
    """
    best: Verdict | None = None
    for verdict in verdicts:
        if best is None or verdict.priority > best.priority:
            best = verdict
    return best or Verdict(Subtype.INBOUND_NEW.value, priority=0, reason="default")


class Hooks:
    """One method per hook, for one kernel's plugin set."""

    def __init__(self, plugins: PluginSet) -> None:
        self.plugins = plugins
        self.pm = plugins.pm

    # -- plumbing

    def _impls(self, hook_name: str) -> list[Any]:
        """Implementations in call order (pluggy's own order: reversed list)."""
        caller = getattr(self.pm.hook, hook_name)
        return list(reversed(caller.get_hookimpls()))

    def _call_sync(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call a synchronous hook; configuration errors pass through unwrapped
        so they are reported with their file and line."""
        results = []
        for impl in self._impls(hook_name):
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                result = impl.function(**args)
            except (ConfigError, ConfigErrors):
                raise
            except Exception as exc:
                raise PluginFailure(impl.plugin_name, hook_name, exc) from exc
            _refuse_awaitable(result, impl.plugin_name, hook_name)
            results.append((impl.plugin_name, result))
        return results

    async def _call_all(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation in order, awaiting each before the next."""
        results = []
        for impl in self._impls(hook_name):
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                results.append((impl.plugin_name, await resolve(impl.function(**args))))
            except Exception as exc:
                raise PluginFailure(impl.plugin_name, hook_name, exc) from exc
        return results

    async def _call_tolerant(
        self, hook_name: str, note_on: Interaction | None, /, **kwargs: Any
    ) -> list[tuple[str, Any]]:
        """Like _call_all, but a failing plugin is logged and noted on the
        interaction, and the others still run: one buggy enricher must not
        keep mail from reaching agents."""
        results = []
        for impl in self._impls(hook_name):
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                results.append((impl.plugin_name, await resolve(impl.function(**args))))
            except Exception as exc:
                log.exception("plugin %r failed in %s", impl.plugin_name, hook_name)
                if note_on is not None:
                    note = f"{impl.plugin_name}: {hook_name}: {type(exc).__name__}: {exc}"
                    previous = note_on.attached_data.get(PLUGIN_ERRORS_KEY)
                    note_on.attached_data[PLUGIN_ERRORS_KEY] = (
                        f"{previous}\n{note}" if previous else note
                    )
        return results

    # -- lifecycle

    def add_options(self, schema: OptionSchema) -> None:
        """Collect declarations; a bad one is a load error naming the plugin."""
        for impl in self._impls("postroom_add_options"):
            with schema.declaring(impl.plugin_name):
                try:
                    result = impl.function(**{n: schema for n in impl.argnames})
                except Exception as exc:
                    raise PluginLoadError(
                        PLUGINS_GROUP, impl.plugin_name, self._distribution(impl.plugin_name), exc
                    ) from exc
                _refuse_awaitable(result, impl.plugin_name, "postroom_add_options")

    def add_options_of(self, plugin: object, name: str, schema: OptionSchema) -> None:
        """Declarations of one object (a driver class) not registered as a plugin."""
        function = getattr(plugin, "postroom_add_options", None)
        if function is not None:
            with schema.declaring(name):
                group, _, driver = name.partition(":")
                try:
                    function(schema)
                except Exception as exc:
                    raise PluginLoadError(group, driver or name, None, exc) from exc

    def _distribution(self, plugin_name: str) -> str | None:
        for info in self.plugins.infos:
            if info.name == plugin_name:
                return info.distribution
        return None

    def configure(self, config: Any) -> None:
        self._call_sync("postroom_configure", config=config)

    def store_migrations(self, dialect: str) -> list[PluginMigrations]:
        """The plugins' own tables' migrations in *dialect*, in plugin order."""
        found = self._call_sync("postroom_store_migrations", dialect=dialect)
        return [migrations for _plugin, migrations in found if migrations is not None]

    def register_commands(self, commands: Any) -> list[str]:
        """Every plugin's ``postroom`` commands; the warnings of those that failed
        (the command line still works without them). *commands* is told which
        plugin is adding (``commands.plugin``)."""
        warnings = []
        for impl in self._impls("postroom_register_commands"):
            commands.plugin = impl.plugin_name
            try:
                result = impl.function(**{name: commands for name in impl.argnames})
                _refuse_awaitable(result, impl.plugin_name, "postroom_register_commands")
            except Exception as exc:
                if isinstance(exc, PluginFailure):
                    exc = exc.cause  # type: ignore[assignment]
                warnings.append(
                    f"plugin {impl.plugin_name!r} failed in postroom_register_commands: "
                    f"{type(exc).__name__}: {exc}; its commands are missing"
                )
            finally:
                commands.plugin = None
        return warnings

    def register_routes(self, ctx: Context) -> list[tuple[str, Route]]:
        """Every plugin's HTTP routes, in plugin order, each with its plugin's name."""
        routes: list[tuple[str, Route]] = []
        for plugin, found in self._call_sync("postroom_register_routes", ctx=ctx):
            if found is None:
                continue
            if isinstance(found, Route) or not isinstance(found, list | tuple):
                raise PluginFailure(
                    plugin,
                    "postroom_register_routes",
                    TypeError(f"returned {type(found).__name__}, not a list of Route or None"),
                )
            routes += [(plugin, route) for route in found]
        return routes

    def startup(self, kernel: Any) -> Deferred[Any]:
        return ensureDeferred(self._call_all("postroom_startup", kernel=kernel))

    async def shutdown(self, kernel: Any) -> None:
        await self._call_tolerant("postroom_shutdown", None, kernel=kernel)

    # -- inbound

    async def fetched(self, message: FetchedMessage, ctx: Context) -> None:
        await self._call_tolerant("postroom_fetched", None, message=message, ctx=ctx)

    async def auth_event(self, mailbox: str, event: str, detail: str, ctx: Context) -> None:
        await self._call_tolerant(
            "postroom_auth_event", None, mailbox=mailbox, event=event, detail=detail, ctx=ctx
        )

    def analyze(
        self,
        message: ParsedMessage,
        ctx: AnalysisContext,
        only: Iterable[str] | None = None,
    ) -> None:
        """Run every ``postroom_analyze`` and merge the findings into ``message.analysis``.

        Synchronous and tolerant, like classify: a failing (or non-mapping, or
        colliding) implementation is logged and noted in ``message.analysis_errors``,
        which the pipeline copies to the interaction's ``_PluginErrors``. *only*
        limits the call to the plugins named (those a worker could not load).
        """
        wanted = None if only is None else set(only)
        for impl in self._impls("postroom_analyze"):
            if wanted is not None and impl.plugin_name not in wanted:
                continue
            args = {name: {"message": message, "ctx": ctx}[name] for name in impl.argnames}
            try:
                result = impl.function(**args)
                _refuse_awaitable(result, impl.plugin_name, "postroom_analyze")
                if result is None:
                    continue
                if not isinstance(result, Mapping):
                    raise TypeError(f"returned {type(result).__name__}, not a mapping or None")
                taken = [key for key in result if key in message.analysis]
                if taken:
                    raise KeyError(f"key(s) {', '.join(map(str, taken))} already set by a plugin")
                message.analysis.update(result)
            except MemoryError:
                raise  # the worker's memory budget: the message is quarantined
            except Exception as exc:
                if isinstance(exc, PluginFailure):
                    exc = exc.cause  # type: ignore[assignment]
                log.exception("plugin %r failed in postroom_analyze", impl.plugin_name)
                message.analysis_errors.append(
                    f"{impl.plugin_name}: postroom_analyze: {type(exc).__name__}: {exc}"
                )

    def parser(self, mailbox: str, ctx: Context) -> IParser:
        parser = self.pm.hook.postroom_parser(mailbox=mailbox, ctx=ctx)
        if parser is None:  # the built-in parser always answers; a plugin may shadow it
            raise RuntimeError("no plugin provides a parser")
        _refuse_awaitable(parser, "a plugin", "postroom_parser")
        return cast("IParser", parser)

    async def classify(
        self, message: ParsedMessage, ctx: Context, interaction: Interaction
    ) -> Verdict:
        results = await self._call_tolerant(
            "postroom_classify", interaction, message=message, ctx=ctx
        )
        verdicts = []
        for plugin, verdict in results:
            if verdict is None:
                continue
            if not isinstance(verdict, Verdict):
                log.error(
                    "plugin %r returned %r from postroom_classify, not a Verdict", plugin, verdict
                )
                continue
            verdicts.append(verdict if verdict.plugin else _with_plugin(verdict, plugin))
        return reduce_verdicts(verdicts)

    async def enrich(self, message: ParsedMessage, interaction: Interaction, ctx: Context) -> None:
        await self._call_tolerant(
            "postroom_enrich", interaction, message=message, interaction=interaction, ctx=ctx
        )

    def expand(
        self, interaction: Interaction, message: ParsedMessage, ctx: Context
    ) -> list[Interaction]:
        result = self.pm.hook.postroom_expand(interaction=interaction, message=message, ctx=ctx)
        if result is None:
            return [interaction]
        _refuse_awaitable(result, "a plugin", "postroom_expand")
        copies = list(result)
        if not copies:
            # acknowledging a message that produced nothing would lose it
            raise ValueError("postroom_expand returned no interaction")
        keys = [c.copy_key for c in copies]
        if len(copies) > 1 and (None in keys or len(set(keys)) != len(keys)):
            raise ValueError("postroom_expand must give every copy a distinct copy_key")
        return copies

    async def _each(
        self, hook: str, only: Collection[str] | None, **values: Any
    ) -> dict[str, Exception | None]:
        """Call every implementation of *hook* (or those of the plugins named in
        *only*) one after the other, tolerantly: each plugin's exception, or
        None when it returned; a failing plugin does not stop the others."""
        outcomes: dict[str, Exception | None] = {}
        for impl in self._impls(hook):
            if only is not None and impl.plugin_name not in only:
                continue
            args = {name: values[name] for name in impl.argnames}
            try:
                await resolve(impl.function(**args))
            except Exception as exc:
                outcomes[impl.plugin_name] = exc
            else:
                outcomes[impl.plugin_name] = None
        return outcomes

    async def committed(
        self, interaction: Interaction, ctx: Context, only: Collection[str] | None = None
    ) -> list[PluginFailure]:
        """Run the side effects of a committed interaction: every implementation, or
        those of the plugins named in *only* (the ones that failed last time).

        Tolerant: a failing plugin does not stop the others; the failures are
        returned (and logged) for the caller to retry.
        """
        outcomes = await self._each("postroom_committed", only, interaction=interaction, ctx=ctx)
        failures = []
        for plugin, exc in outcomes.items():
            if exc is not None:
                log.error("plugin %r failed in postroom_committed", plugin, exc_info=exc)
                failures.append(PluginFailure(plugin, "postroom_committed", exc))
        return failures

    def submit_targets(self) -> list[str]:
        """The hand-off targets: the plugins implementing ``postroom_submit``, in order."""
        return [impl.plugin_name for impl in self._impls("postroom_submit")]

    async def submit_each(
        self, interaction: Interaction, ctx: Context, only: Collection[str] | None = None
    ) -> dict[str, Exception | None]:
        """Hand *interaction* to each target (or those named in *only*: the ones
        still owed it), one after the other: each target's exception, or None
        when it took it. Tolerant: a failing target does not stop the others."""
        return await self._each("postroom_submit", only, interaction=interaction, ctx=ctx)

    async def erase(
        self, address: str, interaction_ids: list[str], dry_run: bool, ctx: Context
    ) -> tuple[dict[str, Any], list[PluginFailure]]:
        """Every plugin's erasure of *address* (``postroom_erase``): what each
        reported, and the plugins that failed (the others still run)."""
        reported: dict[str, Any] = {}
        failures = []
        values = {
            "address": address,
            "interaction_ids": list(interaction_ids),
            "dry_run": dry_run,
            "ctx": ctx,
        }
        for impl in self._impls("postroom_erase"):
            args = {name: values[name] for name in impl.argnames}
            try:
                reported[impl.plugin_name] = await resolve(impl.function(**args)) or {}
            except Exception as exc:
                # the report and the log never name the person erased
                detail = re.sub(re.escape(address), "<address>", str(exc), flags=re.IGNORECASE)
                cause = RuntimeError(f"{type(exc).__name__}: {detail}")
                log.error("plugin %r failed in postroom_erase: %s", impl.plugin_name, cause)
                failures.append(PluginFailure(impl.plugin_name, "postroom_erase", cause))
        return reported, failures

    # -- outbound

    async def field_values(self, request: OutboundRequest, ctx: Context) -> FieldValues:
        """Every ``postroom_field_values``, merged: groups of named values, the first
        plugin to give a name winning. A plugin giving something else than groups
        of strings, numbers and booleans is a PluginFailure."""
        merged: dict[str, dict[str, AttachedValue]] = {}
        for plugin, offered in await self._call_all(
            "postroom_field_values", request=request, ctx=ctx
        ):
            if offered is None:
                continue
            problem = _field_values_problem(offered)
            if problem is not None:
                raise PluginFailure(plugin, "postroom_field_values", TypeError(problem))
            for group, values in offered.items():
                into = merged.setdefault(group, {})
                for name, value in values.items():
                    into.setdefault(name, value)
        return merged

    async def validate_request(self, request: OutboundRequest, ctx: Context) -> None:
        """Every ``postroom_validate_request``: a plugin's RequestError passes through
        as it is (a refused request: 400, exit 2); anything else is a PluginFailure."""
        impls = self._impls("postroom_validate_request")
        fields = await self.field_values(request, ctx) if impls else {}
        for impl in impls:
            given = {"request": request, "ctx": ctx, "fields": fields}
            args = {name: given[name] for name in impl.argnames}
            try:
                await resolve(impl.function(**args))
            except RequestError:
                raise
            except Exception as exc:
                raise PluginFailure(impl.plugin_name, "postroom_validate_request", exc) from exc

    async def render(self, request: OutboundRequest, ctx: Context) -> None:
        """Every ``postroom_render``, with the field values plugins offer, read first."""
        if not self._impls("postroom_render"):
            return
        fields = await self.field_values(request, ctx)
        await self._call_all("postroom_render", request=request, ctx=ctx, fields=fields)

    async def veto(self, request: OutboundRequest, ctx: Context) -> Veto | None:
        """The first plugin's reason why *request* must not be sent, or None."""
        for impl in self._impls("postroom_veto"):
            args = {name: {"request": request, "ctx": ctx}[name] for name in impl.argnames}
            try:
                reason = await resolve(impl.function(**args))
                if reason is not None and not isinstance(reason, str):
                    raise TypeError(f"returned {type(reason).__name__}, not a reason (str) or None")
            except Exception as exc:
                raise PluginFailure(impl.plugin_name, "postroom_veto", exc) from exc
            if reason is not None:
                return Veto(impl.plugin_name, reason.strip() or "no reason given")
        return None

    async def envelope(self, request: OutboundRequest, envelope: Envelope, ctx: Context) -> None:
        await self._call_all("postroom_envelope", request=request, envelope=envelope, ctx=ctx)

    async def sent(self, interaction: Interaction, ctx: Context) -> None:
        await self._call_tolerant("postroom_sent", None, interaction=interaction, ctx=ctx)


#: what ``postroom_field_values`` gives: group -> name -> value
FieldValues = Mapping[str, Mapping[str, AttachedValue]]
#: bounds on what one plugin offers (field codes read names, not documents)
MAX_FIELD_GROUPS = 20
MAX_FIELD_NAMES = 500


def _field_values_problem(offered: Any) -> str | None:
    """Why *offered* is not groups of named strings, numbers and booleans, or None."""
    if not isinstance(offered, Mapping) or len(offered) > MAX_FIELD_GROUPS:
        return f"returned {type(offered).__name__}, not a mapping of at most " \
            f"{MAX_FIELD_GROUPS} groups"  # fmt: skip
    for group, values in offered.items():
        if not isinstance(group, str) or not isinstance(values, Mapping):
            return f"group {group!r}: expected a name and a mapping of values"
        if len(values) > MAX_FIELD_NAMES:
            return f"group {group!r}: more than {MAX_FIELD_NAMES} values"
        for name, value in values.items():
            if not isinstance(name, str) or not isinstance(value, str | int | float | bool):
                return f"{group}.{name!r}: not a string, number or boolean"
    return None


def _refuse_awaitable(result: Any, plugin: str, hook: str) -> None:
    """Synchronous hooks cannot wait: an ``async def`` there is a plugin bug."""
    if isinstance(result, Deferred) or inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise PluginFailure(
            plugin,
            hook,
            TypeError(
                f"{hook} is synchronous: it returned {type(result).__name__}, "
                "not a value (see docs/hooks.md)"
            ),
        )


def _with_plugin(verdict: Verdict, plugin: str) -> Verdict:
    return attrs.evolve(verdict, plugin=plugin)

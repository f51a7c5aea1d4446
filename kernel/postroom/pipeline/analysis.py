"""Parse and analyse a message where a hostile one can be stopped: a worker process.

Everything that reads a message's content, the default parser and every
plugin's ``postroom_analyze``, runs here as one call of the kernel's
:class:`~postroom.workers.BudgetPool`, under the per-message CPU and memory
budget. The gateway gets back a picklable :class:`ParsedMessage` whose
``analysis`` holds the plugins' findings; classify, enrich and expand then
only decide over it and ask the store.

A worker rebuilds the kernel's plugin set once, when it starts, from a
:class:`WorkerSpec`: the validated configuration (it pickles) and the names of
the installed plugins the gateway enabled. Plugin objects an embedding
application registered in-process cannot be rebuilt there unless they are
importable modules; their analysis runs in the gateway after the worker's,
without the budget (the kernel warns at start-up).
"""

from __future__ import annotations

import importlib
import logging
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred

from postroom.context import AnalysisContext
from postroom.model import FetchedMessage, ParsedMessage
from postroom.parsing.limits import ParseLimits
from postroom.parsing.parser import parse_message
from postroom.parsing.spool import Outbound
from postroom.plugins.facade import Hooks
from postroom.plugins.manager import load_plugins

if TYPE_CHECKING:
    from postroom.config.site import MailboxConfig, SiteConfig
    from postroom.plugins.manager import PluginSet
    from postroom.runner import Runner
    from postroom.workers import BudgetPool

log = logging.getLogger(__name__)

ANALYZE_HOOK = "postroom_analyze"


@attrs.frozen
class WorkerSpec:
    """What a worker process needs to rebuild the gateway's analysis."""

    config: SiteConfig
    #: installed hook plugins enabled in the gateway, in plugin order
    installed: tuple[str, ...]
    #: (name, module) of embedded plugins that are importable modules
    modules: tuple[tuple[str, str], ...] = ()


class Analyser:
    """Parse + ``postroom_analyze`` for one plugin set and configuration."""

    def __init__(self, hooks: Hooks, config: SiteConfig) -> None:
        self.hooks = hooks
        self.config = config

    @classmethod
    def from_spec(cls, spec: WorkerSpec) -> Analyser:
        extra = [(name, importlib.import_module(module)) for name, module in spec.modules]
        plugins = load_plugins(list(spec.installed), extra=extra)
        return cls(Hooks(plugins), spec.config)

    def context(self, mailbox: MailboxConfig | None) -> AnalysisContext:
        return AnalysisContext(config=self.config, mailbox=mailbox)

    def analyze(
        self,
        message: ParsedMessage,
        mailbox: MailboxConfig | None,
        only: Iterable[str] | None = None,
    ) -> ParsedMessage:
        self.hooks.analyze(message, self.context(mailbox), only=only)
        return message

    def parse_and_analyze(
        self, fetched: FetchedMessage, limits: ParseLimits, mailbox: MailboxConfig | None
    ) -> ParsedMessage:
        message = parse_message(fetched.raw, limits, fetched.server_size)
        return self.analyze(message, mailbox)


# ------------------------------------------------------- worker entry points

_worker: Analyser | None = None


def setup_worker(spec: WorkerSpec) -> None:
    """BudgetPool set-up: load the plugins once per worker process."""
    global _worker
    logging.basicConfig(level=logging.WARNING)
    _worker = Analyser.from_spec(spec)


def _analyser() -> Analyser:
    if _worker is None:
        raise RuntimeError("this worker process was not set up (setup_worker)")
    return _worker


def worker_parse_and_analyze(
    fetched: FetchedMessage, limits: ParseLimits, mailbox: MailboxConfig | None
) -> Outbound:
    """The result travels as an :class:`Outbound`: large texts in files, not the pickle."""
    return Outbound(_analyser().parse_and_analyze(fetched, limits, mailbox))


def worker_analyze(message: ParsedMessage, mailbox: MailboxConfig | None) -> Outbound:
    return Outbound(_analyser().analyze(message, mailbox))


# ------------------------------------------------------------- in the gateway


def analyzing_plugins(plugins: PluginSet) -> list[str]:
    """Names of the enabled plugins that implement ``postroom_analyze``."""
    caller = getattr(plugins.pm.hook, ANALYZE_HOOK)
    return [impl.plugin_name for impl in caller.get_hookimpls()]


def worker_spec(plugins: PluginSet, config: SiteConfig) -> tuple[WorkerSpec, list[str]]:
    """The spec for worker processes, and the analysing plugins they cannot load."""
    installed = tuple(info.name for info in plugins.infos if info.kind == "hook" and info.enabled)
    modules: list[tuple[str, str]] = []
    local: list[str] = []
    analysing = set(analyzing_plugins(plugins))
    for info in plugins.infos:
        if info.kind != "embedded" or not info.enabled:
            continue
        obj = plugins.pm.get_plugin(info.name)
        if isinstance(obj, types.ModuleType) and _importable(obj):
            modules.append((info.name, obj.__name__))
        elif info.name in analysing:
            local.append(info.name)
    return WorkerSpec(config=config, installed=installed, modules=tuple(modules)), local


def _importable(module: types.ModuleType) -> bool:
    try:
        return importlib.import_module(module.__name__) is module
    except Exception:
        return False


class Analysis:
    """The gateway's side: where each message's parse and analysis run.

    With a :class:`BudgetPool` (the gateway's default) the parse and the
    analysis of every importable plugin run there as one budgeted call;
    *local* plugins (in-process objects a worker cannot import) are analysed
    afterwards through *runner*. Without a pool (``parse-workers: 0``,
    ``postroom ingest``) everything runs through *runner*, unbudgeted.
    """

    def __init__(
        self,
        hooks: Hooks,
        config: SiteConfig,
        runner: Runner,
        pool: BudgetPool | None = None,
        local: Iterable[str] = (),
    ) -> None:
        self.in_process = Analyser(hooks, config)
        self.runner = runner
        self.pool = pool
        self.local = tuple(local)

    @property
    def budgeted(self) -> bool:
        return self.pool is not None

    async def parse_and_analyze(
        self, fetched: FetchedMessage, limits: ParseLimits, mailbox: MailboxConfig | None
    ) -> ParsedMessage:
        if self.pool is None:
            d: Deferred[ParsedMessage] = self.runner.run(
                self.in_process.parse_and_analyze, fetched, limits, mailbox
            )
            return await d
        outbound: Outbound = await self.pool.run(worker_parse_and_analyze, fetched, limits, mailbox)
        return await self._local(outbound.receive(), mailbox)

    async def analyze(self, message: ParsedMessage, mailbox: MailboxConfig | None) -> ParsedMessage:
        """Analysis of a message a plugin's own parser made."""
        if self.pool is None:
            d: Deferred[ParsedMessage] = self.runner.run(self.in_process.analyze, message, mailbox)
            return await d
        outbound: Outbound = await self.pool.run(worker_analyze, message, mailbox)
        return await self._local(outbound.receive(), mailbox)

    async def _local(self, message: ParsedMessage, mailbox: MailboxConfig | None) -> ParsedMessage:
        if not self.local:
            return message
        d: Deferred[Any] = self.runner.run(self.in_process.analyze, message, mailbox, self.local)
        result: ParsedMessage = await d
        return result

"""A real kernel for tests: chosen plugins, a memory store, an injected clock.

:class:`TestKernel` builds the same :class:`~postroom.kernel.Kernel` the
gateway runs, with three differences that make tests deterministic: the
plugins are exactly the ones the test names (after the built-ins), the store
is the memory store, and time is a :class:`twisted.internet.task.Clock` that
only moves when the test advances it. Calls run inline (no threads, no
worker processes), so each method completes before it returns; a call that
would wait (on the clock, on a network) fails loudly instead of hanging.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import types
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Self, TypeVar

import attrs
import yaml
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from postroom.backoff import Backoff
from postroom.config.document import parse_document
from postroom.config.options import SMTP_SECTION
from postroom.config.site import MailboxConfig, SiteConfig
from postroom.context import AnalysisContext, Context
from postroom.errors import ConfigError, ConfigErrors
from postroom.ingest import ingest_mailbox
from postroom.interfaces import AUTH_GROUP, PLUGINS_GROUP
from postroom.kernel import Kernel
from postroom.model import (
    Envelope,
    FetchedMessage,
    HandoffTarget,
    Interaction,
    OutboundRequest,
    OutboxEntry,
    ParsedMessage,
    RawRef,
    Verdict,
)
from postroom.parsing import parse_bytes
from postroom.pipeline.inbound import InboundPipeline, interaction_from, limits_from
from postroom.pipeline.outbound import Preview
from postroom.plugins.facade import PLUGIN_ERRORS_KEY, PluginFailure
from postroom.runner import InlineRunner
from postroom.services.handoff import HandoffService
from postroom.services.mailbox import MailboxService
from postroom.services.outbound import OutboundService, preview_send, queue_send
from postroom.testing.fakes import FakeSender, FakeSource

T = TypeVar("T")

#: the mailbox messages go to when a test names none: the declared defaults
DEFAULT_MAILBOX = "test"

PluginSpec = str | EntryPoint | tuple[str, object] | object
ConfigSpec = str | Mapping[str, Any] | None


def result_of(d: Deferred[T] | Coroutine[Any, Any, T]) -> T:
    """The result of a Deferred (or coroutine) that must already have fired.

    Re-raises its failure. With a :class:`TestKernel` everything runs inline
    and time stands still, so a Deferred that has not fired is waiting for
    the clock (``kernel.clock.advance(seconds)``, then ask again) or for
    something the test did not provide: an ``AssertionError``, never a hang.
    """
    deferred: Deferred[T] = d if isinstance(d, Deferred) else ensureDeferred(d)
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, (
        "the Deferred has not fired: the code waits for the clock (advance "
        "kernel.clock) or for something the test did not provide"
    )
    if isinstance(results[0], Failure):
        results[0].raiseException()
    result: T = results[0]
    return result


def _yaml_text(config: ConfigSpec) -> str:
    if config is None:
        return ""
    if isinstance(config, str):
        return config
    return yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)


def _plugin_name(plugin: object) -> str:
    """The entry-point name an installed plugin object is known by, else its own name."""
    module = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
    for ep in entry_points(group=PLUGINS_GROUP):
        if ep.value.split(":", 1)[0].strip() != module:
            continue
        try:
            if ep.load() is plugin:
                return ep.name
        except Exception:  # a broken entry point is not this plugin
            continue
    return plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__name__


def _split_plugins(plugins: Iterable[PluginSpec]) -> tuple[list[str], list[tuple[str, object]]]:
    installed: list[str] = []
    in_process: list[tuple[str, object]] = []
    for plugin in plugins:
        if isinstance(plugin, str):
            installed.append(plugin)
        elif isinstance(plugin, EntryPoint):
            in_process.append((plugin.name, plugin.load()))
        elif isinstance(plugin, tuple) and len(plugin) == 2 and isinstance(plugin[0], str):
            in_process.append((plugin[0], plugin[1]))
        else:
            in_process.append((_plugin_name(plugin), plugin))
    return installed, in_process


def _assert_survives_pickling(analysis: dict[str, Any]) -> None:
    """The analysis comes back from the worker process pickled: it must survive that."""
    problem = "the analysis does not survive pickling (the worker process sends it back)"
    try:
        copy = pickle.loads(pickle.dumps(analysis))
    except Exception as exc:
        raise AssertionError(f"{problem}: {type(exc).__name__}: {exc}") from exc
    assert copy == analysis, f"{problem}: {copy!r} != {analysis!r}"


def _first_config_error(errors: ConfigErrors) -> ConfigError:
    return errors.errors[0] if errors.errors else ConfigError(str(errors))


class TestKernel:
    """A kernel with exactly the given plugins, a memory store and a ``task.Clock``.

    *plugins*: each a name of an installed plugin (loaded from its entry point,
    as ``plugins: [name]`` in a site would), an ``importlib.metadata.EntryPoint``
    (a plugin as it will be installed, without installing it), a ``(name,
    object)`` pair, or a plugin object or module (named after the installed
    entry point that points at it, else after itself). The built-in plugins
    come first, then the others in the order given, then the installed ones
    named; no other installed plugin is loaded.

    *config*: the site configuration as YAML text or a mapping, validated
    against the options the plugins and the configured drivers declare; an
    invalid one raises the first :class:`~postroom.errors.ConfigError` (file
    ``site.yaml``, its line and option; every problem is in its
    ``__cause__``). Relative paths in it are read from *base_dir* (default: the
    current directory). The store is *store* (default ``{"driver": "memory"}``)
    whatever the configuration says; outbound mail goes to *sender* (default:
    a :class:`FakeSender`, :attr:`sender`). OAuth auth drivers send token
    requests with *token_http* (default: the kernel's ``TokenHTTP``, which
    needs a running reactor: give a :class:`BlockingTokenHTTP`);
    :meth:`authenticator` builds a mailbox's auth driver. *reactor* is the
    kernel's reactor (``kernel.reactor``: what plugins open network
    connections with, e.g. a hand-off target's HTTPS client); by default the
    clock, which connects nowhere. A test giving a real one (a private
    ``SelectReactor``) drives it itself and uses :meth:`ingest_deferred`;
    time stays the clock's.

    Use it as a context manager, or call :meth:`close`: the store is opened
    and the ``postroom_startup`` hooks run when it is built.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self,
        plugins: Iterable[PluginSpec] = (),
        config: ConfigSpec = None,
        *,
        clock: task.Clock | None = None,
        sender: Any = None,
        store: Mapping[str, Any] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        token_http: Any = None,
        reactor: Any = None,
    ) -> None:
        installed, in_process = _split_plugins(plugins)
        self.clock: task.Clock = clock if clock is not None else task.Clock()
        document = parse_document(
            _yaml_text(config),
            file="site.yaml",
            base_dir=Path(base_dir) if base_dir is not None else None,
        )
        try:
            #: the :class:`~postroom.api.Kernel` under test
            self.kernel = Kernel(
                document,
                reactor=reactor if reactor is not None else self.clock,
                clock=self.clock,
                runner=InlineRunner(),
                plugins=in_process,
                enabled_plugins=installed,
                store_override=dict(store) if store is not None else {"driver": "memory"},
            )
        except ConfigErrors as exc:
            raise _first_config_error(exc) from exc
        if token_http is not None:
            # OAuth token requests go where the test says (a BlockingTokenHTTP)
            self.kernel.oauth.http = token_http
        #: where outbound mail goes: a :class:`FakeSender` unless given
        self.sender = sender if sender is not None else FakeSender()
        self._pipeline = InboundPipeline(self.kernel.hooks, self.kernel.ctx, self.kernel.analysis)
        self._handoff = HandoffService(self.kernel)
        #: without jitter: a temporary send failure is retried after exactly
        #: 30 s, then 60 s, 120 s... of the clock
        self._outbound = OutboundService(
            self.kernel, self.sender, backoff=Backoff(initial=30.0, maximum=3600.0, jitter=0.0)
        )
        self._spool = tempfile.mkdtemp(prefix="postroom-testkernel-")
        self._count = 0
        self._made_mailboxes: dict[str, MailboxConfig] = {}
        self._closed = False
        result_of(self.kernel.open())

    # -- life

    def close(self) -> None:
        """Run the shutdown hooks, close the store and the sender, remove spool files."""
        if self._closed:
            return
        self._closed = True
        try:
            result_of(self.kernel.close())
            result_of(self.sender.close())
        finally:
            for name in os.listdir(self._spool):
                os.unlink(os.path.join(self._spool, name))
            os.rmdir(self._spool)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what the kernel is

    @property
    def config(self) -> SiteConfig:
        """The validated site configuration (``config.get(section, name)``)."""
        return self.kernel.config

    @property
    def ctx(self) -> Context:
        """The pipeline hooks' ``ctx`` for the default mailbox."""
        return self.kernel.ctx.for_mailbox(self.mailbox())

    @property
    def store(self) -> Any:
        """The store as hooks see it (``ctx.store``): methods return Deferreds;
        wrap them in :func:`result_of`."""
        return self.kernel.store

    @property
    def plugins(self) -> list[str]:
        """The plugin order: the names every hook is called in, built-ins first."""
        return list(self.kernel.plugins.order)

    def hooks_of(self, name: str) -> list[str]:
        """The hooks plugin *name* implements, as the kernel registered them."""
        plugin = self.kernel.plugins.pm.get_plugin(name)
        if plugin is None:
            raise KeyError(f"no plugin {name!r} is loaded (loaded: {', '.join(self.plugins)})")
        return self.kernel.plugins.hooks_of(plugin)

    def mailbox(self, name: str | None = None) -> MailboxConfig:
        """The site's mailbox *name*, or a mailbox of declared defaults when the
        site has none of that name (default name: ``test``)."""
        name = name or DEFAULT_MAILBOX
        for mailbox in self.config.mailboxes:
            if mailbox.name == name:
                return mailbox
        if name not in self._made_mailboxes:
            self._made_mailboxes[name] = ingest_mailbox(self.kernel, name)
        return self._made_mailboxes[name]

    def authenticator(self, name: str | None = None) -> Any:
        """The auth driver of mailbox *name* (``smtp-client``: the sender's),
        built as the gateway builds it, with the kernel's OAuth runtime.
        A mailbox of the site only; an ``AssertionError`` when the kernel loaded
        no auth driver for it (its ``auth`` is not installed, or its ``type``
        logs in to nothing)."""
        config: Any
        if name == SMTP_SECTION:
            config = self.config.smtp
            assert config is not None, "the site has no smtp-client section"
            auth = str(config.get("auth"))
        else:
            config = self.config.mailbox(name or DEFAULT_MAILBOX)
            auth = config.auth
        cls = self.kernel.drivers.get((AUTH_GROUP, auth))
        assert cls is not None, f"no auth driver {auth!r} was loaded for {name or DEFAULT_MAILBOX}"
        return cls(config, self.kernel.driver_context())

    def now(self) -> datetime:
        """The clock's time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.clock.seconds(), UTC)

    # -- inbound: the whole pipeline

    def ingest(
        self, data: bytes, mailbox: str | None = None, *, source_key: str | None = None
    ) -> list[Interaction]:
        """Run *data* (an ``.eml``) through the inbound pipeline, as a mailbox does.

        parse and ``postroom_analyze``, classify, enrich, expand, commit to the
        store, then one hand-off attempt (``postroom_submit``) per new
        interaction. Returns the interactions made: new ones, then duplicates
        (``duplicate_of`` set) of what an earlier ingest stored. *source_key*
        defaults to a fresh one per call, so only the content (and, when the
        site enables it, the Message-ID) makes a duplicate.
        """
        return result_of(self.ingest_deferred(data, mailbox, source_key=source_key))

    def ingest_deferred(
        self, data: bytes, mailbox: str | None = None, *, source_key: str | None = None
    ) -> Deferred[list[Interaction]]:
        """:meth:`ingest` for a test that drives the clock: a Deferred."""
        return ensureDeferred(self._ingest(data, mailbox, source_key))

    async def _ingest(
        self, data: bytes, mailbox_name: str | None, source_key: str | None
    ) -> list[Interaction]:
        mailbox = self.mailbox(mailbox_name)
        self._count += 1
        path = os.path.join(self._spool, f"{self._count}.eml")
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            fetched = FetchedMessage(
                mailbox=mailbox.name,
                source_key=source_key or f"testing:{self._count}",
                raw=RawRef.from_path(path),
                received_at=self.now(),
            )
            processed = await self._pipeline.process(fetched, mailbox)
        finally:
            os.unlink(path)
        self._handoff.submit(processed.result.new)
        await self._handoff.wait_idle()
        # as stored, hand-off state included
        stored = [await self.kernel.store.get_interaction(i.id) for i in processed.result.new]
        return [*stored, *processed.result.duplicates]

    def poll(self, source: FakeSource) -> PollResult:
        """One pass of the mailbox ``source.mailbox`` over *source*: the real
        mailbox service (fetch, pipeline, acknowledge or release, quarantine
        after ``max-attempts``, hand-off). Fails if the service misused the
        source (:attr:`FakeSource.problems`)."""
        mailbox = self.mailbox(source.mailbox)
        handoff = _RecordingHandoff(self.kernel)
        service = MailboxService(self.kernel, mailbox, self._pipeline, handoff, once=True)
        service.source = source
        service.startService()
        try:
            ok = result_of(service.finished)
            result_of(handoff.wait_idle())
        finally:
            result_of(service.stopService())
        assert source.problems == [], f"the mailbox service misused the source: {source.problems}"
        health = service.health
        stored = [self.interaction(i.id) for i in handoff.submitted]
        return PollResult(
            interactions=[i for i in stored if i is not None],
            ok=ok,
            failed=health.failed,
            quarantined=health.quarantined,
        )

    # -- inbound: one stage at a time

    def parse(self, data: bytes, mailbox: str | None = None) -> ParsedMessage:
        """*data* parsed with the site's limits, without analysis (``message.analysis`` empty)."""
        ctx = self.kernel.ctx.for_mailbox(self.mailbox(mailbox))
        return parse_bytes(data, limits_from(ctx))

    def analyze(
        self, message: bytes | ParsedMessage, mailbox: str | None = None, *, strict: bool = True
    ) -> ParsedMessage:
        """Parse (unless given a ``ParsedMessage``) and run every plugin's
        ``postroom_analyze``, as the worker process does; the message with its
        ``analysis`` filled.

        *strict*: fail (``AssertionError``) when a plugin's analysis failed
        (``message.analysis_errors``) or would not survive the trip back from
        the worker process (it must pickle and compare equal after).
        """
        parsed = self.parse(message, mailbox) if isinstance(message, bytes) else message
        ctx = AnalysisContext(config=self.config, mailbox=self.mailbox(mailbox))
        self.kernel.hooks.analyze(parsed, ctx)
        if strict:
            assert parsed.analysis_errors == [], parsed.analysis_errors
            _assert_survives_pickling(parsed.analysis)
        return parsed

    def _prepared(
        self, message: bytes | ParsedMessage, interaction: Interaction | None, mailbox: str | None
    ) -> tuple[ParsedMessage, Interaction, Context]:
        parsed = self.analyze(message, mailbox) if isinstance(message, bytes) else message
        box = self.mailbox(mailbox)
        if interaction is None:
            interaction = interaction_from(
                parsed, tenant_id=self.config.tenant_id, mailbox=box.name
            )
        return parsed, interaction, self.kernel.ctx.for_mailbox(box)

    def classify(
        self,
        message: bytes | ParsedMessage,
        interaction: Interaction | None = None,
        mailbox: str | None = None,
    ) -> Verdict:
        """Every ``postroom_classify``, reduced to the winning verdict.

        Bytes are parsed and analysed first; a ``ParsedMessage`` is used as it
        is (analyse it with :meth:`analyze`, or leave it unanalysed to test
        that your plugin notices). A plugin that fails is noted in
        *interaction*'s ``_PluginErrors``, as in the pipeline.
        """
        parsed, target, ctx = self._prepared(message, interaction, mailbox)
        return result_of(self.kernel.hooks.classify(parsed, ctx, target))

    def enrich(
        self,
        message: bytes | ParsedMessage,
        interaction: Interaction | None = None,
        mailbox: str | None = None,
    ) -> Interaction:
        """Classify (subtype and the winner's attached data go on the
        interaction) then every ``postroom_enrich``, as the pipeline runs them;
        the interaction, not stored. *interaction* defaults to the one the
        pipeline makes from the message."""
        parsed, target, ctx = self._prepared(message, interaction, mailbox)
        if parsed.analysis_errors:
            target.attached_data[PLUGIN_ERRORS_KEY] = "\n".join(parsed.analysis_errors)
        verdict = result_of(self.kernel.hooks.classify(parsed, ctx, target))
        target.subtype = verdict.subtype
        target.attached_data.update(verdict.attached_data)
        result_of(self.kernel.hooks.enrich(parsed, target, ctx))
        return target

    def expand(
        self,
        message: bytes | ParsedMessage,
        interaction: Interaction | None = None,
        mailbox: str | None = None,
    ) -> list[Interaction]:
        """``postroom_expand`` for *interaction* (default: the enriched one):
        the interactions the pipeline would commit, not stored."""
        parsed = self.analyze(message, mailbox) if isinstance(message, bytes) else message
        target = interaction if interaction is not None else self.enrich(parsed, None, mailbox)
        ctx = self.kernel.ctx.for_mailbox(self.mailbox(mailbox))
        return self.kernel.hooks.expand(target, parsed, ctx)

    # -- outbound

    def envelope(self, request: OutboundRequest, envelope: Envelope | None = None) -> Envelope:
        """Every ``postroom_envelope``, as the outbox runs them before building the
        message; the envelope (default: From and every recipient as given).
        A plugin's exception propagates as the plugin raised it."""
        if envelope is None:
            envelope = Envelope(
                mail_from=request.from_addr or "",
                rcpt_to=[*request.to, *request.cc, *request.bcc],
            )
        try:
            result_of(self.kernel.hooks.envelope(request, envelope, self.kernel.ctx))
        except PluginFailure as exc:
            raise exc.cause from exc
        return envelope

    def send(self, request: OutboundRequest) -> Interaction:
        """Queue *request* (validated; a refused one raises and stores nothing),
        then run the outbox once: render, envelope, build, hand it to
        :attr:`sender`. Returns the outbound interaction as stored after the
        attempt: ``status`` ``Sent``, ``Failed`` (``_SendError`` in its
        attached data) or ``Queued`` again after a temporary failure (advance
        the clock past the back-off, 30 s for the first retry, then
        :meth:`run_outbox`)."""
        interaction = result_of(queue_send(self.kernel, request, self._outbound.forbidden))
        self.run_outbox()
        stored: Interaction = result_of(self.kernel.store.get_interaction(interaction.id))
        return stored

    def preview(self, request: OutboundRequest) -> Preview:
        """What :meth:`send` would send, nothing stored, queued or sent (``postroom
        render``): *request* validated (a refused one raises
        :class:`~postroom.api.RequestError`), rendered, vetoed, enveloped and built
        as the outbox does. ``preview.sendable``, ``preview.as_json()``; the veto
        or error is in the preview, not raised."""
        preview: Preview = result_of(preview_send(self.kernel, request, self._outbound.pipeline))
        return preview

    def run_outbox(self) -> int:
        """One pass of the outbox worker: send what is due now; how many it tried."""
        return result_of(self._outbound.run_pass())

    # -- the store

    def interactions(self, mailbox: str | None = None) -> list[Interaction]:
        """Every stored interaction (of *mailbox*), oldest first."""
        found: list[Interaction] = result_of(
            self.kernel.store.list_interactions(1_000_000, 0, mailbox)
        )
        return list(reversed(found))

    def interaction(self, interaction_id: str) -> Interaction | None:
        """The stored interaction, or None."""
        found: Interaction | None = result_of(self.kernel.store.get_interaction(interaction_id))
        return found

    def handoff_state(self, interaction_id: str) -> str | None:
        """``pending``, ``done``, ``failed`` or ``refused`` (overall); None for an
        unknown interaction."""
        status = result_of(self.kernel.store.handoff_status(interaction_id))
        return None if status is None else str(status[0])

    def handoff_targets(self, interaction_id: str) -> dict[str, HandoffTarget]:
        """Each hand-off target's state of the interaction, by target (plugin) name."""
        rows: list[HandoffTarget] = result_of(self.kernel.store.handoff_targets(interaction_id))
        return {row.target: row for row in rows}

    def outbox(self, state: str | None = None) -> list[OutboxEntry]:
        """Outbox entries (in *state*), oldest first."""
        entries: list[OutboxEntry] = result_of(self.kernel.store.list_outbox(state))
        return entries


@attrs.frozen
class PollResult:
    """What one :meth:`TestKernel.poll` pass did."""

    #: the interactions committed and handed off, in order
    interactions: list[Interaction]
    #: False when a message failed (see ``failed``, ``quarantined``)
    ok: bool
    failed: int
    quarantined: int


class _RecordingHandoff(HandoffService):
    """The hand-off service, remembering what the mailbox handed it."""

    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel)
        self.submitted: list[Interaction] = []

    def submit(self, interactions: list[Interaction]) -> None:
        self.submitted.extend(interactions)
        super().submit(interactions)


def site_config(
    config: ConfigSpec,
    *,
    plugins: Sequence[PluginSpec] = (),
    base_dir: str | os.PathLike[str] | None = None,
) -> SiteConfig:
    """*config* (YAML text or a mapping) validated against the options of the
    built-ins, *plugins* and the drivers it names, and passed through
    ``postroom_configure``. Raises the first
    :class:`~postroom.errors.ConfigError` (file ``site.yaml``, line, option)."""
    with TestKernel(plugins, config, base_dir=base_dir) as kernel:
        return kernel.config

"""Hook specifications: every place a plugin can take part in the gateway.

A hook plugin is any module or object with functions named like the specs
below and decorated with :data:`postroom.hookimpl`; installed distributions
advertise theirs in the entry-point group ``postroom.plugins``. An
implementation may accept any *subset* of a hook's arguments, so arguments are
only ever added to these specs, never removed or renamed.

Two kinds of hooks:

* **provider** hooks (``firstresult``): synchronous; the first plugin that
  returns something other than ``None`` provides the object, whose methods
  return Deferreds. (pluggy cannot wait for a Deferred, and a Deferred is never
  ``None``, so a provider never returns one itself.)
* **collect-all** hooks: every enabled plugin is called, in plugin order; an
  implementation may be a plain function, return a Deferred, or be an
  ``async def``: the kernel awaits each result in turn
  (:class:`postroom.plugins.facade.Hooks`).

The stages of the design card and where each is carried:

======== =========================================================
fetch    source driver (``postroom.sources``) + :func:`postroom_fetched`
auth     auth driver (``postroom.auth``) + :func:`postroom_auth_event`
parse    :func:`postroom_parser` (provider) + :func:`postroom_analyze`
         (in the worker process that parsed the message)
classify :func:`postroom_classify`
enrich   :func:`postroom_enrich`
expand   :func:`postroom_expand` (fan-out: one interaction in, several out)
commit   the store; then :func:`postroom_committed` (side effects, once)
submit   :func:`postroom_submit` (the hand-off to routing, only that)
queue    :func:`postroom_validate_request` (a send request refused before it is stored)
render   :func:`postroom_render` (only rendering), then :func:`postroom_veto`
send     sender driver (``postroom.senders``) + :func:`postroom_envelope`,
         :func:`postroom_sent`
======== =========================================================

One job per hook: a hook that is retried for its own sake (the hand-off, a
send attempt) never carries another job's side effects, so a retry repeats
nothing else.

Drivers are resolved by the kernel from the configuration (stevedore); hooks
never duplicate that choice.

Two hooks extend the gateway's surfaces rather than a stage (datasette's
``register_commands`` and ``register_routes`` are the model):
:func:`postroom_register_commands` adds ``postroom`` commands and
:func:`postroom_register_routes` adds HTTP API routes, so a plugin brings its
own commands and routes without the kernel knowing them.

Plugin order: with a ``plugins:`` list in the site configuration, that list's
order; without one, the kernel's built-in plugins first, then installed
plugins sorted by entry-point name. The kernel registers plugins in reverse so
that pluggy, which calls the last registered first, calls them in plugin order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from postroom import hookspec

if TYPE_CHECKING:
    from postroom.cli.commands import PluginCommands
    from postroom.config.options import OptionSchema
    from postroom.context import AnalysisContext, Context
    from postroom.interfaces import IParser
    from postroom.model import (
        AttachedValue,
        Envelope,
        FetchedMessage,
        Interaction,
        OutboundRequest,
        ParsedMessage,
        Verdict,
    )
    from postroom.routes import Route
    from postroom.store.sql.migrations import PluginMigrations


# ------------------------------------------------------------------ lifecycle


@hookspec
def postroom_add_options(schema: OptionSchema) -> None:
    """Declare the options this plugin reads, with ``schema.add(...)``.

    Called once per kernel, before the site configuration is validated, for
    every enabled hook plugin and every loaded driver. An option exists in
    exactly one declaration; validation, ``postroom check`` and
    ``docs/configuration.md`` are derived from them.
    """


@hookspec
def postroom_configure(config: Any) -> None:
    """The validated :class:`postroom.config.SiteConfig` is ready.

    Read your options here (``config.get(section, name)``) and raise
    :class:`postroom.errors.ConfigError` for combinations a single option's
    type cannot express. Synchronous.
    """


@hookspec
def postroom_startup(kernel: Any) -> Any:
    """The gateway is starting (collect-all; may return a Deferred).

    *kernel* is the :class:`postroom.kernel.Kernel`. Open connections, start
    background work. A failure stops start-up.
    """


@hookspec
def postroom_shutdown(kernel: Any) -> Any:
    """The gateway is stopping (collect-all; may return a Deferred). Release
    what ``postroom_startup`` took. Failures are logged, not raised."""


@hookspec
def postroom_store_migrations(dialect: str) -> PluginMigrations | None:
    """Give the migrations of this plugin's own tables in the SQL *dialect*
    (``sqlite``, ``postgresql``), or None when it keeps none there (collect-all;
    synchronous).

    Called once per kernel, after ``postroom_configure``, when the configured
    store provides :class:`postroom.interfaces.ISQLAccess`; the store applies
    them at ``open()`` in the plugin's own version track
    (:class:`postroom.api.PluginMigrations`: ``PluginMigrations.from_package``
    reads ``sql/<dialect>/NNNN_name.sql`` from a package). The plugin then
    queries its tables with ``ctx.store.run_in_transaction(work)``. Feature
    data a single plugin needs lives there, never in the kernel's schema.
    """


# ---------------------------------------------------------- extension points


@hookspec
def postroom_register_commands(commands: PluginCommands) -> None:
    """Add ``postroom`` commands (collect-all, synchronous).

    *commands* is a :class:`postroom.api.PluginCommands`: ``commands.add(name,
    help=...)`` gives an ``argparse`` parser for a new top-level command;
    ``commands.site_command(parser, run)`` makes it (or one of its sub-commands)
    take ``-c SITE`` and run ``await run(args, kernel)`` with the site's kernel,
    its store open; *run* returns the exit status. Called when the ``postroom``
    command line is built, with every installed hook plugin (the site is not read
    yet); a site command of a plugin the site does not enable exits 2. A failing
    implementation is a warning; the other commands still work.
    """


@hookspec
def postroom_register_routes(ctx: Context) -> list[Route] | None:
    """Give HTTP API routes (collect-all, synchronous): a list of
    :class:`postroom.api.Route`, or None.

    Called once when the gateway's API is built, with the site's *ctx*. A route
    is a method, a path template (``/responses/{id}``: a ``{name}`` segment
    matches one path segment, given to the handler as ``request.url_vars``) and
    a handler: ``handler(request)`` with a :class:`postroom.api.RouteRequest`,
    returning a :class:`postroom.api.Response` or a JSON value (200), plain, as
    a Deferred or ``async def``. Routes sit behind the API's bearer token and
    body limit. A route that clashes with the kernel's or another plugin's, or
    is malformed, stops the gateway from starting, naming the plugin.
    """


# ---------------------------------------------------------------------- fetch


@hookspec
def postroom_fetched(message: FetchedMessage, ctx: Context) -> Any:
    """A message was fetched from a mailbox and is about to be parsed
    (collect-all, for observers: archiving, metrics). Its raw bytes are at
    ``message.raw.path``. Return values are ignored."""


# ----------------------------------------------------------------------- auth


@hookspec
def postroom_auth_event(mailbox: str, event: str, detail: str, ctx: Context) -> Any:
    """An authentication event on *mailbox* (collect-all, for observers).

    *event* is one of ``login-ok``, ``login-failed``, ``token-refreshed``,
    ``needs-reauthorisation``. *detail* is a human message and never contains
    a secret. Use it to alert operators or persist a rotated refresh token.
    """


# ---------------------------------------------------------------------- parse


@hookspec(firstresult=True)
def postroom_parser(mailbox: str, ctx: Context) -> IParser | None:
    """Provide the :class:`postroom.interfaces.IParser` for *mailbox* (provider).

    Return ``None`` to leave the choice to the next plugin; the kernel's own
    parser (the standard ``email`` package, in the thread pool) comes last.
    The parser's result must pickle: it may run in another process.
    """


@hookspec
def postroom_analyze(message: ParsedMessage, ctx: AnalysisContext) -> Mapping[str, Any] | None:
    """Read the message's content, in the worker process that parsed it (collect-all,
    synchronous).

    Anyone on the internet can send a message, so every scan of its content (regular
    expressions, report parsing, address lists) belongs here: the worker runs it
    under the per-message CPU and memory budget and is killed and replaced when a
    message exceeds it. Return plain, picklable findings (str, int, float, bool,
    None, tuples, lists, dicts, attrs classes of those) under keys prefixed with
    your plugin's name, or ``None``; the kernel merges them into
    ``message.analysis``, where :func:`postroom_classify`,
    :func:`postroom_enrich` and :func:`postroom_expand` read them in the gateway
    without scanning the content again.

    *ctx* is an :class:`postroom.context.AnalysisContext`: the configuration and
    the mailbox, no store, clock or network (a worker has none of them).
    """


# ------------------------------------------------------------------- classify


@hookspec
def postroom_classify(message: ParsedMessage, ctx: Context) -> Verdict | None:
    """Decide the interaction subtype (collect-all; may be async).

    Return a :class:`postroom.model.Verdict` or ``None`` (no opinion). When
    classifiers disagree: the verdict with the highest ``priority`` wins; on
    equal priority the plugin that comes first in plugin order wins. No verdict
    at all means ``InboundNew``. The winner's ``attached_data`` is merged into
    the interaction. Classifiers that only *tag* (priority, language, spam)
    should return no verdict and write attached data in
    :func:`postroom_enrich` instead.
    """


# --------------------------------------------------------------------- enrich


@hookspec
def postroom_enrich(message: ParsedMessage, interaction: Interaction, ctx: Context) -> Any:
    """Add attached data and threading to *interaction* (collect-all; may be async).

    Runs after classification, in plugin order; each plugin writes only its
    own keys of ``interaction.attached_data`` (prefix them with your plugin's
    name unless the specification names the key). May set
    ``interaction.parent_id``. Store look-ups: ``await ctx.store.find_by_message_id(...)``.
    """


# --------------------------------------------------------------------- expand


@hookspec(firstresult=True)
def postroom_expand(
    interaction: Interaction, message: ParsedMessage, ctx: Context
) -> list[Interaction] | None:
    """Fan out one interaction into several (the recipient split; provider-style).

    Synchronous. Return ``None`` to leave the interaction alone, or the list of
    interactions to store *instead* of it. Each copy must have a deterministic
    ``copy_key`` (e.g. the recipient address, lower-cased): the store
    deduplicates copies by (source key, copy key), which makes a fan-out that
    crashed half-way complete exactly once when the message is fetched again.
    """


# --------------------------------------------------------------------- commit


@hookspec
def postroom_committed(interaction: Interaction, ctx: Context) -> Any:
    """Side effects of a committed interaction (collect-all; may be async): put a
    hard-bounced address on the suppression list, count an automatic mail.

    Called for every new interaction after the store committed it, apart from its
    hand-off: a hand-off that is retried never calls it again. At least once, not
    exactly once: a failing implementation is called again with back-off (the
    hand-off's retry rules; the implementations that succeeded are not), and a
    process that stops before the kernel recorded the success calls every
    implementation again on restart. So make it idempotent per ``interaction.id``
    (the store's ``suppress`` and exchange records are). The other plugins still
    run when one fails, and so does the hand-off.
    """


# --------------------------------------------------------------------- submit


@hookspec
def postroom_submit(interaction: Interaction, ctx: Context) -> Any:
    """Hand a committed interaction to routing, and only that (collect-all; may
    be async).

    Called after the store committed it and the source was acknowledged. Each
    plugin implementing this hook is a *target* with its own hand-off state per
    interaction (``pending``, ``done``, ``failed``, ``refused``): a target that
    returns has taken it and is never called for it again; one that raises (or
    fails the Deferred) is retried later with back-off, and only it: the
    targets that took it are not called again. Raise
    :class:`~postroom.api.HandoffError` with a message saying why (no secrets:
    it is stored, logged and shown); ``HandoffError(msg, permanent=True)``
    refuses the interaction for good (a webhook's 410): the target is marked
    ``refused`` and not retried until someone asks (``postroom interactions
    retry-handoff``, ``POST /interactions/{id}/retry-handoff``). Any other
    exception means "not now".

    A target may still be called more than once for an interaction (a crash
    between its success and the record of it, a retry asked for): use
    ``interaction.id`` as the idempotency key, and keep side effects out of it
    (they belong in :func:`postroom_committed`). Hand-off never waits for an
    enrichment being retried: enrichment runs before commit; a plugin that
    enriches late adds data after hand-off, which goes with what is known.
    Each target's state, attempts and last error show in ``postroom
    interactions show`` and ``GET /interactions/{id}``.
    """


# ---------------------------------------------------------------------- queue


@hookspec
def postroom_field_values(
    request: OutboundRequest, ctx: Context
) -> Mapping[str, Mapping[str, AttachedValue]] | None:
    """Values a renderer's field codes may read, from what this plugin knows of
    *request* (collect-all; may be async).

    Return groups of named values, e.g. ``{"Contact": {"FirstName": "Jürgen"}}``
    (the chat transcript's ``userData``; a directory look-up), or ``None``.
    The kernel merges every plugin's in plugin order (the first to give a name
    wins) and passes the result as ``fields`` to :func:`postroom_validate_request`
    and :func:`postroom_render`; a renderer lets the request's own values win
    over them. Values are strings, numbers or booleans. Read only: do not
    change *request*; a value that cannot be found is simply left out.
    """


@hookspec
def postroom_validate_request(
    request: OutboundRequest, ctx: Context, fields: Mapping[str, Mapping[str, AttachedValue]]
) -> Any:
    """Refuse a send request before it is stored (collect-all; may be async).

    Called for every ``POST /send``, ``POST /render``, ``postroom send``,
    ``postroom render`` and ``Gateway.send``, after the kernel's own validation,
    the reply fill (``in_reply_to``) and the default From, before anything is
    stored. Raise :class:`postroom.api.RequestError` (``field``: the request's
    key, e.g. ``options``) to refuse it: the HTTP API answers 400 naming the
    field, ``postroom send`` exits 2, nothing is queued; later plugins are not
    asked. Check only; do not change *request* (rendering does, at send time).
    Any other exception fails the call as well (HTTP 500), nothing queued.
    *fields*: the values other plugins offer (:func:`postroom_field_values`).
    """


# --------------------------------------------------------------------- render


@hookspec
def postroom_render(
    request: OutboundRequest, ctx: Context, fields: Mapping[str, Mapping[str, AttachedValue]]
) -> Any:
    """Render an outbound request's body in place (collect-all; may be async).

    Called in plugin order before the message is built, so a later plugin sees
    an earlier one's work (templates first, then transcripts, then CSS). Only
    rendering: a request that must not be sent is refused by
    :func:`postroom_veto`. *fields*: the values other plugins offer for field
    codes (:func:`postroom_field_values`), read before any renderer ran.
    """


@hookspec
def postroom_veto(request: OutboundRequest, ctx: Context) -> str | None:
    """Say why a rendered outbound request must not be sent, or ``None``
    (collect-all; may be async).

    Called in plugin order for every send attempt, after rendering, before the
    envelope; the first reason ends the request: its outbox entry is
    ``failed``, with ``vetoed by <plugin>: <reason>`` as the outbound
    interaction's ``_SendError``, and is never retried. Later plugins are not
    asked. An implementation that raises fails that send attempt (retried with
    back-off), as any outbound hook does.
    """


# ----------------------------------------------------------------------- send


@hookspec
def postroom_envelope(request: OutboundRequest, envelope: Envelope, ctx: Context) -> Any:
    """Contribute to an outbound message's SMTP envelope and headers
    (collect-all; may be async): e.g. DSN ``NOTIFY``/``RET``/``ENVID``
    parameters, ``Disposition-Notification-To``. Forbidden headers are removed
    after this hook, whatever it adds."""


@hookspec
def postroom_sent(interaction: Interaction, ctx: Context) -> Any:
    """An outbound interaction was sent, or failed for good (its ``status``
    says which: ``Failed`` for good; sent, ``Sent``, or ``PartlyFailed`` when the
    server refused some recipients). Collect-all, for observers."""


# -------------------------------------------------------------------- erasure


@hookspec
def postroom_erase(address: str, interaction_ids: list[str], dry_run: bool, ctx: Context) -> Any:
    """Erase a person from this plugin's own data (collect-all; may be async):
    ``postroom erase --address`` (docs/operations.md, "Erasure").

    *address* is normalised (lower case, ASCII domain); *interaction_ids* are
    the interactions the kernel removes whole (erased already, unless
    *dry_run*). Delete or rewrite every row of your tables that names the
    address or belongs to those interactions, and return what you did (or, with
    *dry_run*, would do) as ``{"table": rows}``; change nothing on a dry run.
    Raise when you cannot: the erasure is then reported incomplete and the
    command exits non-zero, never silently partial. Idempotent: a failed erasure
    is completed by running it again. Plugins with no per-person data need not
    implement it; the kernel then verifies every text column of the store's
    database (plugins' tables too) for the address.
    """

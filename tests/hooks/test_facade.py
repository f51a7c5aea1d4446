"""The hooks facade (postroom.plugins.facade.Hooks) with in-process plugins.

One test (or more) per hook: how results are awaited, in which order plugins
run, what a failing plugin costs, and how classifier verdicts are reduced.
Everything runs synchronously (InlineRunner, task.Clock, Deferreds fired by
the test), so a Deferred that has not fired is a failure, never a wait.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import attrs
import pytest
from twisted.internet import defer, task
from twisted.internet.defer import Deferred, ensureDeferred

from postroom import hookimpl
from postroom.backoff import Backoff
from postroom.builtin.parser import DefaultParser
from postroom.config.options import InvalidOption, OptionSchema
from postroom.context import Context
from postroom.drivers import SendResult
from postroom.drivers.filesender import FileSender
from postroom.errors import ConfigError, PluginLoadError
from postroom.loginpolicy import LoginPolicy
from postroom.metrics import Metrics
from postroom.model import (
    Envelope,
    FetchedMessage,
    HandoffOutcome,
    HandoffTarget,
    Interaction,
    InteractionType,
    OutboundRequest,
    OutboxEntry,
    ParsedMessage,
    RawRef,
    Subtype,
    Verdict,
)
from postroom.plugins.facade import PLUGIN_ERRORS_KEY, Hooks, PluginFailure
from postroom.plugins.manager import BUILTIN_PLUGINS, load_plugins
from postroom.services.handoff import HandoffService
from postroom.services.outbound import OutboundService
from tests.conftest import run
from tests.hooks.sample_plugins import TRACE, append_trace
from tests.hooks.support import FakeConfig, FakeStore, hooks_with, make_ctx, sample

KERNEL = object()  # what the lifecycle hooks get as `kernel`


def fetched_message() -> FetchedMessage:
    return FetchedMessage(
        mailbox="support", source_key="1", raw=RawRef(path="/nonexistent", size=0, sha256="0")
    )


def request() -> OutboundRequest:
    return OutboundRequest(to=["customer@example.com"], from_addr="support@example.com",
                           subject="Your order", text="Hello")


def as_deferred(result: Any) -> Deferred[Any]:
    return result if isinstance(result, Deferred) else ensureDeferred(result)


class Tracer:
    """Appends its name to a shared list whenever any of its hooks is called."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def hit(self) -> None:
        self.log.append(self.name)


def tracer_for(hook: str, name: str, log: list[str]) -> object:
    """A plugin implementing *hook* with no argument at all (the empty subset)."""
    tracer = Tracer(name, log)

    def impl() -> None:
        tracer.hit()

    return types.SimpleNamespace(**{hook: hookimpl(impl)})


# ------------------------------------------------- awaiting: plain, Deferred, async def

#: every hook that may be async, and how the kernel calls it through the facade
ASYNC_HOOKS: dict[str, Callable[[Hooks, Context], Any]] = {
    "postroom_startup": lambda hooks, ctx: hooks.startup(KERNEL),
    "postroom_shutdown": lambda hooks, ctx: hooks.shutdown(KERNEL),
    "postroom_fetched": lambda hooks, ctx: hooks.fetched(fetched_message(), ctx),
    "postroom_auth_event": lambda hooks, ctx: hooks.auth_event(
        "support", "login-ok", "logged in", ctx),
    "postroom_classify": lambda hooks, ctx: hooks.classify(ParsedMessage(), ctx, Interaction()),
    "postroom_enrich": lambda hooks, ctx: hooks.enrich(ParsedMessage(), Interaction(), ctx),
    "postroom_committed": lambda hooks, ctx: hooks.committed(Interaction(), ctx),
    "postroom_submit": lambda hooks, ctx: hooks.submit_each(Interaction(), ctx),
    "postroom_render": lambda hooks, ctx: hooks.render(request(), ctx),
    "postroom_veto": lambda hooks, ctx: hooks.veto(request(), ctx),
    "postroom_envelope": lambda hooks, ctx: hooks.envelope(
        request(), Envelope(mail_from="support@example.com", rcpt_to=["c@example.com"]), ctx),
    "postroom_sent": lambda hooks, ctx: hooks.sent(Interaction(), ctx),
}


def styled(hook: str, style: str, gate: Deferred[None], log: list[str]) -> object:
    """A plugin implementing *hook* as a plain function, returning *gate*, or
    as an ``async def`` awaiting *gate*."""
    if style == "plain":
        def plain() -> None:
            log.append("first")

        return types.SimpleNamespace(**{hook: hookimpl(plain)})
    if style == "deferred":
        def deferred() -> Deferred[None]:
            log.append("first")
            return gate

        return types.SimpleNamespace(**{hook: hookimpl(deferred)})

    async def coroutine() -> None:
        log.append("first")
        await gate
        log.append("first resumed")

    return types.SimpleNamespace(**{hook: hookimpl(coroutine)})


@pytest.mark.parametrize("hook", sorted(ASYNC_HOOKS))
@pytest.mark.parametrize("style", ["plain", "deferred", "async"])
def test_every_result_is_awaited_before_the_next_plugin(hook: str, style: str) -> None:
    gate: Deferred[None] = Deferred()
    log: list[str] = []
    hooks = hooks_with(("first", styled(hook, style, gate, log)),
                       ("second", tracer_for(hook, "second", log)))
    result = as_deferred(ASYNC_HOOKS[hook](hooks, make_ctx()))
    if style == "plain":
        assert result.called
        assert log == ["first", "second"]
        return
    assert not result.called, "the facade did not wait for the first plugin"
    assert log == ["first"], "the second plugin ran before the first one's result"
    gate.callback(None)
    run(result)
    assert log == (["first", "second"] if style == "deferred"
                   else ["first", "first resumed", "second"])


def test_async_implementation_may_wait_on_the_clock() -> None:
    clock = task.Clock()

    class Slow:
        @hookimpl
        async def postroom_enrich(self, interaction: Interaction, ctx: Context) -> None:
            await task.deferLater(ctx.clock, 30, lambda: None)
            append_trace(interaction, "slow")

    interaction = Interaction()
    d = ensureDeferred(
        hooks_with(("slow", Slow())).enrich(ParsedMessage(), interaction, make_ctx(clock=clock))
    )
    assert not d.called
    clock.advance(30)
    run(d)
    assert interaction.attached_data[TRACE] == "slow"


# ------------------------------------------------------------- subsets of arguments


def test_an_implementation_may_take_any_subset_of_the_arguments_in_any_order() -> None:
    seen: dict[str, Any] = {}

    class Picky:
        @hookimpl
        def postroom_auth_event(self, detail: str, mailbox: str) -> None:
            seen["auth_event"] = (detail, mailbox)

        @hookimpl
        def postroom_classify(self, ctx: Context, message: ParsedMessage) -> None:
            seen["classify"] = (ctx, message)

        @hookimpl
        def postroom_enrich(self, interaction: Interaction) -> None:
            seen["enrich"] = interaction

        @hookimpl
        def postroom_sent(self) -> None:
            seen["sent"] = True

    hooks = hooks_with(("picky", Picky()))
    ctx = make_ctx()
    message, interaction = ParsedMessage(subject="hi"), Interaction()
    run(hooks.auth_event("support", "login-failed", "wrong password", ctx))
    run(hooks.classify(message, ctx, interaction))
    run(hooks.enrich(message, interaction, ctx))
    run(hooks.sent(interaction, ctx))
    assert seen == {
        "auth_event": ("wrong password", "support"),
        "classify": (ctx, message),
        "enrich": interaction,
        "sent": True,
    }


def test_a_module_is_a_plugin_too() -> None:
    module = types.ModuleType("acme_plugin")

    @hookimpl
    def postroom_enrich(interaction: Interaction) -> None:
        append_trace(interaction, "module")

    module.postroom_enrich = postroom_enrich  # type: ignore[attr-defined]
    interaction = Interaction()
    run(hooks_with(("acme", module)).enrich(ParsedMessage(), interaction, make_ctx()))
    assert interaction.attached_data[TRACE] == "module"


# ---------------------------------------------------------------- plugin order


@pytest.mark.parametrize(
    ("enabled", "expected"),
    [(["beta", "alpha"], "beta,alpha"), (["alpha", "beta"], "alpha,beta"), (None, "alpha,beta")],
)
def test_plugins_run_in_the_configured_order(enabled: list[str] | None, expected: str) -> None:
    available = [sample("beta"), sample("alpha")]  # installation order means nothing
    plugins = load_plugins(enabled, available=available)
    assert plugins.order[-2:] == expected.split(",")
    interaction = Interaction()
    run(Hooks(plugins).enrich(ParsedMessage(), interaction, make_ctx()))
    assert interaction.attached_data[TRACE] == expected


def test_builtin_plugins_come_first_then_embedded_then_installed() -> None:
    plugins = load_plugins(["gamma"], extra=[("embedded", object())], available=[sample("gamma")])
    builtins = [name for name, _module in BUILTIN_PLUGINS]
    assert builtins[:4] == ["core-options", "core-parser", "core-metadata", "core-threading"]
    assert plugins.order == [*builtins, "embedded", "gamma"]


# -------------------------------------------------------------- postroom_classify


def classifier(result: Any) -> object:
    class Classifier:
        @hookimpl
        def postroom_classify(self) -> Any:
            return result

    return Classifier()


def classify(*plugins: tuple[str, object], interaction: Interaction | None = None) -> Verdict:
    return cast(Verdict, run(hooks_with(*plugins).classify(
        ParsedMessage(), make_ctx(), interaction or Interaction())))


def test_classify_highest_priority_wins_whatever_the_order() -> None:
    low = ("low", classifier(Verdict(Subtype.INBOUND_REPORT.value, priority=1)))
    high = ("high", classifier(Verdict(Subtype.INBOUND_NDR.value, priority=5,
                                       attached_data={"Bounce": "hard"})))
    for plugins in ([low, high], [high, low]):
        verdict = classify(*plugins)
        assert verdict.subtype == Subtype.INBOUND_NDR.value
        assert verdict.plugin == "high"  # filled in by the kernel
        assert verdict.attached_data == {"Bounce": "hard"}


def test_classify_tie_goes_to_the_plugin_first_in_order() -> None:
    first = ("first", classifier(Verdict("InboundFax", priority=3)))
    second = ("second", classifier(Verdict(Subtype.INBOUND_REPORT.value, priority=3)))
    assert classify(first, second).plugin == "first"
    assert classify(second, first).plugin == "second"


@pytest.mark.parametrize(
    ("enabled", "winner"), [(["beta", "alpha"], "Sample-beta"), (["alpha", "beta"], "Sample-alpha")]
)
def test_classify_tie_follows_the_plugins_list(enabled: list[str], winner: str) -> None:
    hooks = Hooks(load_plugins(enabled, available=[sample("alpha"), sample("beta")]))
    message = ParsedMessage(headers=[("X-alpha-Priority", "5"), ("X-beta-Priority", "5")])
    verdict = run(hooks.classify(message, make_ctx(), Interaction()))
    assert verdict.subtype == winner


def test_classify_without_verdict_is_inbound_new() -> None:
    verdict = classify(("silent", classifier(None)))
    assert verdict.subtype == Subtype.INBOUND_NEW.value == "InboundNew"
    assert verdict.attached_data == {}


def test_classify_ignores_what_is_not_a_verdict(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="postroom.plugins.facade"):
        verdict = classify(("junk", classifier("InboundNDR")),
                           ("real", classifier(Verdict(Subtype.INBOUND_REPORT.value))))
    assert verdict.subtype == Subtype.INBOUND_REPORT.value
    assert "'junk'" in caplog.text and "not a Verdict" in caplog.text


def test_classify_a_failing_classifier_is_recorded_and_the_others_decide(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        @hookimpl
        def postroom_classify(self) -> None:
            raise KeyError("Content-Type")

    interaction = Interaction()
    with caplog.at_level(logging.ERROR, logger="postroom.plugins.facade"):
        verdict = classify(("broken", Broken()),
                           ("report", classifier(Verdict(Subtype.INBOUND_REPORT.value))),
                           interaction=interaction)
    assert verdict.subtype == Subtype.INBOUND_REPORT.value
    assert interaction.attached_data[PLUGIN_ERRORS_KEY] == (
        "broken: postroom_classify: KeyError: 'Content-Type'"
    )
    assert "'broken' failed in postroom_classify" in caplog.text


def test_classify_async_classifier_may_use_the_store() -> None:
    ticket = Interaction(message_id="<t1@example.com>", type=InteractionType.OUTBOUND.value)

    class Ticketing:
        @hookimpl
        async def postroom_classify(self, message: ParsedMessage, ctx: Context) -> Verdict | None:
            found = await ctx.store.find_by_message_id(message.in_reply_to[0], type="Outbound")
            return Verdict("InboundTicketReply", priority=2) if found else None

    hooks = hooks_with(("ticketing", Ticketing()))
    ctx = make_ctx(store=FakeStore([ticket]))
    verdict = run(hooks.classify(ParsedMessage(in_reply_to=["<t1@example.com>"]), ctx,
                                 Interaction()))
    assert verdict.subtype == "InboundTicketReply"


# ---------------------------------------------------------------- postroom_enrich


def test_enrich_a_failing_plugin_is_recorded_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Boom:
        def __init__(self, error: Exception, *, deferred: bool = False) -> None:
            self.error = error
            self.deferred = deferred

        @hookimpl
        def postroom_enrich(self) -> Deferred[None] | None:
            if self.deferred:
                return defer.fail(self.error)
            raise self.error

    class Tagger:
        @hookimpl
        def postroom_enrich(self, interaction: Interaction) -> None:
            append_trace(interaction, "tagger")

    interaction = Interaction()
    hooks = hooks_with(("boom", Boom(ValueError("kaput"))), ("tagger", Tagger()),
                       ("late-boom", Boom(RuntimeError("no route"), deferred=True)))
    with caplog.at_level(logging.ERROR, logger="postroom.plugins.facade"):
        run(hooks.enrich(ParsedMessage(), interaction, make_ctx()))
    assert interaction.attached_data[TRACE] == "tagger"
    assert interaction.attached_data[PLUGIN_ERRORS_KEY] == (
        "boom: postroom_enrich: ValueError: kaput\n"
        "late-boom: postroom_enrich: RuntimeError: no route"
    )
    assert "'boom' failed in postroom_enrich" in caplog.text


def test_enrich_sees_the_verdict_and_earlier_plugins_work() -> None:
    seen: list[Any] = []

    class First:
        @hookimpl
        def postroom_enrich(self, interaction: Interaction) -> None:
            interaction.attached_data["first.Language"] = "de"

    class Second:
        @hookimpl
        def postroom_enrich(self, message: ParsedMessage, interaction: Interaction) -> None:
            seen.append((message.subject, dict(interaction.attached_data)))

    interaction = Interaction(attached_data={"FromVerdict": "yes"})
    run(hooks_with(("first", First()), ("second", Second())).enrich(
        ParsedMessage(subject="Hallo"), interaction, make_ctx()))
    assert seen == [("Hallo", {"FromVerdict": "yes", "first.Language": "de"})]


def test_enrich_builtin_threading_awaits_the_store() -> None:
    sent = Interaction(message_id="<out-1@example.com>", type=InteractionType.OUTBOUND.value)
    store = FakeStore([sent])
    interaction = Interaction()
    message = ParsedMessage(message_id="<in-1@example.net>", in_reply_to=["<out-1@example.com>"])
    run(hooks_with().enrich(message, interaction, make_ctx(store=store)))
    assert interaction.parent_id == sent.id
    assert store.looked_up == ["<out-1@example.com>"]


def test_threading_looks_up_at_most_twenty_ids_nearest_first() -> None:
    from postroom.builtin.threading import MAX_CANDIDATES

    store = FakeStore([])
    references = [f"<{n}@example.com>" for n in range(60_000)]
    message = ParsedMessage(in_reply_to=["<reply@example.com>"], references=references)
    run(hooks_with().enrich(message, Interaction(), make_ctx(store=store)))
    assert len(store.looked_up) == MAX_CANDIDATES == 20
    assert store.looked_up[:3] == [
        "<reply@example.com>", "<59999@example.com>", "<59998@example.com>"]


# ---------------------------------------------------------------- postroom_expand


def splitter(copy_keys: list[str | None] | None, calls: list[str] | None = None) -> object:
    class Splitter:
        @hookimpl
        def postroom_expand(self, interaction: Interaction) -> list[Interaction] | None:
            if calls is not None:
                calls.append("called")
            if copy_keys is None:
                return None
            return [attrs.evolve(interaction, id=f"copy-{n}", copy_key=key)
                    for n, key in enumerate(copy_keys)]

    return Splitter()


def expand(*plugins: tuple[str, object]) -> tuple[Interaction, list[Interaction]]:
    interaction = Interaction()
    return interaction, hooks_with(*plugins).expand(interaction, ParsedMessage(), make_ctx())


def test_expand_without_a_fan_out_keeps_the_interaction() -> None:
    interaction, copies = expand(("none", splitter(None)))
    assert copies == [interaction]
    interaction, copies = expand()
    assert copies == [interaction]


def test_expand_copies_with_distinct_copy_keys_replace_the_interaction() -> None:
    _, copies = expand(("split", splitter(["a@example.com", "b@example.com"])))
    assert [c.copy_key for c in copies] == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize("keys", [["a@example.com", None], ["a@example.com", "a@example.com"]])
def test_expand_copies_without_distinct_copy_keys_raise(keys: list[str | None]) -> None:
    with pytest.raises(ValueError, match="copy_key"):
        expand(("split", splitter(keys)))


def test_expand_first_plugin_with_a_list_decides() -> None:
    later: list[str] = []
    _, copies = expand(("pass", splitter(None)), ("split", splitter(["x", "y"])),
                       ("too-late", splitter(["z"], later)))
    assert [c.copy_key for c in copies] == ["x", "y"]
    assert later == []


# ---------------------------------------------------------------- postroom_parser


class StubParser:
    def __init__(self, name: str) -> None:
        self.name = name

    def parse(self, message: FetchedMessage, limits: Any) -> Deferred[ParsedMessage]:
        return defer.succeed(ParsedMessage(subject=self.name))


def parser_plugin(name: str, only_mailbox: str | None = None) -> object:
    class Provider:
        @hookimpl
        def postroom_parser(self, mailbox: str) -> StubParser | None:
            if only_mailbox is not None and mailbox != only_mailbox:
                return None
            return StubParser(name)

    return Provider()


def test_parser_builtin_answers_when_no_plugin_does() -> None:
    assert isinstance(hooks_with().parser("support", make_ctx()), DefaultParser)
    hooks = hooks_with(("fax-only", parser_plugin("fax", only_mailbox="fax")))
    assert isinstance(hooks.parser("support", make_ctx()), DefaultParser)


def test_parser_a_plugin_parser_shadows_the_builtin_one() -> None:
    hooks = hooks_with(("fax-only", parser_plugin("fax", only_mailbox="fax")),
                       ("any", parser_plugin("any")))
    first = hooks.parser("fax", make_ctx())
    assert isinstance(first, StubParser) and first.name == "fax"
    other: Any = hooks.parser("support", make_ctx())
    assert isinstance(other, StubParser) and other.name == "any"
    assert run(other.parse(fetched_message(), None)).subject == "any"


# ------------------------------------------------------------- postroom_committed


class Suppressor:
    """A side effect per committed interaction; fails while *down*."""

    def __init__(self, down: int = 0) -> None:
        self.down = down
        self.calls: list[str] = []

    @hookimpl
    def postroom_committed(self, interaction: Interaction) -> None:
        self.calls.append(interaction.id)
        if self.down > 0:
            self.down -= 1
            raise OSError("the database is down")


def test_committed_runs_every_plugin_and_returns_the_failures() -> None:
    broken, after = Suppressor(down=1), Suppressor()
    hooks = hooks_with(("broken", broken), ("after", after))
    interaction = Interaction()
    [failure] = run(hooks.committed(interaction, make_ctx()))
    assert (failure.plugin, failure.hook) == ("broken", "postroom_committed")
    assert isinstance(failure.cause, OSError)
    assert after.calls == [interaction.id]  # the others still ran
    assert run(hooks.committed(interaction, make_ctx(), only={"broken"})) == []
    assert broken.calls == [interaction.id] * 2 and after.calls == [interaction.id]


def handoff_service(
    *plugins: tuple[str, object],
    pending: list[Interaction] | None = None,
    unfinished: list[Interaction] | None = None,
    once: bool = False,
) -> tuple[HandoffService, HandoffStore, FakeKernel]:
    store = HandoffStore(list(pending or []), unfinished)
    kernel = FakeKernel(hooks_with(*plugins), store, FakeConfig(OUTBOX_OPTIONS))
    service = HandoffService(cast(Any, kernel), once=once,
                             backoff=Backoff(initial=5, maximum=5, jitter=0))  # fmt: skip
    return service, store, kernel


def test_a_failing_side_effect_is_retried_alone_and_never_holds_up_the_handoff() -> None:
    routed: list[str] = []

    class Routing:
        @hookimpl
        def postroom_submit(self, interaction: Interaction) -> None:
            routed.append(interaction.id)

    broken, fine = Suppressor(down=2), Suppressor()
    service, store, kernel = handoff_service(
        ("broken", broken), ("fine", fine), ("routing", Routing()))
    service.startService()
    interaction = Interaction()
    service.submit([interaction])
    assert routed == [interaction.id]  # handed off although a side effect failed
    [(iid, state, error)] = store.effect_marks
    assert (iid, state) == (interaction.id, "failed")
    assert error is not None and "'broken' failed in postroom_committed" in error
    kernel.clock.advance(5)
    kernel.clock.advance(5)
    assert run(service.wait_idle()) is None
    assert broken.calls == [interaction.id] * 3
    assert fine.calls == [interaction.id]  # a retry calls only the plugin that failed
    assert routed == [interaction.id]  # and never the hand-off again
    assert store.effect_marks[-1] == (interaction.id, "done", None)
    assert store.marks == [(interaction.id, "done", None)]
    run(service.stopService())


def test_a_failing_handoff_never_repeats_a_side_effect() -> None:
    class Down:
        @hookimpl
        def postroom_submit(self) -> None:
            raise ConnectionError("routing is down")

    effects = Suppressor()
    service, store, kernel = handoff_service(("effects", effects), ("routing", Down()))
    service.startService()
    interaction = Interaction()
    service.submit([interaction])
    for _ in range(3):
        kernel.clock.advance(5)
    assert [m[1] for m in store.marks] == ["failed"] * 4
    assert effects.calls == [interaction.id]
    run(service.stopService())
    assert store.effect_marks == [(interaction.id, "done", None)]


def test_recovery_finishes_side_effects_and_handoffs_an_earlier_process_left() -> None:
    effects = Suppressor()
    routed: list[str] = []

    class Routing:
        @hookimpl
        def postroom_submit(self, interaction: Interaction) -> None:
            routed.append(interaction.id)

    handed_off, neither = Interaction(), Interaction()
    service, store, _kernel = handoff_service(
        ("effects", effects), ("routing", Routing()),
        unfinished=[handed_off, neither], pending=[neither])  # fmt: skip
    service.startService()
    assert run(service.wait_idle()) is None
    assert effects.calls == [handed_off.id, neither.id]
    assert routed == [neither.id]
    assert sorted(store.effect_marks) == sorted((i.id, "done", None) for i in (handed_off, neither))
    run(service.stopService())


def test_a_once_run_leaves_a_side_effect_that_keeps_failing_for_the_next_run() -> None:
    effects = Suppressor(down=10)
    interaction = Interaction()
    service, store, kernel = handoff_service(("effects", effects), once=True)
    service.startService()
    service.submit([interaction])
    kernel.clock.advance(5)
    kernel.clock.advance(5)
    assert run(service.wait_idle()) is None
    assert effects.calls == [interaction.id] * 3  # max-attempts
    assert service.failed == {interaction.id}
    assert [m[1] for m in store.effect_marks] == ["failed"] * 3
    assert store.marks == [(interaction.id, "done", None)]  # handed off all the same
    run(service.stopService())


# ---------------------------------------------------------------- postroom_submit


def test_submit_each_gives_each_targets_outcome_and_a_failure_stops_no_other() -> None:
    log: list[str] = []

    class Down:
        @hookimpl
        def postroom_submit(self, interaction: Interaction) -> Deferred[None]:
            return defer.fail(ConnectionError("routing is down"))

    hooks = hooks_with(("router", Down()), ("after", tracer_for("postroom_submit", "after", log)))
    outcomes = run(hooks.submit_each(Interaction(), make_ctx()))
    assert list(outcomes) == ["router", "after"]
    assert isinstance(outcomes["router"], ConnectionError) and outcomes["after"] is None
    assert log == ["after"]
    # a retry calls only the targets still owed
    assert list(run(hooks.submit_each(Interaction(), make_ctx(), only={"router"}))) == ["router"]
    assert log == ["after"]


class HandoffStore(FakeStore):
    """The hand-off table: *pending* hand-offs, *unfinished* side effects."""

    def __init__(
        self, pending: list[Interaction], unfinished: list[Interaction] | None = None
    ) -> None:
        super().__init__()
        self.pending = pending
        self.unfinished = list(unfinished or [])
        self.marks: list[tuple[str, str, str | None]] = []
        self.effect_marks: list[tuple[str, str, str | None]] = []
        self.pages: list[tuple[int, int]] = []
        #: (interaction id, target) -> state
        self.targets: dict[tuple[str, str], str] = {}

    async def pending_handoffs(
        self, limit: int = 100, after: str | None = None
    ) -> list[Interaction]:
        ids = [i.id for i in self.pending]
        start = ids.index(after) + 1 if after is not None else 0
        self.pages.append((start, limit))
        return list(self.pending[start : start + limit])

    async def pending_after_commit(
        self, limit: int = 100, after: str | None = None
    ) -> list[Interaction]:
        ids = [i.id for i in self.unfinished]
        start = ids.index(after) + 1 if after is not None else 0
        return list(self.unfinished[start : start + limit])

    async def mark_handoff(self, interaction_id: str, state: str, error: str | None = None) -> None:
        self.marks.append((interaction_id, state, error))

    async def mark_after_commit(
        self, interaction_id: str, state: str, error: str | None = None
    ) -> None:
        self.effect_marks.append((interaction_id, state, error))

    async def mark_handoffs_done(
        self, interaction_ids: list[str], after_commit: list[str] | tuple[str, ...] = ()
    ) -> None:
        self.marks.extend((i, "done", None) for i in interaction_ids)
        self.effect_marks.extend((i, "done", None) for i in after_commit)

    async def handoff_targets(self, interaction_id: str) -> list[HandoffTarget]:
        return [
            HandoffTarget(target, state)
            for (iid, target), state in sorted(self.targets.items()) if iid == interaction_id
        ]

    async def record_handoffs(
        self, outcomes: list[HandoffOutcome], after_commit: list[str] | tuple[str, ...] = ()
    ) -> None:
        """As the SQL store: the targets' states, and the overall state as a mark."""
        for outcome in outcomes:
            errors = []
            for target, (state, error) in sorted(outcome.targets.items()):
                self.targets[(outcome.interaction_id, target)] = state
                if error:
                    errors.append(f"{target}: {error}")
            self.marks.append((outcome.interaction_id, outcome.overall, "; ".join(errors) or None))
        self.effect_marks.extend((i, "done", None) for i in after_commit)


class FakeKernel:
    """What the hand-off and outbox services use of a Kernel."""

    def __init__(self, hooks: Hooks, store: Any, config: FakeConfig) -> None:
        self.hooks = hooks
        self.store = store
        self.config = config
        self.clock = task.Clock()
        self.ctx = make_ctx(config=config, store=store, clock=self.clock)
        self.metrics = Metrics()
        self.events = EventRecorder()


class EventRecorder:
    """The event hub as the services use it: events to record (kept here), and
    pokes when the store recorded some itself."""

    def __init__(self) -> None:
        self.pokes = 0
        self.emitted: list[tuple[str, str | None, str | None, str | None]] = []

    def poke(self) -> None:
        self.pokes += 1

    def emit(
        self, kind: str, interaction_id: str | None, target: str | None = None,
        reason: str | None = None,
    ) -> Deferred[None]:
        self.emitted.append((str(kind), interaction_id, target, reason))
        return defer.succeed(None)


def test_submit_failure_is_retried_by_the_handoff_service() -> None:
    calls: list[str] = []

    class Recorder:
        @hookimpl
        def postroom_submit(self, interaction: Interaction) -> None:
            calls.append(interaction.id)

    class Flaky:
        attempts = 0

        @hookimpl
        async def postroom_submit(self) -> None:
            self.attempts += 1
            if self.attempts == 1:
                raise ConnectionError("routing is down")

    interaction = Interaction()
    store = HandoffStore([interaction])
    kernel = FakeKernel(hooks_with(("recorder", Recorder()), ("flaky", Flaky())), store,
                        FakeConfig(OUTBOX_OPTIONS))
    service = HandoffService(cast(Any, kernel), backoff=Backoff(initial=5, maximum=5, jitter=0))
    service.startService()
    assert [m[:2] for m in store.marks] == [(interaction.id, "failed")]
    error = store.marks[0][2] or ""
    assert "flaky: ConnectionError: routing is down" in error
    assert store.targets == {(interaction.id, "recorder"): "done",
                             (interaction.id, "flaky"): "failed"}  # fmt: skip
    kernel.clock.advance(5)
    assert store.marks[-1] == (interaction.id, "done", None)
    assert store.targets[(interaction.id, "flaky")] == "done"
    # the retry called only the target that failed: the other took it already
    assert calls == [interaction.id]
    assert run(service.wait_idle()) is None
    run(service.stopService())


def test_recovery_hands_off_every_pending_interaction_a_page_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from postroom.services import handoff

    monkeypatch.setattr(handoff, "RECOVERY_PAGE", 3)
    submitted: list[str] = []
    release: list[Deferred[None]] = []

    class SlowRouter:
        @hookimpl
        def postroom_submit(self, interaction: Interaction) -> Deferred[None]:
            submitted.append(interaction.id)
            d: Deferred[None] = Deferred()
            release.append(d)
            return d

    pending = [Interaction() for _ in range(7)]
    store = HandoffStore(pending)
    kernel = FakeKernel(hooks_with(("router", SlowRouter())), store,
                        FakeConfig(OUTBOX_OPTIONS))  # fmt: skip
    service = HandoffService(cast(Any, kernel), backoff=Backoff(initial=5, maximum=5, jitter=0))
    service.startService()
    # one page in flight: the next is read only when its attempts have ended
    assert submitted == [i.id for i in pending[:3]] and store.pages == [(0, 3)]
    for d in release[:3]:
        d.callback(None)
    assert submitted == [i.id for i in pending[:6]] and store.pages == [(0, 3), (3, 3)]
    for d in release[3:6]:
        d.callback(None)
    assert submitted == [i.id for i in pending]  # the short last page ends the recovery
    assert store.pages == [(0, 3), (3, 3), (6, 3)]
    release[6].callback(None)
    assert run(service.wait_idle()) is None
    assert sorted(m[0] for m in store.marks if m[1] == "done") == sorted(i.id for i in pending)
    run(service.stopService())


# ------------------------------------------- postroom_render, _envelope and _sent


class OutboxStore(FakeStore):
    def __init__(self, interaction: Interaction) -> None:
        super().__init__([interaction])
        self.marks: list[tuple[str, str, str | None, datetime | None]] = []
        self.attached: dict[str, Any] = {}
        self.message_ids: dict[str, str] = {}
        self.suppressed: list[tuple[str, str, str | None]] = []
        self.queued: list[OutboxEntry] = []

    async def get_interaction(self, interaction_id: str) -> Interaction | None:
        return next((i for i in self.interactions if i.id == interaction_id), None)

    async def requeue_interrupted(self, claimed_before: datetime) -> list[str]:
        return []

    async def claim_outbound(self, now: datetime, limit: int = 10) -> list[OutboxEntry]:
        claimed, self.queued = self.queued[:limit], self.queued[limit:]
        return claimed

    async def outbox_counts(self) -> dict[str, int]:
        return {"queued": 0, "sending": 0, "sent": 0, "failed": 0}

    async def mark_outbound(self, entry_id: str, state: str, error: str | None = None,
                            next_attempt_at: datetime | None = None,
                            attached: dict[str, Any] | None = None,
                            message_id: str | None = None, reply: str | None = None,
                            accepted: list[str] | None = None,
                            refused: dict[str, str] | None = None) -> None:
        self.marks.append((entry_id, state, error, next_attempt_at))
        self.attached.update(attached or {})
        if message_id is not None:
            self.message_ids[entry_id] = message_id

    async def suppress(self, address: str, reason: str, interaction_id: str | None = None
                       ) -> None:
        self.suppressed.append((address, reason, interaction_id))


#: the site options the outbox service and pipeline read
OUTBOX_OPTIONS: dict[tuple[str | None, str], Any] = {
    ("gateway", "max-attempts"): 3,
    ("gateway", "handoff-sweep-interval"): 0,
    ("email-processing", "bcc-address"): None,
    ("email-processing", "outbound-msg-charset"): "UTF-8",
}


class RecordingSender:
    def __init__(
        self, refused: dict[str, str] | None = None, reported: str | None = None
    ) -> None:
        self.sent: list[tuple[bytes, Envelope, str]] = []
        self.refused = dict(refused or {})
        #: the Message-ID the server says it used (None: the one assigned)
        self.reported = reported

    def send(self, message: bytes, envelope: Envelope, message_id: str) -> Deferred[SendResult]:
        self.sent.append((message, envelope, message_id))
        accepted = [r for r in envelope.rcpt_to if r not in self.refused]
        return defer.succeed(
            SendResult(
                message_id=self.reported or message_id,
                accepted=accepted,
                refused=dict(self.refused),
            )
        )

    def close(self) -> Deferred[None]:
        return defer.succeed(None)


class Appender:
    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    @hookimpl
    def postroom_render(self, request: OutboundRequest) -> None:
        request.text = f"{request.text} {self.suffix}"


class Dsn:
    @hookimpl
    def postroom_envelope(self, request: OutboundRequest, envelope: Envelope) -> None:
        if request.options.get("dsn"):
            envelope.mail_options.append("RET=HDRS")
            envelope.rcpt_options.append("NOTIFY=FAILURE")
            envelope.extra_headers["Disposition-Notification-To"] = request.from_addr or ""


class SentObserver:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def postroom_sent(self, interaction: Interaction) -> None:
        self.seen.append(interaction.id)


def outbox(*plugins: tuple[str, object], attempts: int = 0
           ) -> tuple[OutboundService, OutboxStore, RecordingSender, OutboxEntry]:
    interaction = Interaction(type=InteractionType.OUTBOUND.value)
    store = OutboxStore(interaction)
    sender = RecordingSender()
    kernel = FakeKernel(hooks_with(*plugins), store, FakeConfig(OUTBOX_OPTIONS))
    service = OutboundService(cast(Any, kernel), sender,
                              backoff=Backoff(initial=30, maximum=30, jitter=0),
                              login_policy=LoginPolicy(kernel.clock))
    req = request()
    req.options["dsn"] = True
    entry = OutboxEntry(id=interaction.id, message_id="<m1@example.com>", state="sending",
                        attempts=attempts, next_attempt_at=None, last_error=None, request=req)
    return service, store, sender, entry


def test_render_in_order_then_envelope_then_send_then_sent() -> None:
    observer = SentObserver()
    service, store, sender, entry = outbox(
        ("template", Appender("[template]")), ("signature", Appender("[signature]")),
        ("dsn", Dsn()), ("observer", observer))
    run(service.send_entry(entry))
    [(data, envelope, message_id)] = sender.sent
    assert b"Hello [template] [signature]" in data  # the later plugin saw the earlier's work
    assert envelope.mail_options == ["RET=HDRS"] and envelope.rcpt_options == ["NOTIFY=FAILURE"]
    assert b"Disposition-Notification-To: support@example.com" in data
    assert message_id == "<m1@example.com>"
    assert store.marks == [(entry.id, "sent", None, None)]
    assert observer.seen == [entry.id]


@pytest.mark.parametrize(
    ("reported", "recorded"),
    [
        ("<AM0PR01MB1234@eurprd01.prod.exchangelabs.com>", True),  # a server's own
        ("<" + "a" * 2000 + "@example.com>", False),  # longer than a header line
        ("<a@b>\r\nBcc: x@example.com", False),  # a header injection
        ("not a message id", False),
        ("", False),
    ],
)
def test_the_message_id_a_sender_reports_is_recorded_only_when_it_is_one(
    reported: str, recorded: bool
) -> None:
    service, store, _sender, entry = outbox()
    service.sender = RecordingSender(reported=reported)
    run(service.send_entry(entry))
    assert store.marks == [(entry.id, "sent", None, None)]
    assert store.message_ids == ({entry.id: reported} if recorded else {})


def test_recipients_refused_at_rcpt_are_recorded_and_unknown_ones_suppressed() -> None:
    service, store, _sender, entry = outbox()
    entry.request.cc = ["gone@example.com", "busy@example.com", "policy@example.com"]
    service.sender = RecordingSender(
        refused={
            "gone@example.com": "550 5.1.1 <gone@example.com>: Recipient address rejected",
            "busy@example.com": "452 4.2.2 mailbox full, try later",
            "policy@example.com": "554 5.7.1 relay access denied",
        }
    )
    run(service.send_entry(entry))
    assert store.marks == [(entry.id, "sent", None, None)]  # the others took it
    refused = store.attached["_RefusedRecipients"]
    assert "gone@example.com: 550 5.1.1" in refused and "busy@example.com: 452 4.2.2" in refused
    # only the address the server says does not exist goes on the suppression list
    assert [(a, i) for a, _, i in store.suppressed] == [("gone@example.com", entry.id)]
    assert "refused at RCPT TO: 550 5.1.1" in store.suppressed[0][1]


@pytest.mark.parametrize(
    ("reply", "unknown"),
    [
        ("550 5.1.1 <a@b>: Recipient address rejected: User unknown", True),
        ("550-5.1.1 The email account that you tried to reach does not exist", True),
        ("553 5.1.3 bad recipient address syntax", True),
        ("550 5.1.10 null MX", True),
        ("550 5.2.1 mailbox disabled", True),
        ("553 5.1.8 <x@y>: Sender address rejected: Domain not found", False),
        ("550 5.7.1 relaying denied", False),
        ("552 5.2.2 mailbox full", False),
        ("450 4.1.1 try again later", False),
        ("550 user unknown", False),  # no enhanced code: not sure enough to suppress
    ],
)
def test_which_refusals_are_unknown_addresses(reply: str, unknown: bool) -> None:
    from postroom.pipeline.outbound import is_unknown_address

    assert is_unknown_address(reply) is unknown


def test_a_once_run_waits_for_a_request_being_queued_when_its_pass_found_nothing() -> None:
    """``postroom send``: the request's queueing may finish after the first pass
    claimed nothing; the once run must still send it before it ends."""
    service, store, sender, entry = outbox()
    service.once = True
    service.expect()  # Gateway.send: a request is on its way to the store
    service.startService()
    assert not service.finished.called  # the pass found nothing, but one is coming
    store.queued.append(entry)
    service.arrived()
    assert [m for _, _, m in sender.sent] == [entry.message_id]
    assert run(service.finished) is True  # then a pass found nothing: done
    run(service.stopService())


def test_render_failure_fails_the_send_attempt_which_is_retried() -> None:
    class Broken:
        @hookimpl
        def postroom_render(self) -> None:
            raise LookupError("template 'welcome' not found")

    observer = SentObserver()
    service, store, sender, entry = outbox(("templates", Broken()), ("observer", observer))
    run(service.send_entry(entry))
    assert sender.sent == []
    [(entry_id, state, error, retry_at)] = store.marks
    assert (entry_id, state) == (entry.id, "queued")
    assert error is not None and "'templates'" in error and "welcome" in error
    assert retry_at == datetime.fromtimestamp(0, UTC) + timedelta(seconds=30)
    assert observer.seen == []  # not sent, not failed for good


def test_envelope_failure_on_the_last_attempt_fails_for_good_and_is_observed() -> None:
    class Broken:
        @hookimpl
        async def postroom_envelope(self) -> None:
            raise ValueError("no DSN support")

    observer = SentObserver()
    service, store, sender, entry = outbox(("dsn", Broken()), ("observer", observer), attempts=2)
    run(service.send_entry(entry))
    assert sender.sent == []
    assert [m[:2] for m in store.marks] == [(entry.id, "failed")]
    assert observer.seen == [entry.id]


class Refuses:
    """Vetoes requests whose subject holds *word*."""

    def __init__(self, word: str) -> None:
        self.word = word
        self.asked: list[str] = []

    @hookimpl
    async def postroom_veto(self, request: OutboundRequest) -> str | None:
        self.asked.append(self.word)
        return f"the subject says {self.word!r}" if self.word in request.subject else None


def test_the_first_veto_wins_and_later_plugins_are_not_asked() -> None:
    first, second, third = Refuses("invoice"), Refuses("order"), Refuses("Your")
    hooks = hooks_with(("first", first), ("second", second), ("third", third))
    veto = run(hooks.veto(request(), make_ctx()))
    assert veto is not None and (veto.plugin, veto.reason) == ("second", "the subject says 'order'")
    assert str(veto) == "vetoed by second: the subject says 'order'"
    assert (first.asked, second.asked, third.asked) == (["invoice"], ["order"], [])
    assert run(hooks_with(("first", first)).veto(request(), make_ctx())) is None


def test_a_veto_that_is_not_a_reason_is_a_plugin_failure() -> None:
    class Confused:
        @hookimpl
        def postroom_veto(self) -> bool:
            return True

    with pytest.raises(PluginFailure, match=r"'confused' failed in postroom_veto.*not a reason"):
        run(hooks_with(("confused", Confused())).veto(request(), make_ctx()))


def test_a_vetoed_request_fails_for_good_with_the_reason_and_is_not_sent() -> None:
    observer = SentObserver()
    service, store, sender, entry = outbox(("policy", Refuses("order")), ("observer", observer))
    run(service.send_entry(entry))
    assert sender.sent == []
    assert store.marks == [(entry.id, "failed", "vetoed by policy: the subject says 'order'", None)]
    assert observer.seen == [entry.id]  # failed for good: observed
    assert service.kernel.events.emitted == [  # and on the event stream
        ("interaction.send_failed", entry.id, None, "vetoed by policy: the subject says 'order'")
    ]


def test_a_veto_that_raises_fails_only_that_send_attempt() -> None:
    class Broken:
        @hookimpl
        def postroom_veto(self) -> None:
            raise LookupError("the policy service is down")

    service, store, sender, entry = outbox(("policy", Broken()))
    run(service.send_entry(entry))
    assert sender.sent == []
    [(_id, state, error, retry_at)] = store.marks
    assert state == "queued" and retry_at is not None
    assert error is not None and "'policy' failed in postroom_veto" in error
    assert service.kernel.events.emitted == []  # retried: no failure on the stream yet


def test_render_and_envelope_failures_propagate_from_the_facade() -> None:
    class Broken:
        @hookimpl
        def postroom_render(self) -> None:
            raise LookupError("render")

        @hookimpl
        def postroom_envelope(self) -> None:
            raise LookupError("envelope")

    hooks = hooks_with(("broken", Broken()))
    with pytest.raises(PluginFailure, match="'broken' failed in postroom_render"):
        run(hooks.render(request(), make_ctx()))
    with pytest.raises(PluginFailure, match="'broken' failed in postroom_envelope"):
        run(hooks.envelope(request(), Envelope(mail_from="a@example.com", rcpt_to=[]), make_ctx()))


# ------------------------------------------------------- tolerant observer hooks


@pytest.mark.parametrize(
    "hook",
    [
        "postroom_fetched",
        "postroom_auth_event",
        "postroom_committed",
        "postroom_sent",
        "postroom_shutdown",
    ],
)
def test_observer_failures_are_logged_and_the_others_still_run(
    hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fail() -> None:
        raise OSError("disk full")

    log: list[str] = []
    hooks = hooks_with(("broken", types.SimpleNamespace(**{hook: hookimpl(fail)})),
                       ("after", tracer_for(hook, "after", log)))
    with caplog.at_level(logging.ERROR, logger="postroom.plugins.facade"):
        run(as_deferred(ASYNC_HOOKS[hook](hooks, make_ctx())))
    assert log == ["after"]
    assert f"'broken' failed in {hook}" in caplog.text


def test_fetched_gets_the_message_and_the_mailbox_context() -> None:
    seen: list[tuple[str, str]] = []

    class Archive:
        @hookimpl
        def postroom_fetched(self, message: FetchedMessage, ctx: Context) -> Deferred[None]:
            return ctx.runner.run(lambda: seen.append((message.mailbox, message.raw.path)))

    run(hooks_with(("archive", Archive())).fetched(fetched_message(), make_ctx()))
    assert seen == [("support", "/nonexistent")]


# ------------------------------------------------------------------ lifecycle


def test_startup_failure_stops_start_up() -> None:
    log: list[str] = []

    class NoDatabase:
        @hookimpl
        def postroom_startup(self, kernel: Any) -> Deferred[None]:
            assert kernel is KERNEL
            return defer.fail(ConnectionRefusedError("ldap://directory"))

    hooks = hooks_with(("directory", NoDatabase()),
                       ("after", tracer_for("postroom_startup", "after", log)))
    with pytest.raises(PluginFailure, match="'directory' failed in postroom_startup"):
        run(hooks.startup(KERNEL))
    assert log == []


def test_configure_gets_the_config_and_may_refuse_it() -> None:
    seen: list[Any] = []

    class Checker:
        @hookimpl
        def postroom_configure(self, config: Any) -> None:
            seen.append(config)
            if config.get("acme", "low") >= config.get("acme", "high"):
                raise ConfigError("must be below high", option="acme.low")

    hooks = hooks_with(("acme", Checker()))
    good = FakeConfig({("acme", "low"): 1, ("acme", "high"): 2})
    hooks.configure(good)
    assert seen == [good]
    with pytest.raises(Exception) as info:
        hooks.configure(FakeConfig({("acme", "low"): 3, ("acme", "high"): 2}))
    error = info.value if isinstance(info.value, ConfigError) else info.value.__cause__
    assert isinstance(error, ConfigError) and error.option == "acme.low"


def test_add_options_declarations_are_attributed_to_their_plugin() -> None:
    class Acme:
        @hookimpl
        def postroom_add_options(self, schema: OptionSchema) -> None:
            schema.add("endpoint", "url", section="acme", default="https://acme.example/api",
                       description="Where acme posts.")

    plugins = load_plugins(["alpha"], extra=[("acme", Acme())], available=[sample("alpha")])
    schema = OptionSchema()
    Hooks(plugins).add_options(schema)
    declared = {(o.section, o.name): o.declared_by for o in schema}
    assert declared[("acme", "endpoint")] == "acme"
    assert declared[("alpha", "greeting")] == "alpha"  # an installed plugin: its entry-point name


def test_add_options_of_a_driver_class_is_attributed_to_the_driver() -> None:
    schema = OptionSchema()
    hooks_with().add_options_of(FileSender, "postroom.senders:file", schema)
    [option] = [o for o in schema if o.name == "folder-path"]
    assert option.declared_by == "postroom.senders:file"


def test_add_options_a_broken_declaration_names_the_plugin() -> None:
    class Sloppy:
        @hookimpl
        def postroom_add_options(self, schema: OptionSchema) -> None:
            schema.add("timeout", "seconds", section="sloppy")

    with pytest.raises(PluginLoadError, match="'sloppy'") as caught:
        hooks_with(("sloppy", Sloppy())).add_options(OptionSchema())
    assert isinstance(caught.value.cause, InvalidOption)
    assert "declared by sloppy" in str(caught.value)


# -- analyze


def analyser(result: Any, seen: list[Any] | None = None) -> object:
    class Analyser:
        @hookimpl
        def postroom_analyze(self, message: ParsedMessage, ctx: Any) -> Any:
            if seen is not None:
                seen.append(ctx)
            if isinstance(result, BaseException):
                raise result
            return result

    return Analyser()


def analyze(*plugins: tuple[str, object]) -> ParsedMessage:
    from postroom.context import AnalysisContext

    message = ParsedMessage(subject="hello")
    hooks_with(*plugins).analyze(message, AnalysisContext(config=cast(Any, FakeConfig())))
    return message


def test_analyze_merges_every_plugins_findings() -> None:
    seen: list[Any] = []
    message = analyze(("a", analyser({"a.x": 1}, seen)), ("b", analyser({"b.y": [1, 2]})),
                      ("c", analyser(None)))
    assert message.analysis == {"a.x": 1, "b.y": [1, 2]}
    assert message.analysis_errors == []
    assert not hasattr(seen[0], "store")  # a worker process has no store


def test_analyze_a_failing_plugin_is_recorded_and_the_others_still_run() -> None:
    message = analyze(("a", analyser(RuntimeError("boom"))), ("b", analyser({"b.y": 2})),
                      ("c", analyser(["not", "a", "mapping"])), ("d", analyser({"b.y": 3})))
    assert message.analysis == {"b.y": 2}
    assert message.analysis_errors == [
        "a: postroom_analyze: RuntimeError: boom",
        "c: postroom_analyze: TypeError: returned list, not a mapping or None",
        "d: postroom_analyze: KeyError: 'key(s) b.y already set by a plugin'",
    ]


def test_analyze_is_synchronous() -> None:
    class Async:
        @hookimpl
        async def postroom_analyze(self) -> None:
            return None

    message = analyze(("async", Async()))
    assert message.analysis_errors and "synchronous" in message.analysis_errors[0]


def test_analyze_out_of_memory_is_not_a_plugin_error() -> None:
    with pytest.raises(MemoryError):
        analyze(("hungry", analyser(MemoryError())))


def test_a_gateway_hook_reads_its_analysis_or_says_it_is_missing() -> None:
    from postroom.errors import NotAnalysed

    message = ParsedMessage(analysis={"acme.score": 3, "acme.none": None})
    assert message.analysed("acme.score", int) == 3
    assert message.analysed("acme.none", (int, type(None))) is None
    with pytest.raises(NotAnalysed, match=r"no analysis under 'acme\.other'"):
        message.analysed("acme.other", (int, type(None)))  # missing, even if None would do
    with pytest.raises(NotAnalysed):
        message.analysed("acme.score", str)  # another plugin's value, or a stale one

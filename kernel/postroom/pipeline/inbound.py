"""The inbound pipeline: one fetched message in, committed interactions out.

parse (off the reactor) -> classify -> enrich -> expand -> commit (one store
transaction). Acknowledging on the server and the hand-off to routing come
after the commit and belong to the caller (:class:`postroom.services.mailbox.MailboxService`,
or ``postroom ingest``), so this class never touches a server.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs

from postroom.model import (
    MAX_ADDRESS_CHARS,
    MAX_REPLY_TO,
    CommitResult,
    Cursor,
    FetchedMessage,
    Interaction,
    InteractionType,
    ParsedMessage,
    bounded_references,
)
from postroom.parsing.default import DefaultParser
from postroom.parsing.limits import ParseLimits
from postroom.plugins.facade import PLUGIN_ERRORS_KEY

if TYPE_CHECKING:
    from postroom.config.site import MailboxConfig
    from postroom.context import Context
    from postroom.pipeline.analysis import Analysis
    from postroom.plugins.facade import Hooks

log = logging.getLogger(__name__)


def limits_from(ctx: Context) -> ParseLimits:
    """Parse limits from the ``email-processing`` options."""
    return ParseLimits(
        max_size=int(ctx.option("email-processing", "maximum-msg-size") or 0),
        max_depth=int(ctx.option("email-processing", "max-mime-depth")),
        max_parts=int(ctx.option("email-processing", "max-mime-parts")),
        default_domain=str(ctx.option("email-processing", "default-domain")),
    )


def _chain(message: ParsedMessage) -> list[str]:
    """The thread's chain: References, else a single In-Reply-To id (RFC 5322,
    section 3.6.4, builds a reply's References from it then)."""
    if message.references:
        return list(message.references)
    return list(message.in_reply_to) if len(message.in_reply_to) == 1 else []


def interaction_from(message: ParsedMessage, *, tenant_id: int, mailbox: str) -> Interaction:
    return Interaction(
        tenant_id=tenant_id,
        type=InteractionType.INBOUND.value,
        mailbox=mailbox,
        message_id=message.message_id,
        subject=message.subject,
        from_addr=message.from_addr,
        to=list(message.to),
        cc=list(message.cc),
        reply_to=[a for a in message.reply_to if len(a) <= MAX_ADDRESS_CHARS][:MAX_REPLY_TO],
        references=bounded_references(_chain(message)),
        date=message.date,
        names=dict(message.names),
        text=message.text,
        html=message.html,
        attachments=list(message.attachments),
        raw_sha256=message.raw_sha256,
    )


@attrs.frozen
class Processed:
    """What the pipeline did with one message."""

    message: ParsedMessage
    result: CommitResult

    @property
    def interactions(self) -> list[Interaction]:
        """New ones and duplicates, in the order the expand stage made them."""
        return [*self.result.new, *self.result.duplicates]


class InboundPipeline:
    def __init__(self, hooks: Hooks, ctx: Context, analysis: Analysis | None = None) -> None:
        """*analysis* is the kernel's (``kernel.analysis``: budgeted workers); without
        one, parsing and analysis run through ``ctx.runner``, unbudgeted (tests, tools)."""
        self.hooks = hooks
        self.ctx = ctx
        if analysis is None:
            from postroom.pipeline.analysis import Analysis

            analysis = Analysis(hooks, ctx.config, ctx.runner)
        self.analysis = analysis

    async def process(
        self, fetched: FetchedMessage, mailbox: MailboxConfig, cursor: str | None = None
    ) -> Processed:
        """Parse and complete one message (``postroom ingest``, replay)."""
        message = await self.parse(fetched, mailbox)
        return await self.complete(fetched, message, mailbox, cursor)

    async def parse(self, fetched: FetchedMessage, mailbox: MailboxConfig) -> ParsedMessage:
        """Parse and analyse: the part that may run for several messages at once,
        in a budgeted worker process (:mod:`postroom.pipeline.analysis`).

        Raises :class:`postroom.workers.OverBudget` when the message exceeds the
        budget: retrying would cost as much, so the caller quarantines it.
        """
        ctx = self.ctx.for_mailbox(mailbox)
        await self.hooks.fetched(fetched, ctx)
        parser: Any = self.hooks.parser(mailbox.name, ctx)
        limits = limits_from(ctx)
        if isinstance(parser, DefaultParser):
            return await self.analysis.parse_and_analyze(fetched, limits, mailbox)
        message: ParsedMessage = await parser.parse(fetched, limits)
        return await self.analysis.analyze(message, mailbox)

    async def complete(
        self,
        fetched: FetchedMessage,
        message: ParsedMessage,
        mailbox: MailboxConfig,
        cursor: str | None = None,
    ) -> Processed:
        """classify -> enrich -> expand -> commit.

        A mailbox runs this for one message at a time, in the source's order,
        so a reply fetched in the same batch as the message it answers still
        finds its parent, and cursors only move forward.
        """
        ctx = self.ctx.for_mailbox(mailbox)
        interaction = interaction_from(message, tenant_id=ctx.tenant_id, mailbox=mailbox.name)
        if message.analysis_errors:
            interaction.attached_data[PLUGIN_ERRORS_KEY] = "\n".join(message.analysis_errors)
        verdict = await self.hooks.classify(message, ctx, interaction)
        interaction.subtype = verdict.subtype
        interaction.attached_data.update(verdict.attached_data)
        await self.hooks.enrich(message, interaction, ctx)
        copies = self.hooks.expand(interaction, message, ctx)
        result: CommitResult = await ctx.store.commit_fetched(
            mailbox.name,
            fetched.source_key,
            fetched.raw,
            copies,
            Cursor(mailbox.name, cursor) if cursor is not None else None,
            message_id_check=bool(ctx.option("email-processing", "enable-message-id-check")),
        )
        for new in result.new:
            log.info(
                "committed interaction %s (%s) from %s %s",
                new.id,
                new.subtype,
                mailbox.name,
                fetched.source_key,
                extra={
                    "interaction_id": new.id,
                    "mailbox": mailbox.name,
                    "source_key": fetched.source_key,
                    "message_id": new.message_id,
                },
            )
        return Processed(message=message, result=result)

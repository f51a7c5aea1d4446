"""The ``dsn`` hook plugin: delivery reports in, DSN requests out.

* ``postroom_analyze`` (in the worker process that parsed the message): reads
  the report, builds the verdict and its ``_DSNInfo.*`` / ``_DSNRawInfo.*``
  attached data, and lists the Message-IDs to look up
  (:mod:`postroom_dsn.analysis`, :mod:`postroom_dsn.classify`).
* ``postroom_classify`` (priority 100, above the default): ``InboundNDR`` or
  ``InboundReport``, the analysed verdict; its only work is the store look-up
  of the specification's second rule (is a returned Message-ID an outbound
  interaction's?).
* ``postroom_enrich``: a report becomes the child of the outbound interaction
  it reports on (looked up by the analysed candidates), overriding what the
  built-in threading found.
* ``postroom_committed``: hard-bounced addresses go on the store's suppression
  list (a side effect of the commit, once, whatever the hand-off does;
  idempotent: the store counts the same report's suppression once); the
  outbound interaction the report threads to records each recipient's delivery
  status (failed, delayed, delivered; ``relayed`` and ``expanded`` count as
  delivered), and its status follows (idempotent too).
* ``postroom_envelope``: ``options["dsn"]`` of an outbound request becomes
  ``NOTIFY``/``RET``/``ENVID`` (:mod:`postroom_dsn.envelope`).
"""

from __future__ import annotations

from typing import Any

import attrs

from postroom.api import (
    AnalysisContext,
    Context,
    Envelope,
    Interaction,
    InteractionType,
    OptionSchema,
    OutboundRequest,
    ParsedMessage,
    Scope,
    Subtype,
    Verdict,
    hookimpl,
)
from postroom_dsn import analysis
from postroom_dsn.data import delivery_reports, recipients_from_data
from postroom_dsn.envelope import ENVID_MAX, parse_request

SECTION = "email-processing"
NDR_SENDERS = "ndr-senders-list"
DEFAULT_NDR_SENDERS = ["mailer-daemon", "postmaster", "mmdf"]
PRIORITY = analysis.PRIORITY
REPORT_SUBTYPES = frozenset({Subtype.INBOUND_NDR.value, Subtype.INBOUND_REPORT.value})
_OUTBOUND = InteractionType.OUTBOUND.value
_REASON_MAX = 200


@hookimpl
def postroom_add_options(schema: OptionSchema) -> None:
    schema.add(
        NDR_SENDERS,
        "list",
        scope=Scope.GLOBAL,
        section=SECTION,
        default=list(DEFAULT_NDR_SENDERS),
        description="An e-mail that returns a message (a `message/rfc822`, "
        "`message/rfc822-headers` or `text/rfc822-headers` part with a Message-ID) is an "
        "NDR when its From contains one of these (case-insensitive).",
    )


def _senders(ctx: AnalysisContext) -> list[str]:
    return [str(s).strip() for s in ctx.option(SECTION, NDR_SENDERS) or [] if str(s).strip()]


async def _outbound(ctx: Context, message_id: str) -> list[Interaction]:
    found: list[Interaction] = await ctx.store.find_by_message_id(message_id, type=_OUTBOUND)
    return [i for i in found if i.type == _OUTBOUND]


@hookimpl
def postroom_analyze(message: ParsedMessage, ctx: AnalysisContext) -> dict[str, Any]:
    return {analysis.KEY: analysis.analyse(message, _senders(ctx))}


@hookimpl
async def postroom_classify(message: ParsedMessage, ctx: Context) -> Verdict | None:
    async def is_outbound(message_id: str) -> bool:
        return bool(await _outbound(ctx, message_id))

    return await analysis.decide(analysis.of(message), is_outbound)


@hookimpl
async def postroom_enrich(message: ParsedMessage, interaction: Interaction, ctx: Context) -> None:
    if interaction.subtype not in REPORT_SUBTYPES:
        return
    for message_id in analysis.of(message).parent_candidates:
        found = await _outbound(ctx, message_id)
        if found:
            interaction.parent_id = found[0].id
            return


@hookimpl
async def postroom_committed(interaction: Interaction, ctx: Context) -> None:
    """Suppress the hard-bounced addresses of a committed report; the outbound
    interaction it reports on records what it says of each recipient."""
    if interaction.subtype not in REPORT_SUBTYPES:
        return
    for recipient in recipients_from_data(interaction.attached_data):
        if not recipient.hard_bounce or not recipient.address or "@" not in recipient.address:
            continue
        code = recipient.status or recipient.reply_code
        reason = f"hard bounce {code}"
        if recipient.diagnostic:
            reason += f": {recipient.diagnostic}"
        await ctx.store.suppress(recipient.address, reason[:_REASON_MAX], interaction.id)
    if interaction.parent_id:
        reports = delivery_reports(interaction.attached_data)
        if reports:
            await ctx.store.record_delivery(interaction.parent_id, interaction.id, reports)


@hookimpl
def postroom_envelope(request: OutboundRequest, envelope: Envelope) -> Any:
    dsn = parse_request(request.options.get("dsn"))
    if dsn is None:
        return None
    if dsn.envid is None and envelope.message_id and len(envelope.message_id) <= ENVID_MAX:
        # the Message-ID as ENVID: a report's Original-Envelope-Id then finds
        # its outbound interaction even when the returned message is left out
        dsn = attrs.evolve(dsn, envid=envelope.message_id)
    _add(envelope.mail_options, dsn.mail_options)
    _add(envelope.rcpt_options, dsn.rcpt_options)
    return None


def _add(options: list[str], new: list[str]) -> None:
    """Add *new* parameters, replacing any with the same keyword."""
    keywords = {o.split("=", 1)[0].upper() for o in new}
    options[:] = [o for o in options if o.split("=", 1)[0].upper() not in keywords] + new

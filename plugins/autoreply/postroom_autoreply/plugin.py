"""The ``autoreply`` hook plugin: marks automatic mail, detects loops, refuses automatic replies.

* ``postroom_analyze`` (in the worker process that parsed the message) runs
  the header and subject rules and finds an ``X-Loop`` naming the centre
  (:mod:`postroom_autoreply.analysis`).
* ``postroom_enrich`` marks automatic inbound mail ``_AutoReply`` (with
  ``_AutoReplyReason``) and mail loops ``_MailLoop`` (with ``_MailLoopReason``),
  deciding over the analysis, the classifiers' subtype and the store's count
  of exchanges; the subtype is left alone.
* ``postroom_committed`` (a side effect of the commit, once, whatever the
  hand-off does) and ``postroom_sent`` record the automatic mails exchanged
  with each address, for auto-reply war detection.
* ``postroom_veto`` refuses an *automatic* outbound request (never an
  agent's) that answers a report or an automatic mail, goes back to one of the
  centre's own addresses, or would exceed an address's auto-reply war budget.
* ``postroom_envelope`` adds ``X-Loop: <from address>`` to automatic mail, so
  the centre knows its own auto-replies if they ever come back.
"""

from __future__ import annotations

from typing import Any

from postroom.api import (
    AUTOMATIC,
    AnalysisContext,
    AttachedValue,
    Context,
    Envelope,
    Interaction,
    InteractionType,
    OptionSchema,
    OutboundRequest,
    ParsedMessage,
    hookimpl,
)
from postroom_autoreply import analysis, autowar, detection, options
from postroom_autoreply.exchanges import postroom_erase as postroom_erase
from postroom_autoreply.exchanges import postroom_startup as postroom_startup
from postroom_autoreply.exchanges import postroom_store_migrations as postroom_store_migrations
from postroom_autoreply.options import Settings

#: attached keys this plugin writes (present only when true)
AUTO_REPLY = "_AutoReply"
AUTO_REPLY_REASON = "_AutoReplyReason"
MAIL_LOOP = "_MailLoop"
MAIL_LOOP_REASON = "_MailLoopReason"
#: the status the store gives an outbound interaction whose send failed for good
#: (a sent one is ``Sent``, or ``PartlyFailed`` when the server refused some
#: recipients: docs/outbound.md, delivery status)
FAILED_STATUS = "Failed"

X_LOOP = "X-Loop"


def is_true(value: AttachedValue | None) -> bool:
    """Attached booleans as stored or as a strategy may have written them."""
    if isinstance(value, str):
        return value.strip().casefold() in ("true", "yes", "1")
    return value is True or (isinstance(value, int) and value == 1)


@hookimpl
def postroom_add_options(schema: OptionSchema) -> None:
    options.declare(schema)


@hookimpl
def postroom_configure(config: Any) -> None:
    options.check(config)


# ----------------------------------------------------------------- inbound


@hookimpl
def postroom_analyze(message: ParsedMessage, ctx: AnalysisContext) -> dict[str, Any]:
    return {analysis.KEY: analysis.analyse(message, ctx)}


@hookimpl
async def postroom_enrich(message: ParsedMessage, interaction: Interaction, ctx: Context) -> None:
    settings = Settings.of(ctx)
    found = analysis.of(message)
    finding = detection.detect(interaction.subtype, found.headers)
    if finding is not None:
        interaction.attached_data[AUTO_REPLY] = True
        interaction.attached_data[AUTO_REPLY_REASON] = finding.reason
    loop = await _loop_reason(message, found, finding, settings, ctx)
    if loop is not None:
        interaction.attached_data[MAIL_LOOP] = True
        interaction.attached_data[MAIL_LOOP_REASON] = loop


async def _loop_reason(
    message: ParsedMessage,
    found: analysis.Analysis,
    finding: detection.Finding | None,
    settings: Settings,
    ctx: Context,
) -> str | None:
    if not settings.mail_loops_allowed:
        if found.x_loop_own is not None:
            return f"X-Loop: {found.x_loop_own} (one of our own addresses)"
        sender = (message.from_addr or "").strip().lower()
        if finding is not None and sender and sender in options.own_addresses(ctx):
            return f"automatic mail from our own address {sender} ({finding.reason})"
    # only automatic mail takes part in a war; a person's mail is never counted
    if finding is None or not settings.autowar or not message.from_addr:
        return None
    if not autowar.supported(ctx):
        return None
    return await autowar.over_budget(ctx, settings, message.from_addr.strip().lower())


@hookimpl
async def postroom_committed(interaction: Interaction, ctx: Context) -> None:
    """Record an automatic inbound mail (after the commit; a second call records nothing new)."""
    if interaction.type != InteractionType.INBOUND.value:
        return
    if not is_true(interaction.attached_data.get(AUTO_REPLY)) or not interaction.from_addr:
        return
    if autowar.supported(ctx):
        senders = detection.addresses_in([interaction.from_addr])
        # the copies the recipient split makes of one mail share its raw bytes:
        # they are one automatic mail, counted once
        mail = f"sha256:{interaction.raw_sha256}" if interaction.raw_sha256 else interaction.id
        await autowar.record(ctx, senders, autowar.IN, mail)


# ---------------------------------------------------------------- outbound


@hookimpl
async def postroom_sent(interaction: Interaction, ctx: Context) -> None:
    """Record an automatic mail that was sent (not one that failed) to each recipient."""
    if interaction.type != InteractionType.OUTBOUND.value:
        return
    if interaction.status == FAILED_STATUS or not is_true(interaction.attached_data.get(AUTOMATIC)):
        return
    if autowar.supported(ctx):
        recipients = detection.addresses_in([*interaction.to, *interaction.cc])
        await autowar.record(ctx, recipients, autowar.OUT, interaction.id)


@hookimpl
async def postroom_veto(request: OutboundRequest, ctx: Context) -> str | None:
    """Refuse automatic requests that would answer a machine or feed a loop."""
    if not request.automatic:
        return None
    reason = await refusal(request, ctx)
    return None if reason is None else f"automatic mail refused: {reason}"


async def refusal(request: OutboundRequest, ctx: Context) -> str | None:
    """Why an automatic request must not be sent, or None. (The rule, apart from the hook.)"""
    settings = Settings.of(ctx)
    if request.in_reply_to:
        parent: Interaction | None = await ctx.store.get_interaction(request.in_reply_to)
        if parent is not None:
            reason = _parent_refusal(parent)
            if reason is not None:
                return reason
    recipients = detection.addresses_in([*request.to, *request.cc, *request.bcc])
    if not settings.mail_loops_allowed:
        own = options.own_addresses(ctx)
        for address in recipients:
            if address in own:
                return f"mail loop: {address} is one of our own addresses (enable-mail-loops false)"
    if settings.autowar and autowar.supported(ctx):
        for address in recipients:
            reason = await autowar.over_budget(ctx, settings, address)
            if reason is not None:
                return reason
    return None


def _parent_refusal(parent: Interaction) -> str | None:
    if parent.subtype in detection.REPORT_SUBTYPES:
        return (
            f"interaction {parent.id} it answers is a report ({parent.subtype}): "
            "reports are never auto-answered"
        )
    data = parent.attached_data
    if is_true(data.get(MAIL_LOOP)):
        why = data.get(MAIL_LOOP_REASON) or "marked _MailLoop"
        return f"interaction {parent.id} it answers is part of a mail loop ({why})"
    if is_true(data.get(AUTO_REPLY)):
        why = data.get(AUTO_REPLY_REASON) or "marked _AutoReply"
        return (
            f"interaction {parent.id} it answers is an automatic mail ({why}): "
            "automatic mail is never auto-answered (RFC 3834)"
        )
    return None


@hookimpl
def postroom_envelope(request: OutboundRequest, envelope: Envelope) -> None:
    """``X-Loop: <from>`` on automatic mail: if it comes back, it is ours for sure."""
    sender = detection.addresses_in([request.from_addr or ""])
    if not request.automatic or not sender:
        return
    present = {name.lower() for name in [*request.headers, *envelope.extra_headers]}
    if X_LOOP.lower() not in present:
        envelope.extra_headers[X_LOOP] = sender[0]

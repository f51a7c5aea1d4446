"""The ``split`` hook plugin: ``copy-message-to-recipients`` (specification, section 5).

When a mailbox enables it, an inbound e-mail becomes one interaction per
unique recipient in To and CC, so each addressed team gets its own work item.
Each copy carries the recipient it is for in the attached key named by
``copy-message-with-header`` (default ``X-Genesys-To``), and has its own id and
a ``copy_key`` (the recipient, lower-cased): the store commits all copies of a
message in one transaction and deduplicates each by (source key, copy key), so
a fan-out interrupted by a crash is completed exactly once when the message is
fetched again.

Where the work runs: ``postroom_analyze`` lists the recipients in the worker
process that parsed the message (a To with 100,000 addresses is anyone's to
send); ``postroom_expand``, in the gateway, only copies the interaction for
the first ``inbound-msg-copy-limit`` of them.

Decisions (see ``docs/plugins/split.md``):

* one recipient still gives one copy, tagged like any other, so routing can
  rely on the key whenever the mailbox splits; no recipient (only Bcc, or
  ``undisclosed-recipients:;``) leaves the interaction alone, untagged;
* a wrapping message (unparsable or oversized e-mail) is not split: it is one
  problem for one person to look at, however many recipients it names;
* beyond ``inbound-msg-copy-limit`` recipients the rest get no copy; each copy
  then says how many were left out (``split.RecipientsDropped``) and a warning
  names the mailbox.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from postroom.api import (  # NotAnalysed: ParsedMessage.analysed raises it
    Context,
    Interaction,
    NotAnalysed,  # noqa: F401
    OptionSchema,
    ParsedMessage,
    Scope,
    hookimpl,
    new_id,
)
from postroom_split.recipients import unique_recipients

log = logging.getLogger(__name__)

ENABLED = "copy-message-to-recipients"
HEADER = "copy-message-with-header"
LIMIT = "inbound-msg-copy-limit"
DEFAULT_HEADER = "X-Genesys-To"
DEFAULT_LIMIT = 10
MAX_LIMIT = 50
#: attached key: recipients that got no copy because of the limit (only when > 0)
DROPPED_KEY = "split.RecipientsDropped"
#: the key of ``message.analysis`` this plugin fills: the unique recipients
ANALYSIS_KEY = "split.recipients"
#: recipients named in the warning about those left out; the rest are counted
_WARN_NAMES = 20


@hookimpl
def postroom_add_options(schema: OptionSchema) -> None:
    schema.add(
        ENABLED,
        "bool",
        scope=Scope.MAILBOX,
        default=False,
        description="Create one interaction per unique recipient in To and CC of each "
        "inbound e-mail (same body and headers in each).",
    )
    schema.add(
        HEADER,
        "str",
        scope=Scope.MAILBOX,
        default=DEFAULT_HEADER,
        description="Attached-data key that holds, on each copy, the recipient the copy is for.",
    )
    schema.add(
        LIMIT,
        "int",
        scope=Scope.MAILBOX,
        default=DEFAULT_LIMIT,
        minimum=1,
        maximum=MAX_LIMIT,
        description="Most copies made of one e-mail (1-50); further recipients get none "
        f"and each copy records how many in `{DROPPED_KEY}`.",
    )


@hookimpl
def postroom_configure(config: Any) -> None:
    for mailbox in config.mailboxes:
        if not str(mailbox.get(HEADER)).strip():
            raise mailbox.error("must name an attached-data key, not be empty", HEADER)


@hookimpl
def postroom_analyze(message: ParsedMessage) -> dict[str, Any]:
    """The recipients, To then CC, each once (whether the mailbox splits or not:
    the list is cheap, and a message is analysed before its mailbox's options
    could change)."""
    return {ANALYSIS_KEY: tuple(unique_recipients(message.to, message.cc))}


def analysed_recipients(message: ParsedMessage) -> tuple[str, ...]:
    """What ``postroom_analyze`` found; :class:`NotAnalysed` when it is missing."""
    found: tuple[str, ...] = message.analysed(ANALYSIS_KEY, tuple)
    return found


@hookimpl
def postroom_expand(
    interaction: Interaction, message: ParsedMessage, ctx: Context
) -> list[Interaction] | None:
    mailbox = ctx.mailbox
    if mailbox is None or not mailbox.get(ENABLED) or message.is_wrapped:
        return None
    recipients = analysed_recipients(message)
    if not recipients:
        return None
    limit = int(mailbox.get(LIMIT))
    key = str(mailbox.get(HEADER)).strip()
    kept, dropped = recipients[:limit], len(recipients) - limit
    extra: dict[str, Any] = {}
    if dropped > 0:
        extra[DROPPED_KEY] = dropped
        left_out = recipients[limit : limit + _WARN_NAMES]
        more = f" and {dropped - len(left_out)} more" if dropped > len(left_out) else ""
        log.warning(
            "mailbox %s: e-mail %s has %d recipients in To and CC, inbound-msg-copy-limit "
            "is %d: %d got no copy (%s%s)",
            mailbox.name,
            message.message_id or "(no Message-ID)",
            len(recipients),
            limit,
            dropped,
            ", ".join(left_out),
            more,
            extra={"mailbox": mailbox.name},
        )
    return [copy_for(interaction, address, key, extra) for address in kept]


def copy_for(
    interaction: Interaction, recipient: str, key: str, extra: dict[str, Any]
) -> Interaction:
    """A copy with its own id and containers (``attrs.evolve`` copies shallowly)."""
    return attrs.evolve(
        interaction,
        id=new_id(),
        copy_key=recipient.lower(),
        to=list(interaction.to),
        cc=list(interaction.cc),
        attachments=list(interaction.attachments),
        attached_data={**interaction.attached_data, **extra, key: recipient},
    )

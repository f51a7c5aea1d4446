"""The ``urgent`` hook plugin: sets the attached key ``Urgent`` to ``"true"`` on urgent mail.

A message is urgent when its subject contains one of the configured keywords
(case-insensitive, anywhere in the subject), or, unless ``priority-headers`` is
off, when it is marked ``X-Priority: 1`` or ``Importance: high``. Other
messages get no ``Urgent`` key at all.

Its work is split the way every plugin's is (``docs/hooks.md``):

* ``postroom_analyze`` reads the message (the subject and two headers) in the
  worker process that parsed it, under the per-message CPU and memory budget:
  anyone on the internet can send a subject of a megabyte. It returns one
  picklable finding, ``message.analysis["urgent.urgent"]``, a bool.
* ``postroom_enrich``, in the gateway, only turns that finding into the
  attached key. It never reads the message's content itself, so a message
  that was not analysed is an error, not a reason to scan it there.

It only *tags* mail, so it enriches instead of classifying: it never competes
with the classifiers that decide an interaction's subtype.

The options are read from ``ctx`` on each call rather than kept in module
globals: the module is shared by every kernel of a process, the configuration
is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from postroom.api import (
    AnalysisContext,
    ConfigError,
    Interaction,
    OptionSchema,
    ParsedMessage,
    Scope,
    hookimpl,
)

SECTION = "urgent"
KEYWORDS = "keywords"
PRIORITY_HEADERS = "priority-headers"
#: the attached-data key this plugin writes, and its value
URGENT_KEY = "Urgent"
URGENT_VALUE = "true"
DEFAULT_KEYWORDS = ["urgent", "asap", "emergency", "dringend"]
#: the key of ``message.analysis`` this plugin fills (prefixed with its name)
ANALYSIS_KEY = "urgent.urgent"

#: ``X-Priority: 1`` or ``X-Priority: 1 (Highest)``
_HIGHEST_X_PRIORITY = re.compile(r"\s*1(?!\d)")


@hookimpl
def postroom_add_options(schema: OptionSchema) -> None:
    schema.add(
        KEYWORDS,
        "list",
        scope=Scope.GLOBAL,
        section=SECTION,
        default=list(DEFAULT_KEYWORDS),
        description="Words that make a message urgent when its subject contains one "
        "(case-insensitive, anywhere in the subject).",
    )
    schema.add(
        PRIORITY_HEADERS,
        "bool",
        scope=Scope.GLOBAL,
        section=SECTION,
        default=True,
        description="Also treat messages marked `X-Priority: 1` or `Importance: high` as urgent.",
    )


@hookimpl
def postroom_configure(config: Any) -> None:
    keywords = config.get(SECTION, KEYWORDS)
    if not any(k.strip() for k in keywords):
        # config.error points the operator at the file and line of the option
        error: ConfigError = config.error(
            "needs at least one keyword (leave the option out to use the defaults: "
            + ", ".join(DEFAULT_KEYWORDS) + ")",
            SECTION,
            KEYWORDS,
        )
        raise error


@hookimpl
def postroom_analyze(message: ParsedMessage, ctx: AnalysisContext) -> dict[str, Any]:
    keywords = ctx.option(SECTION, KEYWORDS)
    use_headers = bool(ctx.option(SECTION, PRIORITY_HEADERS))
    return {ANALYSIS_KEY: is_urgent(message, keywords, priority_headers=use_headers)}


@hookimpl
def postroom_enrich(message: ParsedMessage, interaction: Interaction) -> None:
    if ANALYSIS_KEY not in message.analysis:
        raise RuntimeError(
            f"the message has no analysis under {ANALYSIS_KEY!r}: postroom_analyze did "
            "not run for it or failed (see _PluginErrors)"
        )
    if message.analysis[ANALYSIS_KEY]:
        interaction.attached_data[URGENT_KEY] = URGENT_VALUE


def is_urgent(
    message: ParsedMessage, keywords: Iterable[str], *, priority_headers: bool = True
) -> bool:
    """The rule, apart from the hook: keyword in the subject, or a priority header.

    Linear in the subject's and the headers' length: a substring test per
    keyword, and a pattern that is matched at the start of the value only.
    """
    subject = message.subject.casefold()
    if any(k.strip() and k.strip().casefold() in subject for k in keywords):
        return True
    if not priority_headers:
        return False
    x_priority = message.header("X-Priority")
    if x_priority is not None and _HIGHEST_X_PRIORITY.match(x_priority):
        return True
    importance = message.header("Importance")
    return importance is not None and importance.strip().casefold() == "high"

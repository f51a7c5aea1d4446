"""What ``postroom_analyze`` finds in a message, for the gateway's hooks.

The header and subject rules read text anyone can send, so :func:`analyse`
runs them in the worker process that parsed the message, under the
per-message budget. What it finds is plain, picklable data under :data:`KEY`
of ``message.analysis``; ``postroom_enrich`` decides over it with what only
the gateway knows (the classifiers' subtype, the options, the store's count of
exchanges) and never reads the message itself: a message without this
analysis is an error (:func:`of`).
"""

from __future__ import annotations

import attrs

from postroom.api import (
    AnalysisContext,
    NotAnalysed,  # noqa: F401 (ParsedMessage.analysed raises it)
    ParsedMessage,
)
from postroom_autoreply import detection, options

#: the key of ``message.analysis`` this plugin fills
KEY = "autoreply.analysis"


@attrs.frozen
class Analysis:
    """``headers``: the first of the header and subject rules (2 to 10) that
    marks the message automatic; ``x_loop_own``: an ``X-Loop`` value naming one
    of the centre's own addresses (as quoted in reasons)."""

    headers: detection.Finding | None
    x_loop_own: str | None


def analyse(message: ParsedMessage, ctx: AnalysisContext) -> Analysis:
    """Pure: the rules over the message and the site's configuration only."""
    return Analysis(
        headers=detection.detect_headers(message),
        x_loop_own=detection.x_loop_names(message, options.own_addresses(ctx)),
    )


def of(message: ParsedMessage) -> Analysis:
    """This plugin's analysis of *message*; :class:`NotAnalysed` when it is missing."""
    return message.analysed(KEY, Analysis)

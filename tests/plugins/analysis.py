"""Runs ``postroom_analyze`` on a parsed message, as the pipeline does right after parsing.

Tests that call ``classify``, ``enrich`` or ``expand`` through the hooks facade
analyse the message first, like the pipeline; every analysis is also checked to
survive the trip from a worker process (pickling).
"""

from __future__ import annotations

import pickle
from typing import Any

from postroom.context import AnalysisContext
from postroom.model import ParsedMessage
from postroom.plugins.facade import Hooks


def analysed(hooks: Hooks, message: ParsedMessage, ctx: Any) -> ParsedMessage:
    """*message* with its ``analysis`` filled by *hooks* (no analysis may fail).

    *ctx*: the gateway's ``Context`` (its configuration and mailbox are used)
    or an ``AnalysisContext``.
    """
    hooks.analyze(message, AnalysisContext(config=ctx.config, mailbox=ctx.mailbox))
    assert message.analysis_errors == [], message.analysis_errors
    assert pickle.loads(pickle.dumps(message.analysis)) == message.analysis
    return message

"""Runs ``postroom_analyze`` on a parsed message, as the pipeline does right after parsing.

For the tests that still call ``classify``, ``enrich`` or ``expand`` through the
kernel's private hooks facade (dsn, autoreply): they analyse the message first,
like the pipeline; every analysis is also checked to survive the trip from a
worker process (pickling). New plugin tests use ``postroom.testing.TestKernel``
instead (``kernel.analyze`` makes the same checks), as mdn's and split's do.
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

"""The default parse stage: the standard ``email`` package, in the thread pool."""

from __future__ import annotations

from postroom import hookimpl
from postroom.context import Context
from postroom.interfaces import IParser
from postroom.parsing.default import DefaultParser


@hookimpl(trylast=True)
def postroom_parser(ctx: Context) -> IParser:
    return DefaultParser((ctx.cpu_runner or ctx.runner).run)

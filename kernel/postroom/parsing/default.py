"""The parser the kernel uses unless a plugin provides another."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from postroom.interfaces import IParser
from postroom.model import FetchedMessage, ParsedMessage, RawRef
from postroom.parsing.limits import ParseLimits
from postroom.parsing.parser import parse_message
from postroom.parsing.spool import Outbound

#: The kernel's way to run a blocking function off the reactor thread.
RunBlocking = Callable[..., "Deferred[Any]"]


def parse_outbound(raw: RawRef, limits: ParseLimits, server_size: int | None) -> Outbound:
    """:func:`parse_message`, its result ready to cross to the gateway process
    (large texts in files, not in the pickle)."""
    return Outbound(parse_message(raw, limits, server_size))


@implementer(IParser)
class DefaultParser:
    """Parses with :func:`postroom.parsing.parse_message` through *run_blocking*
    (the kernel's thread- or process-pool runner), so the reactor never waits
    on a large or hostile message."""

    def __init__(self, run_blocking: RunBlocking) -> None:
        self._run_blocking = run_blocking

    def parse(self, message: FetchedMessage, limits: ParseLimits) -> Deferred[ParsedMessage]:
        outbound = self._run_blocking(parse_outbound, message.raw, limits, message.server_size)
        return outbound.addCallback(Outbound.receive)

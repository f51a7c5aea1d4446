"""The parser the kernel uses unless a plugin provides another."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from postroom.interfaces import IParser
from postroom.model import FetchedMessage, ParsedMessage
from postroom.parsing.limits import ParseLimits
from postroom.parsing.parser import parse_message

#: The kernel's way to run a blocking function off the reactor thread.
RunBlocking = Callable[..., "Deferred[Any]"]


@implementer(IParser)
class DefaultParser:
    """Parses with :func:`postroom.parsing.parse_message` through *run_blocking*
    (the kernel's thread- or process-pool runner), so the reactor never waits
    on a large or hostile message."""

    def __init__(self, run_blocking: RunBlocking) -> None:
        self._run_blocking = run_blocking

    def parse(self, message: FetchedMessage, limits: ParseLimits) -> Deferred[ParsedMessage]:
        return self._run_blocking(parse_message, message.raw, limits, message.server_size)

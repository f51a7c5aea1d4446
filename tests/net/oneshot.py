"""What the one-shot client scripts of tests/net share: run one attempt on the real reactor.

Each script (``python -m tests.net.<name> '<json>'``) defines
``async attempt(reactor, spec) -> dict`` and ends with
``if __name__ == "__main__": run_attempt(attempt)``: the spec comes from the
command line, the result goes to standard output as one JSON object. A
subprocess keeps the global reactor out of the test process.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer, task

Attempt = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]


def run_attempt(attempt: Attempt) -> None:
    """``task.react`` on *attempt* with the JSON spec given as the first argument."""

    def main(reactor: Any, raw: str) -> defer.Deferred[None]:
        async def run() -> None:
            print(json.dumps(await attempt(reactor, json.loads(raw))))

        return defer.ensureDeferred(run())

    task.react(main, sys.argv[1:])

"""A gateway as an embedding application runs it, with :mod:`tests.hostile.slow_plugin`.

``python -m tests.hostile.live_gateway SITE.yaml`` runs until SIGTERM. The slow
plugin is registered in-process as a module, so the kernel loads it in its
worker processes: its endless analysis runs under the budget, as an installed
plugin's would.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer, task

from postroom.kernel import Kernel
from postroom.logs import setup_logging
from postroom.runner import ThreadPoolRunner
from postroom.services.gateway import Gateway
from tests.hostile import slow_plugin


def main(reactor: Any, config: str) -> defer.Deferred[None]:
    setup_logging()
    kernel = Kernel(
        config,
        reactor=reactor,
        runner=ThreadPoolRunner.create(reactor, size=4),
        plugins=[("slow", slow_plugin)],
        enabled_plugins=[],
    )
    gateway = Gateway(kernel)  # its HTTP API is one of its services
    gateway.startService()
    reactor.addSystemEventTrigger("before", "shutdown", gateway.stopService)
    return defer.Deferred()  # SIGTERM stops the reactor, and the gateway with it


if __name__ == "__main__":
    task.react(main, [sys.argv[1]])

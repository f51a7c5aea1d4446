"""Embedding postroom in another Twisted application.

A contact-centre stack that already runs a Twisted process adds the gateway
to its own service tree, hands it its reactor and thread pool, and registers
an in-process plugin: here one whose ``postroom_submit`` is the hand-off to
the host's routing (it just prints what it routes).

Run:  python examples/embed/embed_gateway.py path/to/postroom.yaml
(with the quickstart copied to var/quickstart by `make run`, use
var/quickstart/postroom.yaml). It processes what the mailboxes hold, then
stops the host application.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer, task

from postroom import hookimpl
from postroom.kernel import Kernel
from postroom.model import Interaction
from postroom.runner import ThreadPoolRunner
from postroom.services.gateway import Gateway


class HostRouting:
    """The host's routing, as a postroom hook plugin living in the host process."""

    def __init__(self) -> None:
        self.routed: list[Interaction] = []

    @hookimpl
    def postroom_submit(self, interaction: Interaction) -> None:
        self.routed.append(interaction)
        print(f"routed {interaction.id} {interaction.subtype} {interaction.subject!r}", flush=True)


def build(config_path: str, reactor: Any, routing: HostRouting) -> Gateway:
    """What a host does: one kernel with its reactor, pool and plugins."""
    kernel = Kernel(
        config_path,
        reactor=reactor,
        runner=ThreadPoolRunner.create(reactor, size=4, name="host-postroom"),
        plugins=[("host-routing", routing)],
    )
    return Gateway(kernel, once=True)


async def main(reactor: Any, config_path: str) -> None:
    host = service.MultiService()  # the host application's own service tree
    routing = HostRouting()
    gateway = build(config_path, reactor, routing)
    gateway.setServiceParent(host)
    host.startService()
    try:
        ok = await gateway.run_once()
    finally:
        await host.stopService()
    print(f"done: {len(routing.routed)} interaction(s) routed, ok={ok}", flush=True)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1])))

"""Embedding postroom in another Twisted application.

A contact-centre stack that already runs a Twisted process adds the gateway
to its own service tree, hands it its reactor and thread pool, and registers
an in-process plugin: here one whose ``postroom_submit`` is the hand-off to
the host's routing (it just prints what it routes).

The gateway brings its HTTP API (``/health``, ``/metrics``, ``/send``...) as
one of its child services, on the site's ``http`` section: it listens once the
gateway has started (its store lock held, its store open) and its port closes
when the host stops the gateway. Nothing else to start or stop.

Run:  python examples/embed/embed_gateway.py path/to/postroom.yaml
(with the quickstart copied to var/quickstart by `make run`, use
var/quickstart/postroom.yaml; the API listens on the site's ``http.port``,
7678 unless the site says otherwise). It waits for the mailboxes' first pass,
asks its own API for ``/health``, then stops the host application.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.web.client import Agent, readBody

from postroom.api import Gateway, Interaction, Kernel, ThreadPoolRunner, hookimpl


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
    return Gateway(kernel)  # mailboxes, hand-off, outbox and the HTTP API


async def first_pass(reactor: Any, gateway: Gateway) -> None:
    """The host's own idea of "done": every mailbox passed once, every hand-off made."""
    assert gateway.opened is not None
    await gateway.opened
    while not all(health["last_success"] for health in gateway.health().values()):
        await task.deferLater(reactor, 0.05, lambda: None)
    await gateway.handoff.wait_idle()


async def main(reactor: Any, config_path: str) -> None:
    host = service.MultiService()  # the host application's own service tree
    routing = HostRouting()
    gateway = build(config_path, reactor, routing)
    gateway.setServiceParent(host)
    host.startService()
    try:
        await first_pass(reactor, gateway)
        if gateway.api is not None:
            port = gateway.api.port.getHost().port
            answer = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/health".encode())
            status = json.loads(await readBody(answer))["status"]
            print(f"api: GET /health {answer.code} {status}", flush=True)
        ok = all(not h["last_error"] for h in gateway.health().values())
        ok = ok and not gateway.handoff.failed
    finally:
        await host.stopService()  # the gateway stops, and its API's port closes
    closed = gateway.api is None or gateway.api.port is None
    print(f"done: {len(routing.routed)} interaction(s) routed, ok={ok}, api closed={closed}",
          flush=True)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1])))

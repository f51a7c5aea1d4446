"""``postroom amqp check``: connect to the site's broker as the gateway would.

The plugin API has no hook for ``postroom check --connect`` (it covers the
mailboxes and the SMTP client), so the plugin brings its own command: it
opens the connection and the confirming channel and, with ``declare``, checks
the exchange and declares the queue and its binding, then closes. It
publishes nothing. Exit 0 when all of that worked, 1 with the reason (no
credentials in it) when not, 2 when the site sets no ``amqp.url``.
"""

from __future__ import annotations

import argparse
from typing import Any

from postroom.api import HandoffError, PluginCommands


def add_commands(commands: PluginCommands, plugin: Any) -> None:
    parser = commands.add(
        "amqp",
        help="check the connection to the site's RabbitMQ broker",
        description="The amqp hand-off plugin's broker, as the gateway reaches it.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser(
        "check",
        help="connect, log in, open a confirming channel, declare (with amqp.declare)",
        description="Connect to amqp.url as the gateway does and set up what it would "
        "(nothing is published). Exit 0 when it worked, 1 when not, 2 without amqp.url.",
    )

    async def run(args: argparse.Namespace, kernel: Any) -> int:
        publisher = plugin.publisher(kernel.config)
        if publisher is None:
            print("amqp: the site sets no amqp.url: nothing is handed off to a broker")
            return 2
        settings = publisher.settings
        try:
            await publisher.check()
        except HandoffError as exc:
            print(f"amqp: {exc}")
            return 1
        declared = settings.declare and settings.queue
        print(
            f"amqp: {settings.address}: connected, publishing to {settings.destination}"
            + (f", queue {settings.queue!r} declared" if declared else "")
        )
        return 0

    commands.site_command(check, run)

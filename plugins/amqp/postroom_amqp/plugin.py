"""The ``amqp`` hook plugin: options, one publisher per kernel, ``postroom_submit``,
and the command ``postroom amqp check``.

The object the entry point names is shared by every kernel of the process
(tests build many), so the publishers are kept per kernel, found again from
the ``ctx`` of a hand-off by its site configuration. A site without
``amqp.url`` hands nothing off through this plugin (it may be installed and
unused); a site whose ``plugins:`` list names ``amqp`` must set it.
"""

from __future__ import annotations

from typing import Any

from postroom.api import HandoffError, Interaction, OptionSchema, PluginCommands, hookimpl
from postroom_amqp.commands import add_commands
from postroom_amqp.message import body_of, properties_of
from postroom_amqp.options import SECTION, add_options, read_settings
from postroom_amqp.publisher import Publisher

NAME = "amqp"


class AMQPHandoff:
    def __init__(self) -> None:
        #: by ``id(kernel.config)``; None: the site configures no broker
        self._publishers: dict[int, Publisher | None] = {}

    def publisher(self, config: Any) -> Publisher | None:
        """The publisher of the kernel whose configuration is *config* (tests read
        its counters)."""
        return self._publishers.get(id(config))

    @hookimpl
    def postroom_add_options(self, schema: OptionSchema) -> None:
        add_options(schema)

    @hookimpl
    def postroom_register_commands(self, commands: PluginCommands) -> None:
        add_commands(commands, self)

    @hookimpl
    def postroom_configure(self, config: Any) -> None:
        settings = read_settings(config)
        if settings is None and NAME in (config.plugins or ()):
            raise config.error("is required: the site enables the amqp plugin", SECTION, "url")

    @hookimpl
    def postroom_startup(self, kernel: Any) -> None:
        settings = read_settings(kernel.config)
        publisher = Publisher(settings, kernel.reactor, kernel.clock) if settings else None
        self._publishers[id(kernel.config)] = publisher

    @hookimpl
    async def postroom_shutdown(self, kernel: Any) -> None:
        publisher = self._publishers.pop(id(kernel.config), None)
        if publisher is not None:
            await publisher.close()

    @hookimpl
    async def postroom_submit(self, interaction: Interaction, ctx: Any) -> None:
        key = id(ctx.config)
        if key not in self._publishers:
            raise HandoffError("the amqp plugin was not started with this kernel")
        publisher = self._publishers[key]
        if publisher is None:
            return
        body = body_of(interaction, ctx.config)
        properties = properties_of(interaction, ctx.clock.seconds())
        await publisher.publish(interaction.id, body, properties)


plugin = AMQPHandoff()

"""The ``ldap`` hook plugin: the sender looked up in a directory.

* ``postroom_enrich``: an inbound interaction gets ``ContactId`` and
  ``Contact.<Name>`` of the sender's entry (:mod:`postroom_ldap.contacts`). A
  directory that is down (circuit open) costs nothing, one that does not answer
  costs at most ``timeout`` on the gateway's clock; then the look-up is owed:
  ``ldap.LookupPending`` (the reason) is attached instead, and the interaction
  is committed and handed off with what is known.
* ``postroom_committed``: an owed look-up is done again; while the directory
  is still down it raises, so the kernel retries this side effect with
  back-off; once it answers, the stored interaction gains the contact
  (``ctx.store.update_attached_data``) and loses ``ldap.LookupPending``.
* ``postroom_field_values``: the ``Contact`` group (``ContactId`` and each
  mapped name) of the request's first To recipient, for templates.
* ``postroom_register_commands``: ``postroom ldap-lookup -c SITE ADDRESS``, the
  directory's connection check (:mod:`postroom_ldap.command`).

State (cache, circuit) is per kernel: the plugin object is shared by every
kernel of the process, so it keeps one :class:`Directory` per site
configuration, made on first use and dropped at shutdown.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet.threads import deferToThread

from postroom.api import (
    Context,
    Interaction,
    InteractionType,
    OptionSchema,
    OutboundRequest,
    ParsedMessage,
    PluginCommands,
    hookimpl,
)
from postroom_ldap import settings as settings_module
from postroom_ldap.command import add_command
from postroom_ldap.contacts import FIELD_GROUP, PENDING_KEY, Contact
from postroom_ldap.directory import Directory, DirectoryUnavailable

log = logging.getLogger(__name__)

_INBOUND = InteractionType.INBOUND.value


class _ThreadRunner:
    """``ctx.runner`` for a context built without one: Twisted's reactor pool."""

    def run(self, fn: Any, *args: Any) -> Any:
        return deferToThread(fn, *args)


class LdapContacts:
    """The plugin object (entry point ``ldap = postroom_ldap.plugin:plugin``)."""

    def __init__(self) -> None:
        #: id(site configuration) -> (that configuration, its directory or None)
        self._sites: dict[int, tuple[Any, Directory | None]] = {}

    def directory(self, ctx: Context) -> Directory | None:
        """The site's directory (None: no ``url``, the plugin does nothing)."""
        config = ctx.config
        found = self._sites.get(id(config))
        if found is not None and found[0] is config:
            return found[1]
        settings = settings_module.read(config)
        made = None
        if settings is not None:
            made = Directory(settings, ctx.clock, ctx.runner or _ThreadRunner())
        self._sites[id(config)] = (config, made)
        return made

    # -- life

    @hookimpl
    def postroom_add_options(self, schema: OptionSchema) -> None:
        settings_module.add_options(schema)

    @hookimpl
    def postroom_configure(self, config: Any) -> None:
        settings_module.read(config)  # ConfigError for combinations that cannot work

    @hookimpl
    def postroom_shutdown(self, kernel: Any) -> None:
        self._sites.pop(id(kernel.config), None)

    @hookimpl
    def postroom_register_commands(self, commands: PluginCommands) -> None:
        add_command(commands, self.directory)

    # -- inbound

    @hookimpl
    async def postroom_enrich(
        self, message: ParsedMessage, interaction: Interaction, ctx: Context
    ) -> None:
        directory = self.directory(ctx)
        if directory is None or interaction.type != _INBOUND or not interaction.from_addr:
            return
        try:
            contact = await directory.lookup(interaction.from_addr)
        except DirectoryUnavailable as exc:
            interaction.attached_data[PENDING_KEY] = str(exc)
            return
        if contact is not None:
            interaction.attached_data.update(contact.attached())

    @hookimpl
    async def postroom_committed(self, interaction: Interaction, ctx: Context) -> None:
        """Do an owed look-up; raise while the directory is down (the kernel retries)."""
        if PENDING_KEY not in interaction.attached_data:
            return
        directory = self.directory(ctx)
        found: Contact | None = None
        if directory is None:
            log.warning("ldap-contacts: interaction %s was owed a look-up but no directory "
                        "is configured now; none is made", interaction.id)  # fmt: skip
        else:
            found = await directory.lookup(interaction.from_addr)  # raises while down
        attached = found.attached() if found is not None else {}
        await ctx.store.update_attached_data(interaction.id, attached, remove=[PENDING_KEY])

    # -- outbound

    @hookimpl
    async def postroom_field_values(
        self, request: OutboundRequest, ctx: Context
    ) -> dict[str, dict[str, Any]] | None:
        directory = self.directory(ctx)
        if directory is None or not request.to:
            return None
        try:
            contact = await directory.lookup(request.to[0])
        except DirectoryUnavailable as exc:
            log.info("ldap-contacts: no Contact fields for the request: %s", exc)
            return None
        return {FIELD_GROUP: contact.field_values()} if contact is not None else None


plugin = LdapContacts()

"""What one option declaration is: :class:`Option`, the :class:`Scope` of places it
is written in, and the names of the sections the loader reads structurally.

A site configuration has these places for options (the commercial product's
sections):

* ``Scope.GLOBAL`` with ``section=None``: a top-level key (``tenant-id``);
* ``Scope.GLOBAL`` with a section name: a key of that mapping
  (``email-processing: {default-domain: ...}``);
* ``Scope.MAILBOX``: a key of each ``pop-client`` entry, optionally only for
  some mailbox ``type`` values (``types=("imap",)``);
* ``Scope.SMTP_CLIENT``: a key of ``smtp-client``, optionally only for some
  ``server-type`` values;
* ``Scope.STORE``: a key of ``store``, for some ``driver`` values;
* ``Scope.SECRET``: a key of every ``secret-<name>`` section.

The lowest module of :mod:`postroom.config`: the type converters
(:mod:`postroom.config.types`) read an ``Option``'s ``type``, ``choices`` and
bounds, and the schema (:mod:`postroom.config.options`) collects ``Option``s
checked with those converters; both import this module, neither the other.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs


class Scope(enum.StrEnum):
    GLOBAL = "global"
    MAILBOX = "mailbox"
    SMTP_CLIENT = "smtp-client"
    STORE = "store"
    SECRET = "secret"


MAILBOX_SECTION = "pop-client"
SMTP_SECTION = "smtp-client"
STORE_SECTION = "store"
SECRET_PREFIX = "secret-"
#: top-level keys the loader reads structurally; no global section may take them
RESERVED_SECTIONS = (MAILBOX_SECTION, SMTP_SECTION, STORE_SECTION)


@attrs.frozen
class Option:
    """One declared option.

    ``type`` names a converter of :mod:`postroom.config.types` (``str``,
    ``int``, ``bool``, ``duration``, ``size``, ``path``, ``secret``,
    ``choice``, ``list``, ``mapping``...); values are converted from the YAML
    scalar's text by it, never by YAML's own guesses.
    """

    name: str
    type: str
    default: Any = None
    description: str = ""
    scope: Scope = Scope.GLOBAL
    section: str | None = None
    #: for MAILBOX / SMTP_CLIENT / STORE scopes: the driver names it applies to
    #: (None: all)
    types: tuple[str, ...] | None = None
    required: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: older spellings still accepted (e.g. ``default_domain``)
    aliases: tuple[str, ...] = ()
    #: never printed (passwords, tokens); ``secret`` type implies it
    secret: bool = False
    #: who declared it (filled by the schema from the registering plugin)
    declared_by: str = ""

    @property
    def is_secret(self) -> bool:
        return self.secret or self.type == "secret"

    def applies_to(self, driver: str | None) -> bool:
        return self.types is None or (driver is not None and driver in self.types)

    @property
    def place(self) -> str:
        """Where the option is written, for messages and docs."""
        if self.scope is Scope.GLOBAL:
            return self.section or "(top level)"
        if self.scope is Scope.MAILBOX:
            return MAILBOX_SECTION + "[]"
        if self.scope is Scope.SMTP_CLIENT:
            return SMTP_SECTION
        if self.scope is Scope.STORE:
            return STORE_SECTION
        return "secret-<name>"

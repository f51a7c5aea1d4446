"""Option declarations: every option exists in exactly one place.

The kernel, each driver and each plugin declare their options in the
``postroom_add_options(schema)`` hook. Validation, ``postroom check`` and
``docs/configuration.md`` are all derived from these declarations.

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

Declarations are checked when made (known type, ``choices`` for ``choice``, a
default the type accepts) so a plugin's mistake names the plugin at start-up
rather than surfacing as a puzzling error about the operator's file.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from postroom.config.types import BUILTIN_TYPES, Converter, TypeRegistry, UnknownType


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


class DuplicateOption(ValueError):
    """Two declarations for the same option in the same place."""


class InvalidOption(ValueError):
    """A declaration that cannot work (unknown type, bad default, reserved section)."""


class OptionSchema:
    """The collection of declared options, filled through ``postroom_add_options``."""

    def __init__(self) -> None:
        self._options: list[Option] = []
        self._current_plugin = ""
        #: converters for this schema; falls back to the shared built-ins
        self.types = TypeRegistry(parent=BUILTIN_TYPES)

    def register_type(
        self, name: str, fn: Converter, *, description: str | None = None, replace: bool = False
    ) -> None:
        """Add an option type for this schema (call it before declaring options using it)."""
        self.types.register(name, fn, description=description, replace=replace)

    def declaring(self, plugin_name: str) -> _Declaring:
        """Context manager the kernel uses to attribute declarations to a plugin."""
        return _Declaring(self, plugin_name)

    def add(self, name: str, type: str = "str", **kwargs: Any) -> Option:
        """Declare an option; see :class:`Option` for the keywords."""
        kwargs.setdefault("declared_by", self._current_plugin)
        if isinstance(kwargs.get("scope"), str):
            kwargs["scope"] = Scope(kwargs["scope"])
        option = Option(name=name, type=type, **kwargs)
        self._check(option)
        spellings = {option.name, *option.aliases}
        for other in self._options:
            if (
                spellings & {other.name, *other.aliases}
                and other.scope is option.scope
                and (option.scope is not Scope.GLOBAL or other.section == option.section)
                and _overlap(other.types, option.types)
            ):
                raise DuplicateOption(
                    f"option {option.name!r} in {option.place} declared twice "
                    f"(by {other.declared_by or 'the kernel'} and "
                    f"{option.declared_by or 'the kernel'})"
                )
        self._options.append(option)
        return option

    def _check(self, option: Option) -> None:
        who = option.declared_by or "the kernel"
        what = f"option {option.name!r} in {option.place} (declared by {who})"
        if (
            option.scope is Scope.GLOBAL
            and option.section is not None
            and (option.section in RESERVED_SECTIONS or option.section.startswith(SECRET_PREFIX))
        ):
            raise InvalidOption(
                f"{what}: section {option.section!r} is structural; use scope="
                "Scope.MAILBOX, Scope.SMTP_CLIENT, Scope.STORE or Scope.SECRET"
            )
        try:
            self.types.info(option.type)
        except UnknownType as exc:
            raise InvalidOption(f"{what}: {exc}") from None
        if option.type == "choice" and not option.choices:
            raise InvalidOption(f"{what}: type 'choice' needs choices=(...)")
        if option.default is not None:
            try:
                self.types.convert(option.default, option)
            except ValueError as exc:
                raise InvalidOption(f"{what}: default {option.default!r}: {exc}") from None

    def __iter__(self) -> Iterator[Option]:
        return iter(self._options)

    def __len__(self) -> int:
        return len(self._options)

    def select(
        self, scope: Scope, section: str | None = None, driver: str | None = None
    ) -> list[Option]:
        """Options for one place; ``driver`` filters by ``Option.types``."""
        return [
            o
            for o in self._options
            if o.scope is scope
            and (scope is not Scope.GLOBAL or o.section == section)
            and (driver is None or o.applies_to(driver))
        ]

    def sections(self) -> list[str]:
        """Names of the global sections that have options, in declaration order."""
        seen: dict[str, None] = {}
        for o in self._options:
            if o.scope is Scope.GLOBAL and o.section:
                seen.setdefault(o.section, None)
        return list(seen)

    def find(self, name: str, predicate: Callable[[Option], bool] | None = None) -> Option | None:
        for o in self._options:
            if (o.name == name or name in o.aliases) and (predicate is None or predicate(o)):
                return o
        return None


class _Declaring:
    def __init__(self, schema: OptionSchema, plugin: str) -> None:
        self.schema = schema
        self.plugin = plugin
        self.previous = ""

    def __enter__(self) -> OptionSchema:
        self.previous = self.schema._current_plugin
        self.schema._current_plugin = self.plugin
        return self.schema

    def __exit__(self, *exc: object) -> None:
        self.schema._current_plugin = self.previous


def _overlap(a: Iterable[str] | None, b: Iterable[str] | None) -> bool:
    if a is None or b is None:
        return True
    return bool(set(a) & set(b))

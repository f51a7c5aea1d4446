"""The option schema: every option a site may set, declared in exactly one place.

The kernel, each driver and each plugin declare their options in the
``postroom_add_options(schema)`` hook. Validation, ``postroom check`` and
``docs/configuration.md`` are all derived from these declarations (what one
declaration holds, and the places an option is written in:
:mod:`postroom.config.declaration`).

Declarations are checked when made (known type, ``choices`` for ``choice``, a
default the type accepts) so a plugin's mistake names the plugin at start-up
rather than surfacing as a puzzling error about the operator's file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from postroom.config.declaration import (
    MAILBOX_SECTION,
    RESERVED_SECTIONS,
    SECRET_PREFIX,
    SMTP_SECTION,
    STORE_SECTION,
    Option,
    Scope,
)
from postroom.config.types import BUILTIN_TYPES, Converter, TypeRegistry, UnknownType

#: the declaration names are re-exported: plugins declare options with the schema
#: and ``Scope`` together (``from postroom.config.options import OptionSchema, Scope``)
__all__ = [
    "MAILBOX_SECTION",
    "RESERVED_SECTIONS",
    "SECRET_PREFIX",
    "SMTP_SECTION",
    "STORE_SECTION",
    "DuplicateOption",
    "InvalidOption",
    "Option",
    "OptionSchema",
    "Scope",
]


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

"""The site model: a validated configuration, as the kernel, drivers and plugins read it.

:class:`SiteConfig` holds every declared option with a value (the file's, or the
declared default) and remembers where each was written, so a check made after
validation (a driver's, a plugin's) reports an error with file, line and option
like the validator's own (:meth:`SiteConfig.error`, :meth:`MailboxConfig.error`).
Built by :mod:`postroom.config.validator`; this module reads no YAML.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from postroom.config.declaration import (
    MAILBOX_SECTION,
    SECRET_PREFIX,
    SMTP_SECTION,
    STORE_SECTION,
    Scope,
)
from postroom.config.options import OptionSchema
from postroom.errors import ConfigError


class OptionValues(dict[str, Any]):
    """Converted option values by canonical name; its repr hides secret options.

    ``Secret`` values already print as ``***``; this also covers options declared
    ``secret=True`` with another type.
    """

    def __init__(
        self, values: Mapping[str, Any] | None = None, secret_names: Iterable[str] = ()
    ) -> None:
        super().__init__(values or {})
        self.secret_names = frozenset(secret_names)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k!r}: {'***' if k in self.secret_names and v is not None else repr(v)}"
            for k, v in self.items()
        )
        return "{" + shown + "}"

    __str__ = __repr__

    def copy(self) -> OptionValues:
        return OptionValues(self, self.secret_names)


def _lookup(values: Mapping[str, Any], aliases: Mapping[str, str], name: str, where: str) -> Any:
    key = aliases.get(name, name)
    if key not in values:
        raise KeyError(f"{name!r} is not a declared option of {where}")
    return values[key]


@attrs.define
class SectionConfig:
    """One mapping of options: a global section, ``smtp-client`` or a ``secret-<name>``."""

    name: str
    options: OptionValues
    #: ``server-type`` for ``smtp-client``; None elsewhere
    driver: str | None = None
    passthrough: dict[str, str] = attrs.field(factory=dict)
    file: str | None = None
    line: int | None = None
    lines: dict[str, int] = attrs.field(factory=dict, repr=False)
    aliases: dict[str, str] = attrs.field(factory=dict, repr=False)

    @property
    def server_type(self) -> str | None:
        return self.driver

    def get(self, name: str) -> Any:
        """The value of a declared option (aliases accepted); KeyError if undeclared."""
        return _lookup(self.options, self.aliases, name, self.name)

    def line_of(self, name: str | None = None) -> int | None:
        """Where ``name`` was written (the section's own line if not written there)."""
        if name is None:
            return self.line
        return self.lines.get(self.aliases.get(name, name), self.line)

    def error(self, message: str, name: str | None = None) -> ConfigError:
        """A ConfigError at this section (or option) for checks made after validation."""
        option = f"{self.name}.{name}" if name else self.name
        return ConfigError(message, file=self.file, line=self.line_of(name), option=option)


@attrs.define
class MailboxConfig:
    """One ``pop-client`` entry, every option applicable to its ``type`` filled."""

    name: str
    type: str
    auth: str
    options: OptionValues
    passthrough: dict[str, str] = attrs.field(factory=dict)
    file: str | None = None
    line: int | None = None
    lines: dict[str, int] = attrs.field(factory=dict, repr=False)
    aliases: dict[str, str] = attrs.field(factory=dict, repr=False)

    def get(self, name: str) -> Any:
        """The value of a declared option (aliases accepted); KeyError if undeclared."""
        return _lookup(self.options, self.aliases, name, f"mailbox {self.name!r}")

    def line_of(self, name: str | None = None) -> int | None:
        if name is None:
            return self.line
        return self.lines.get(self.aliases.get(name, name), self.line)

    def error(self, message: str, name: str | None = None) -> ConfigError:
        """A ConfigError at this mailbox (or one of its options), for drivers' own checks."""
        option = f"{MAILBOX_SECTION}[{self.name}]" + (f".{name}" if name else "")
        return ConfigError(message, file=self.file, line=self.line_of(name), option=option)


@attrs.define
class SiteConfig:
    """A validated site configuration: every declared option has a value."""

    path: Path | None
    base_dir: Path
    tenant_id: int
    store_driver: str
    store_options: OptionValues
    plugins: list[str] | None
    mailboxes: list[MailboxConfig]
    smtp: SectionConfig | None
    secrets: dict[str, SectionConfig]
    sections: dict[str, OptionValues]
    top: OptionValues
    warnings: list[ConfigError] = attrs.field(factory=list)
    file: str | None = None
    #: (section or None for top level, option) -> line; store options under "store"
    lines: dict[tuple[str | None, str], int] = attrs.field(factory=dict, repr=False)
    schema: OptionSchema | None = attrs.field(default=None, repr=False, eq=False)

    def _canonical(self, section: str | None, name: str) -> str:
        if self.schema is None:
            return name
        scope, place = _scope_of(section)
        option = self.schema.find(
            name,
            lambda o: o.scope is scope and (scope is not Scope.GLOBAL or o.section == place),
        )
        return option.name if option is not None else name

    def get(self, section: str | None, name: str) -> Any:
        """A value by place and name: ``get(None, "tenant-id")``,
        ``get("email-processing", "default-domain")``, ``get("store", "path")``,
        ``get("smtp-client", ...)``, ``get("secret-google", "password")``.
        KeyError when the option is not declared there."""
        values: Mapping[str, Any]
        if section is None or section == "":
            values = self.top
        elif section == STORE_SECTION:
            values = {"driver": self.store_driver, **self.store_options}
        elif section == SMTP_SECTION:
            if self.smtp is None:
                raise KeyError("the configuration has no smtp-client section")
            values = self.smtp.options
        elif section.startswith(SECRET_PREFIX):
            values = self.secrets[section[len(SECRET_PREFIX) :]].options
        elif section in self.sections:
            values = self.sections[section]
        else:
            raise KeyError(f"no section {section!r} is declared")
        key = self._canonical(section, name)
        if key not in values:
            raise KeyError(f"{name!r} is not a declared option of {section or 'the top level'}")
        return values[key]

    def line_of(self, section: str | None, name: str | None = None) -> int | None:
        """Where an option (or a section, ``name=None``) was written, if it was."""
        if name is None:
            return self.lines.get((None, section or ""))
        return self.lines.get((section or None, self._canonical(section, name)))

    def error(self, message: str, section: str | None, name: str | None = None) -> ConfigError:
        """A ConfigError pointing at an option, for checks made after validation."""
        option = ".".join(p for p in (section, name) if p) or None
        return ConfigError(message, file=self.file, line=self.line_of(section, name), option=option)

    def mailbox(self, name: str) -> MailboxConfig:
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox
        raise KeyError(f"no mailbox named {name!r}")


def _scope_of(section: str | None) -> tuple[Scope, str | None]:
    if not section:
        return Scope.GLOBAL, None
    if section == STORE_SECTION:
        return Scope.STORE, None
    if section == SMTP_SECTION:
        return Scope.SMTP_CLIENT, None
    if section.startswith(SECRET_PREFIX):
        return Scope.SECRET, None
    return Scope.GLOBAL, section

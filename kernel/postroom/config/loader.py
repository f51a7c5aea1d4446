"""Read a site configuration (YAML) and validate it against the declared options.

The file is *composed*, not loaded: the node tree keeps every value's line and
its text, so values are converted by the declared type (YAML 1.1 would turn
``10:00:00`` into 36000 and ``yes`` into True) and every error names the file,
the line and the option. All problems are collected and raised together as one
:class:`~postroom.errors.ConfigErrors`, so an operator fixes a file in one pass.

Reading is split from validation because the drivers named in the file
(``store.driver``, each mailbox's ``type`` and ``auth``, ``smtp-client``'s
``server-type``) declare options too: the kernel reads the document, loads those
drivers (see :meth:`Document.driver_names`), lets them add their declarations to
the schema, then validates.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from postroom.config.interpolate import InterpolationError, has_reference, interpolate
from postroom.config.options import (
    MAILBOX_SECTION,
    SECRET_PREFIX,
    SMTP_SECTION,
    STORE_SECTION,
    Option,
    OptionSchema,
    Scope,
)
from postroom.config.types import Secret, UnknownType
from postroom.errors import ConfigError, ConfigErrors
from postroom.interfaces import SENDERS_GROUP, SOURCES_GROUP

_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_DEPTH = 32
#: mailbox keys starting with this are pass-through client properties (spec section 7)
PASSTHROUGH_PREFIX = "mail."
#: top-level keys ignored, to hold YAML anchors (``x-imap: &imap {...}``), as in Compose
EXTENSION_PREFIX = "x-"
_DEFAULT_STORE = "sqlite"
_DEFAULT_AUTH = "basic"
#: pass-through properties whose names contain these are hidden in reprs
#: (JavaMail has e.g. ``mail.imap.proxy.password``)
_SENSITIVE = ("password", "secret", "token")


# --- results --------------------------------------------------------------------------


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

    @classmethod
    def default(cls, schema: OptionSchema, base_dir: Path | None = None) -> SiteConfig:
        """The embedded defaults, no file (``postroom ingest`` without ``-c``)."""
        base = (base_dir or Path.cwd()).absolute()
        return validate(Document(file="(built-in defaults)", base_dir=base), schema)

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


# --- reading --------------------------------------------------------------------------


@attrs.define
class DriverNames:
    """The drivers a document names, so the kernel can load them before validating.

    Lists are in order of first appearance, without repeats.
    """

    store: str = _DEFAULT_STORE
    sources: list[str] = attrs.field(factory=list)
    #: ``smtp-client``'s ``server-type``; empty when there is no smtp-client
    senders: list[str] = attrs.field(factory=list)
    #: ``(group, driver, auth)``: the auth driver each source or sender driver
    #: would use (a mailbox's ``auth``, default ``basic``; ``smtp-client``'s when
    #: ``enable-authentication``); the kernel loads it only for a driver that
    #: declares ``needs_auth``
    auth: list[tuple[str, str, str]] = attrs.field(factory=list)
    #: None when the ``plugins:`` key is absent (every installed plugin)
    plugins: list[str] | None = None


@attrs.define
class Document:
    """A composed YAML document: nodes with positions, not yet validated."""

    file: str
    base_dir: Path
    root: yaml.Node | None = attrs.field(default=None, repr=False, eq=False)
    path: Path | None = None

    def driver_names(self, environ: Mapping[str, str] | None = None) -> DriverNames:
        """The named drivers, read leniently: malformed parts are left to :func:`validate`."""
        env = os.environ if environ is None else environ
        names = DriverNames()
        if not isinstance(self.root, yaml.MappingNode):
            return names
        top = _quiet_items(self.root)

        def text(node: yaml.Node | None) -> str | None:
            if not isinstance(node, yaml.ScalarNode) or _is_null(node):
                return None
            try:
                return interpolate(node.value, environ=env, base_dir=self.base_dir).strip()
            except InterpolationError:
                return None

        def add(target: list[Any], value: Any) -> None:
            if value and value not in target:
                target.append(value)

        store = top.get(STORE_SECTION)
        if store is not None and isinstance(store.value, yaml.MappingNode):
            names.store = text(_quiet_items(store.value).get("driver", _NONE).value) or (
                _DEFAULT_STORE
            )
        pop = top.get(MAILBOX_SECTION)
        for item in _sequence_of(pop.value) if pop is not None else []:
            if not isinstance(item, yaml.MappingNode):
                continue
            entries = _quiet_items(item)
            kind = text(entries.get("type", _NONE).value)
            add(names.sources, kind)
            if kind is not None:
                auth = text(entries.get("auth", _NONE).value) or _DEFAULT_AUTH
                add(names.auth, (SOURCES_GROUP, kind, auth))
        smtp = top.get(SMTP_SECTION)
        if smtp is not None and isinstance(smtp.value, yaml.MappingNode):
            smtp_entries = _quiet_items(smtp.value)
            sender = text(smtp_entries.get("server-type", _NONE).value)
            add(names.senders, sender)
            enabled = (text(smtp_entries.get("enable-authentication", _NONE).value) or "").lower()
            if sender is not None and enabled in ("true", "yes", "on", "1"):
                auth = text(smtp_entries.get("auth", _NONE).value) or _DEFAULT_AUTH
                add(names.auth, (SENDERS_GROUP, sender, auth))
        plugins = top.get("plugins")
        if plugins is not None:
            if isinstance(plugins.value, yaml.SequenceNode):
                names.plugins = [v for v in map(text, plugins.value.value) if v]
            elif _is_null(plugins.value):
                names.plugins = None
            else:
                raw = text(plugins.value) or ""
                names.plugins = [p.strip() for p in raw.split(",") if p.strip()]
        return names


def read_document(path: str | os.PathLike[str]) -> Document:
    """Compose a YAML file; raises ConfigErrors for unreadable files and bad syntax."""
    file = os.fspath(path)
    p = Path(file)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors(
            [ConfigError(f"cannot read the configuration: {exc.strerror or exc}", file=file)]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigErrors(
            [ConfigError(f"the configuration is not UTF-8 text ({exc.reason})", file=file)]
        ) from None
    return parse_document(text, file=file, base_dir=p.parent.absolute(), path=p)


def parse_document(
    text: str, *, file: str = "<string>", base_dir: Path | None = None, path: Path | None = None
) -> Document:
    """Compose YAML text (for embedding and tests); relative paths use ``base_dir``."""
    base = (base_dir or Path.cwd()).absolute()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        # Only the problem description: str(exc) quotes the offending line, which
        # may hold a password.
        mark = exc.problem_mark or exc.context_mark
        detail = "; ".join(p for p in (exc.context, exc.problem) if p)
        column = f" (column {mark.column + 1})" if mark is not None else ""
        raise ConfigErrors(
            [
                ConfigError(
                    f"YAML syntax error: {detail}{column}",
                    file=file,
                    line=mark.line + 1 if mark is not None else None,
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigErrors([ConfigError(f"YAML error: {type(exc).__name__}", file=file)]) from None
    return Document(file=file, base_dir=base, root=root, path=path)


def load(
    path: str | os.PathLike[str],
    schema: OptionSchema,
    *,
    environ: Mapping[str, str] | None = None,
) -> SiteConfig:
    """Read and validate a configuration file; raises ConfigErrors with every problem."""
    return validate(read_document(path), schema, environ=environ)


def defaults(
    schema: OptionSchema,
    scope: Scope,
    *,
    section: str | None = None,
    driver: str | None = None,
    base_dir: Path | None = None,
) -> OptionValues:
    """The declared defaults of one place, converted (``"00:01:00"`` -> 60.0).

    For objects built without a file, e.g. the mailbox ``postroom ingest`` invents;
    options without a default are None. ``driver=None`` keeps the options that
    apply to every driver only.
    """
    base = (base_dir or Path.cwd()).absolute()
    options = [
        o
        for o in schema.select(scope, section)
        if (o.types is None if driver is None else o.applies_to(driver))
    ]
    values = {
        o.name: None if o.default is None else schema.types.convert(o.default, o, base_dir=base)
        for o in options
    }
    return OptionValues(values, {o.name for o in options if o.is_secret})


# --- node helpers ---------------------------------------------------------------------


@attrs.frozen
class _Entry:
    key: str
    key_node: yaml.Node | None
    value: yaml.Node | None

    @property
    def line(self) -> int | None:
        return _line(self.key_node)


_NONE = _Entry("", None, None)


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _is_null(node: yaml.Node | None) -> bool:
    return node is None or (
        isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG and node.style is None
    )


def _sequence_of(node: yaml.Node | None) -> list[yaml.Node]:
    """``pop-client`` accepts one mapping as a list of one."""
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [node]
    return []


def _items(
    node: yaml.MappingNode,
    report: Callable[[str, yaml.Node | None, str | None], None],
    prefix: str = "",
    depth: int = 0,
) -> dict[str, _Entry]:
    """A mapping's entries by key text, ``<<`` merges applied, duplicates reported.

    Explicit keys win over merged ones; among merged mappings the first wins
    (YAML merge-key semantics).
    """
    explicit: dict[str, _Entry] = {}
    merged: dict[str, _Entry] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            sources = (
                [value_node]
                if isinstance(value_node, yaml.MappingNode)
                else (list(value_node.value) if isinstance(value_node, yaml.SequenceNode) else [])
            )
            if not sources or not all(isinstance(s, yaml.MappingNode) for s in sources):
                report("'<<' must be followed by a mapping or a list of mappings", key_node, None)
                continue
            if depth > _MAX_DEPTH:
                report("merges ('<<') nested too deeply", key_node, None)
                continue
            for source in sources:
                for key, entry in _items(source, report, prefix, depth + 1).items():
                    merged.setdefault(key, entry)
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            report("keys must be plain names, not lists or mappings", key_node, None)
            continue
        key = key_node.value
        if key in explicit:
            report(
                f"duplicate key {key!r} (first given at line {explicit[key].line})",
                key_node,
                prefix + key,
            )
            continue
        explicit[key] = _Entry(key, key_node, value_node)
    for key, entry in merged.items():
        explicit.setdefault(key, entry)
    return explicit


def _quiet_items(node: yaml.MappingNode) -> dict[str, _Entry]:
    return _items(node, lambda *_: None)


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Failed:
    """Marker: the value was reported as an error (so don't also say 'missing')."""


_FAILED = _Failed()


# --- validation -----------------------------------------------------------------------


def validate(
    document: Document,
    schema: OptionSchema,
    *,
    environ: Mapping[str, str] | None = None,
) -> SiteConfig:
    """Check a document against the schema; raises ConfigErrors listing every problem."""
    return _Validator(document, schema, os.environ if environ is None else environ).run()


@attrs.define
class _Block:
    values: OptionValues
    lines: dict[str, int]
    aliases: dict[str, str]
    passthrough: OptionValues


class _Validator:
    def __init__(
        self, document: Document, schema: OptionSchema, environ: Mapping[str, str]
    ) -> None:
        self.doc = document
        self.file = document.file
        self.schema = schema
        self.environ = environ
        self.errors: list[ConfigError] = []
        self.warnings: list[ConfigError] = []

    # reporting

    def error(
        self,
        message: str,
        node: yaml.Node | None = None,
        option: str | None = None,
        line: int | None = None,
    ) -> None:
        self.errors.append(
            ConfigError(message, file=self.file, line=line or _line(node), option=option)
        )

    def items(self, node: yaml.MappingNode, prefix: str) -> dict[str, _Entry]:
        return _items(node, lambda msg, n, opt: self.error(msg, n, opt), prefix)

    # values

    def python(self, node: yaml.Node, prefix: str = "", depth: int = 0) -> tuple[Any, bool]:
        """The node as text / list / dict (``${...}`` resolved) and whether it used ``${``.

        Raises InterpolationError or ValueError (structure) with value-free messages.
        """
        if depth > _MAX_DEPTH:
            raise ValueError("nested too deeply")
        if isinstance(node, yaml.ScalarNode):
            if _is_null(node):
                return None, False
            text = node.value
            if not has_reference(text):
                return text, False
            return interpolate(text, environ=self.environ, base_dir=self.doc.base_dir), True
        if isinstance(node, yaml.SequenceNode):
            items, used = [], False
            for child in node.value:
                value, child_used = self.python(child, prefix, depth + 1)
                items.append(value)
                used = used or child_used
            return items, used
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            used = False
            for key, entry in self.items(node, prefix).items():
                if entry.value is None:
                    continue
                value, child_used = self.python(entry.value, f"{prefix}{key}.", depth + 1)
                result[key] = value
                used = used or child_used
            return result, used
        raise ValueError("unsupported YAML node")

    def text(self, entry: _Entry | None) -> str | None:
        """A structural name (``type``, ``name``...); None if absent or not one value."""
        if entry is None or not isinstance(entry.value, yaml.ScalarNode) or _is_null(entry.value):
            return None
        try:
            value, _ = self.python(entry.value)
        except ValueError:
            return None
        return str(value).strip() or None

    def convert(self, option: Option, node: yaml.Node, qualified: str) -> Any:
        """The converted value, None if unset (null), or _FAILED after reporting."""
        try:
            raw, interpolated = self.python(node, qualified + ".")
        except ValueError as exc:  # InterpolationError included
            self.error(str(exc), node, qualified)
            return _FAILED
        if raw is None:
            return None
        try:
            return self.schema.types.convert(raw, option, base_dir=self.doc.base_dir)
        except UnknownType as exc:
            self.error(
                f"declared with {exc} (by {option.declared_by or 'the kernel'})", node, qualified
            )
        except ValueError as exc:
            message = str(exc)
            if option.is_secret or interpolated:
                message = _redact(message, raw)
                if interpolated and not option.is_secret:
                    message += " (the value comes from ${...} and is not shown)"
            else:
                message += f" (got {_show(raw)})"
            self.error(message, node, qualified)
        return _FAILED

    def default(self, option: Option, qualified: str, line: int | None) -> Any:
        if option.default is None:
            return None
        try:
            return self.schema.types.convert(option.default, option, base_dir=self.doc.base_dir)
        except (ValueError, UnknownType) as exc:  # checked at declaration; kept for safety
            self.error(f"bad declared default: {exc}", None, qualified, line)
            return None

    # one mapping of options

    def block(
        self,
        entries: Mapping[str, _Entry],
        candidates: list[Option],
        *,
        prefix: str,
        place: str,
        line: int | None,
        not_here: Callable[[str, str], str | None],
        structural: Iterable[str] = (),
        passthrough: bool = False,
        also_valid: Iterable[str] = (),
    ) -> _Block:
        """Convert the entries of one place, report unknown keys, fill defaults."""
        index: dict[str, Option] = {}
        for option in candidates:
            for spelling in (option.name, *option.aliases):
                index.setdefault(spelling, option)
        structural = set(structural) - set(index)
        values: dict[str, Any] = {}
        lines: dict[str, int] = {}
        given: dict[str, _Entry] = {}
        failed: set[str] = set()
        extra = OptionValues()
        for key, entry in entries.items():
            qualified = prefix + key
            found = index.get(key)
            if found is None:
                if key in structural:
                    values[key] = self.text(entry)
                    continue
                if passthrough and key.startswith(PASSTHROUGH_PREFIX):
                    self.passthrough(entry, qualified, candidates, extra)
                    continue
                message = not_here(key, place)
                if message is None:
                    names = [*index, *structural, *also_valid]
                    message = f"unknown option in {place}" + (
                        _suggest(key, names)
                        or ("; valid here: " + ", ".join(sorted(set(names))) if names else "")
                    )
                self.error(message, entry.key_node, qualified)
                continue
            option = found
            name = option.name
            if name in given:
                self.error(
                    f"{name!r} given twice (as {given[name].key!r} at line "
                    f"{given[name].line} and as {key!r})",
                    entry.key_node,
                    prefix + name,
                )
                continue
            given[name] = entry
            if entry.line is not None:
                lines[name] = entry.line
            assert entry.value is not None
            value = self.convert(option, entry.value, prefix + name)
            if value is _FAILED:
                failed.add(name)
            elif value is not None:
                values[name] = value
        aliases: dict[str, str] = {}
        for option in candidates:
            for alias in option.aliases:
                aliases[alias] = option.name
            if option.name in values or option.name in failed:
                continue
            if option.required:
                self.error(
                    f"required option missing from {place}", None, prefix + option.name, line
                )
                failed.add(option.name)
                continue
            values[option.name] = self.default(option, prefix + option.name, line)
        # declaration order, whatever the file's order: stable reprs and dumps
        rank = {o.name: i for i, o in enumerate(candidates)}
        ordered = dict(sorted(values.items(), key=lambda kv: rank.get(kv[0], -1)))
        secret_names = {o.name for o in candidates if o.is_secret}
        return _Block(OptionValues(ordered, secret_names), lines, aliases, extra)

    def passthrough(
        self, entry: _Entry, qualified: str, candidates: list[Option], into: OptionValues
    ) -> None:
        try:
            raw, _ = self.python(entry.value) if entry.value is not None else (None, False)
        except ValueError as exc:
            self.error(str(exc), entry.key_node, qualified)
            return
        if isinstance(raw, list | dict):
            self.error("a pass-through property takes a single value", entry.key_node, qualified)
            return
        into[entry.key] = "" if raw is None else str(raw)
        if any(word in entry.key.lower() for word in _SENSITIVE):
            into.secret_names |= {entry.key}
        honoured = sorted(o.name for o in candidates if o.name.startswith(PASSTHROUGH_PREFIX))
        self.warnings.append(
            ConfigError(
                f"pass-through property {entry.key!r} is not honoured by postroom; "
                f"honoured: {', '.join(honoured) if honoured else 'none'}",
                file=self.file,
                line=entry.line,
                option=qualified,
            )
        )

    def mapping_entries(self, entry: _Entry, what: str) -> dict[str, _Entry] | None:
        """The entries of a section's mapping; {} for an empty section, None if not a mapping."""
        if _is_null(entry.value):
            return {}
        if not isinstance(entry.value, yaml.MappingNode):
            self.error(f"{what} must be a mapping (key: value)", entry.value, entry.key)
            return None
        return self.items(entry.value, entry.key + ".")

    def elsewhere_than(self, scope: Scope, section: str | None) -> Callable[[str, str], str | None]:
        """A message finder for a key that is an option of another place."""

        def here(o: Option) -> bool:
            return o.scope is scope and (scope is not Scope.GLOBAL or o.section == section)

        def message(key: str, place: str) -> str | None:
            option = self.schema.find(key, lambda o: not here(o))
            if option is None:
                return None
            return f"{key!r} is not an option of {place} but of {_describe_place(option)}"

        return message

    def not_for_driver(
        self, scope: Scope, driver: str | None, what: str
    ) -> Callable[[str, str], str | None]:
        """A message finder for options of this scope that apply to other drivers only."""
        elsewhere = self.elsewhere_than(scope, None)

        def message(key: str, place: str) -> str | None:
            option = self.schema.find(key, lambda o: o.scope is scope)
            if option is not None and driver is not None and not option.applies_to(driver):
                kinds = ", ".join(option.types or ())
                return f"{key!r} is not an option of {what} (only of: {kinds})"
            return elsewhere(key, place)

        return message

    # the whole document

    def run(self) -> SiteConfig:
        schema = self.schema
        root = self.doc.root
        entries: dict[str, _Entry] = {}
        if isinstance(root, yaml.MappingNode):
            entries = self.items(root, "")
        elif root is not None and not _is_null(root):
            self.error("the configuration must be a mapping (key: value) at the top", root)

        sections = schema.sections()
        top_entries: dict[str, _Entry] = {}
        section_entries: dict[str, _Entry] = {}
        secret_entries: dict[str, _Entry] = {}
        lines: dict[tuple[str | None, str], int] = {}
        for key, entry in entries.items():
            if entry.line is not None:
                lines[(None, key)] = entry.line
            if key.startswith(EXTENSION_PREFIX):
                continue
            if key.startswith(SECRET_PREFIX):
                secret_entries[key] = entry
            elif key in sections or key in (MAILBOX_SECTION, SMTP_SECTION, STORE_SECTION):
                section_entries[key] = entry
            else:
                top_entries[key] = entry

        top_options = schema.select(Scope.GLOBAL, None)
        top = self.block(
            top_entries,
            top_options,
            prefix="",
            place="the top level",
            line=None,
            not_here=self.elsewhere_than(Scope.GLOBAL, None),
            also_valid=[*sections, MAILBOX_SECTION, SMTP_SECTION, STORE_SECTION, "secret-<name>"],
        )
        lines.update({(None, k): v for k, v in top.lines.items()})

        global_values: dict[str, OptionValues] = {}
        for section in sections:
            given = section_entries.get(section)
            sub = self.mapping_entries(given, f"section {section!r}") if given else {}
            result = self.block(
                sub or {},
                schema.select(Scope.GLOBAL, section),
                prefix=section + ".",
                place=f"section {section!r}",
                line=given.line if given else None,
                not_here=self.elsewhere_than(Scope.GLOBAL, section),
            )
            global_values[section] = result.values
            lines.update({(section, k): v for k, v in result.lines.items()})

        store_driver, store_options = self.store(section_entries.get(STORE_SECTION), lines)
        mailboxes = self.mailboxes(section_entries.get(MAILBOX_SECTION))
        smtp = self.smtp(section_entries.get(SMTP_SECTION))
        secrets: dict[str, SectionConfig] = {}
        for key, entry in secret_entries.items():
            secret = self.secret(entry)
            if secret is not None:
                secrets[key[len(SECRET_PREFIX) :]] = secret

        if self.errors:
            # a mapping merged (<<) in several places reports its own problems once
            unique = {(e.line, e.option, e.message): e for e in self.errors}
            errors = sorted(unique.values(), key=lambda e: (e.line is None, e.line or 0))
            raise ConfigErrors(errors)
        plugins = top.values.get("plugins")
        tenant = top.values.get("tenant-id")
        return SiteConfig(
            path=self.doc.path,
            base_dir=self.doc.base_dir,
            tenant_id=1 if tenant is None else tenant,
            store_driver=store_driver,
            store_options=store_options,
            plugins=list(plugins) if plugins is not None else None,
            mailboxes=mailboxes,
            smtp=smtp,
            secrets=secrets,
            sections=global_values,
            top=top.values,
            warnings=sorted(self.warnings, key=lambda e: (e.line is None, e.line or 0)),
            file=self.file,
            lines=lines,
            schema=schema,
        )

    def store(
        self, entry: _Entry | None, lines: dict[tuple[str | None, str], int]
    ) -> tuple[str, OptionValues]:
        sub = self.mapping_entries(entry, "'store'") if entry else {}
        sub = sub or {}
        declared = self.schema.find("driver", lambda o: o.scope is Scope.STORE)
        driver = self.text(sub.get("driver"))
        if driver is None and "driver" in sub and not _is_null(sub["driver"].value):
            self.error("'driver' must be a driver name", sub["driver"].value, "store.driver")
        if driver is None:
            driver = str(declared.default) if declared and declared.default else _DEFAULT_STORE
        candidates = [
            o for o in self.schema.select(Scope.STORE, driver=driver) if o.name != "driver"
        ]
        rest = {k: v for k, v in sub.items() if k != "driver"}
        result = self.block(
            rest,
            candidates,
            prefix=STORE_SECTION + ".",
            place=f"'store' (driver {driver})",
            line=entry.line if entry else None,
            not_here=self.not_for_driver(Scope.STORE, driver, f"store driver {driver}"),
            also_valid=["driver"],
        )
        if "driver" in sub and sub["driver"].line is not None:
            lines[(STORE_SECTION, "driver")] = sub["driver"].line
        lines.update({(STORE_SECTION, k): v for k, v in result.lines.items()})
        return driver, result.values

    def mailboxes(self, entry: _Entry | None) -> list[MailboxConfig]:
        if entry is None or _is_null(entry.value):
            return []
        if not isinstance(entry.value, yaml.SequenceNode | yaml.MappingNode):
            self.error(
                "'pop-client' must be a list of mailboxes (- name: ..., type: ...)",
                entry.value,
                MAILBOX_SECTION,
            )
            return []
        result: list[MailboxConfig] = []
        first_line: dict[str, int | None] = {}
        for number, node in enumerate(_sequence_of(entry.value), start=1):
            if not isinstance(node, yaml.MappingNode):
                self.error(
                    "each 'pop-client' entry must be a mapping (name: ..., type: ...)",
                    node,
                    f"{MAILBOX_SECTION}[#{number}]",
                )
                continue
            peek = _quiet_items(node)
            name = self.text(peek.get("name"))
            label = f"{MAILBOX_SECTION}[{name if name else '#' + str(number)}]"
            place = f"mailbox {name!r}" if name else f"'pop-client' entry #{number}"
            entries = self.items(node, label + ".")
            kind = self.text(entries.get("type"))
            candidates = self.schema.select(Scope.MAILBOX, driver=kind)
            block = self.block(
                entries,
                candidates,
                prefix=label + ".",
                place=place,
                line=_line(node),
                not_here=self.not_for_driver(Scope.MAILBOX, kind, f"mailboxes of type {kind}"),
                structural=("name", "type", "auth"),
                passthrough=True,
            )
            if name is not None:
                if name in first_line:
                    self.error(
                        f"duplicate mailbox name {name!r} (first at line {first_line[name]})",
                        entries["name"].key_node,
                        label + ".name",
                    )
                else:
                    first_line[name] = entries["name"].line
            auth = block.values.get("auth")
            result.append(
                MailboxConfig(
                    name=str(block.values.get("name") or name or ""),
                    type=str(block.values.get("type") or kind or ""),
                    auth=str(auth) if auth else _DEFAULT_AUTH,
                    options=block.values,
                    passthrough=block.passthrough,
                    file=self.file,
                    line=_line(node),
                    lines=block.lines,
                    aliases=block.aliases,
                )
            )
        return result

    def smtp(self, entry: _Entry | None) -> SectionConfig | None:
        if entry is None:
            return None
        sub = self.mapping_entries(entry, "'smtp-client'")
        if sub is None:
            return None
        kind = self.text(sub.get("server-type"))
        block = self.block(
            sub,
            self.schema.select(Scope.SMTP_CLIENT, driver=kind),
            prefix=SMTP_SECTION + ".",
            place="'smtp-client'",
            line=entry.line,
            not_here=self.not_for_driver(
                Scope.SMTP_CLIENT, kind, f"smtp-client server-type {kind}"
            ),
            structural=("server-type",),
            passthrough=True,
        )
        server_type = block.values.get("server-type") or kind
        return SectionConfig(
            name=SMTP_SECTION,
            options=block.values,
            driver=str(server_type) if server_type else None,
            passthrough=block.passthrough,
            file=self.file,
            line=entry.line,
            lines=block.lines,
            aliases=block.aliases,
        )

    def secret(self, entry: _Entry) -> SectionConfig | None:
        if entry.key == SECRET_PREFIX:
            self.error("a secret section needs a name: secret-<name>", entry.key_node, entry.key)
            return None
        sub = self.mapping_entries(entry, f"{entry.key!r}")
        if sub is None:
            return None
        block = self.block(
            sub,
            self.schema.select(Scope.SECRET),
            prefix=entry.key + ".",
            place=repr(entry.key),
            line=entry.line,
            not_here=self.elsewhere_than(Scope.SECRET, None),
        )
        return SectionConfig(
            name=entry.key,
            options=block.values,
            file=self.file,
            line=entry.line,
            lines=block.lines,
            aliases=block.aliases,
        )


def _describe_place(option: Option) -> str:
    if option.scope is Scope.GLOBAL:
        return f"section {option.section!r}" if option.section else "the top level"
    kinds = f" ({', '.join(option.types)})" if option.types else ""
    if option.scope is Scope.MAILBOX:
        return f"'pop-client' entries{kinds}"
    if option.scope is Scope.SMTP_CLIENT:
        return f"'smtp-client'{kinds}"
    if option.scope is Scope.STORE:
        return f"'store'{kinds}"
    return "'secret-<name>' sections"


def _redact(message: str, raw: Any) -> str:
    """Remove a value a (plugin's) converter may have quoted; too short to replace
    safely means the whole message goes."""
    texts = [raw] if isinstance(raw, str) else [str(x) for x in _flatten(raw)]
    for text in texts:
        if text and text in message:
            if len(text) < 4:
                return "invalid value"
            message = message.replace(text, "***")
    return message


def _flatten(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _flatten(v)
    elif isinstance(value, list):
        for v in value:
            yield from _flatten(v)
    elif value is not None:
        yield value


def _show(raw: Any) -> str:
    if isinstance(raw, Secret):
        return "***"
    if isinstance(raw, str):
        return repr(raw) if len(raw) <= 80 else repr(raw[:77] + "...")
    return "a list" if isinstance(raw, list) else "a mapping"

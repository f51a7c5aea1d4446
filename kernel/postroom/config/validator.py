"""Validation: a composed document checked against the schema, converted into the model.

Every value is converted by its option's declared type and every problem is
collected with the file, the line and the option path, then raised together as
one :class:`~postroom.errors.ConfigErrors`, so an operator fixes a file in one
pass. The result is a :class:`~postroom.config.site.SiteConfig`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import yaml

from postroom.config.declaration import (
    MAILBOX_SECTION,
    SECRET_PREFIX,
    SMTP_SECTION,
    STORE_SECTION,
    Option,
    Scope,
)
from postroom.config.document import (
    DEFAULT_AUTH,
    DEFAULT_STORE,
    MAX_DEPTH,
    Document,
    Entry,
    implied_auth,
    is_null,
    mapping_items,
    node_line,
    quiet_items,
    sequence_of,
)
from postroom.config.interpolate import has_reference, interpolate
from postroom.config.options import OptionSchema
from postroom.config.site import MailboxConfig, OptionValues, SectionConfig, SiteConfig
from postroom.config.types import Secret, UnknownType
from postroom.errors import ConfigError, ConfigErrors

#: mailbox keys starting with this are pass-through client properties (spec section 7)
PASSTHROUGH_PREFIX = "mail."
#: top-level keys ignored, to hold YAML anchors (``x-imap: &imap {...}``), as in Compose
EXTENSION_PREFIX = "x-"
#: pass-through properties whose names contain these are hidden in reprs
#: (JavaMail has e.g. ``mail.imap.proxy.password``)
_SENSITIVE = ("password", "secret", "token")


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Failed:
    """Marker: the value was reported as an error (so don't also say 'missing')."""


_FAILED = _Failed()


@attrs.frozen
class InstalledDrivers:
    """The installed driver names of each group, to check the names a site gives.

    The kernel fills it from the entry-point groups (``postroom.sources``,
    ``postroom.senders``, ``postroom.stores``, ``postroom.auth``), so a name no
    distribution provides is reported like any other mistake in the file: with
    its line, the names that would do, and a "did you mean".
    """

    sources: frozenset[str] = frozenset()
    senders: frozenset[str] = frozenset()
    stores: frozenset[str] = frozenset()
    auth: frozenset[str] = frozenset()
    #: source and sender drivers that log in to nothing (``needs_auth = False``):
    #: their ``auth`` names no driver, so it is not checked
    without_auth: frozenset[str] = frozenset()


def validate(
    document: Document,
    schema: OptionSchema,
    *,
    environ: Mapping[str, str] | None = None,
    drivers: InstalledDrivers | None = None,
) -> SiteConfig:
    """Check a document against the schema; raises ConfigErrors listing every problem.

    ``drivers``: the installed drivers the names in the file must be among; None
    leaves the names unchecked (a schema built by hand, with drivers of its own).
    """
    env = os.environ if environ is None else environ
    return _Validator(document, schema, env, drivers).run()


@attrs.define
class _Block:
    values: OptionValues
    lines: dict[str, int]
    aliases: dict[str, str]
    passthrough: OptionValues


class _Validator:
    def __init__(
        self,
        document: Document,
        schema: OptionSchema,
        environ: Mapping[str, str],
        drivers: InstalledDrivers | None,
    ) -> None:
        self.doc = document
        self.file = document.file
        self.schema = schema
        self.environ = environ
        self.drivers = drivers
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
            ConfigError(message, file=self.file, line=line or node_line(node), option=option)
        )

    def items(self, node: yaml.MappingNode, prefix: str) -> dict[str, Entry]:
        return mapping_items(node, lambda msg, n, opt: self.error(msg, n, opt), prefix)

    def installed(
        self,
        group: str,
        name: str | None,
        installed: frozenset[str] | None,
        entry: Entry | None,
        option: str,
        line: int | None,
    ) -> bool:
        """Whether a driver name is installed (or unchecked); reports it when it is not.

        ``line`` is where to point when the name is a default, not written.
        """
        if installed is None or name is None or name in installed:
            return True
        names = ", ".join(sorted(installed)) or "none"
        self.error(
            f"no {group} driver {name!r} (installed: {names}){_suggest(name, installed)}",
            None,
            option,
            node_line(entry.value) if entry is not None else line,
        )
        return False

    # values

    def python(self, node: yaml.Node, prefix: str = "", depth: int = 0) -> tuple[Any, bool]:
        """The node as text / list / dict (``${...}`` resolved) and whether it used ``${``.

        Raises InterpolationError or ValueError (structure) with value-free messages.
        """
        if depth > MAX_DEPTH:
            raise ValueError("nested too deeply")
        if isinstance(node, yaml.ScalarNode):
            if is_null(node):
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

    def text(self, entry: Entry | None) -> str | None:
        """A structural name (``type``, ``name``...); None if absent or not one value."""
        if entry is None or not isinstance(entry.value, yaml.ScalarNode) or is_null(entry.value):
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
        entries: Mapping[str, Entry],
        candidates: list[Option],
        *,
        prefix: str,
        place: str,
        line: int | None,
        not_here: Callable[[str, str], str | None],
        structural: Iterable[str] = (),
        passthrough: bool = False,
        also_valid: Iterable[str] = (),
        report_unknown: bool = True,
    ) -> _Block:
        """Convert the entries of one place, report unknown keys, fill defaults.

        ``report_unknown=False`` where the place names a driver that is not
        installed: its options were never declared, and the name is the mistake.
        """
        index: dict[str, Option] = {}
        for option in candidates:
            for spelling in (option.name, *option.aliases):
                index.setdefault(spelling, option)
        structural = set(structural) - set(index)
        values: dict[str, Any] = {}
        lines: dict[str, int] = {}
        given: dict[str, Entry] = {}
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
                if not report_unknown:
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
        self, entry: Entry, qualified: str, candidates: list[Option], into: OptionValues
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

    def mapping_entries(self, entry: Entry, what: str) -> dict[str, Entry] | None:
        """The entries of a section's mapping; {} for an empty section, None if not a mapping."""
        if is_null(entry.value):
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
        entries: dict[str, Entry] = {}
        if isinstance(root, yaml.MappingNode):
            entries = self.items(root, "")
        elif root is not None and not is_null(root):
            self.error("the configuration must be a mapping (key: value) at the top", root)

        sections = schema.sections()
        top_entries: dict[str, Entry] = {}
        section_entries: dict[str, Entry] = {}
        secret_entries: dict[str, Entry] = {}
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
        self, entry: Entry | None, lines: dict[tuple[str | None, str], int]
    ) -> tuple[str, OptionValues]:
        sub = self.mapping_entries(entry, "'store'") if entry else {}
        sub = sub or {}
        declared = self.schema.find("driver", lambda o: o.scope is Scope.STORE)
        driver = self.text(sub.get("driver"))
        if driver is None and "driver" in sub and not is_null(sub["driver"].value):
            self.error("'driver' must be a driver name", sub["driver"].value, "store.driver")
        if driver is None:
            driver = str(declared.default) if declared and declared.default else DEFAULT_STORE
        known = self.installed(
            "store",
            driver,
            self.drivers.stores if self.drivers else None,
            sub.get("driver"),
            f"{STORE_SECTION}.driver",
            entry.line if entry else None,
        )
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
            report_unknown=known,
        )
        if "driver" in sub and sub["driver"].line is not None:
            lines[(STORE_SECTION, "driver")] = sub["driver"].line
        lines.update({(STORE_SECTION, k): v for k, v in result.lines.items()})
        return driver, result.values

    def mailboxes(self, entry: Entry | None) -> list[MailboxConfig]:
        if entry is None or is_null(entry.value):
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
        for number, node in enumerate(sequence_of(entry.value), start=1):
            if not isinstance(node, yaml.MappingNode):
                self.error(
                    "each 'pop-client' entry must be a mapping (name: ..., type: ...)",
                    node,
                    f"{MAILBOX_SECTION}[#{number}]",
                )
                continue
            peek = quiet_items(node)
            name = self.text(peek.get("name"))
            label = f"{MAILBOX_SECTION}[{name if name else '#' + str(number)}]"
            place = f"mailbox {name!r}" if name else f"'pop-client' entry #{number}"
            entries = self.items(node, label + ".")
            kind = self.text(entries.get("type"))
            known = self.installed(
                "source",
                kind,
                self.drivers.sources if self.drivers else None,
                entries.get("type"),
                label + ".type",
                node_line(node),
            )
            if kind is not None and kind not in (
                self.drivers.without_auth if self.drivers else frozenset()
            ):
                self.installed(
                    "auth",
                    self.auth_of(entries),
                    self.drivers.auth if self.drivers else None,
                    entries.get("auth"),
                    label + ".auth",
                    node_line(node),
                )
            candidates = self.schema.select(Scope.MAILBOX, driver=kind)
            block = self.block(
                entries,
                candidates,
                prefix=label + ".",
                place=place,
                line=node_line(node),
                not_here=self.not_for_driver(Scope.MAILBOX, kind, f"mailboxes of type {kind}"),
                structural=("name", "type", "auth"),
                passthrough=True,
                report_unknown=known,
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
            auth = self.auth_of(entries)
            result.append(
                MailboxConfig(
                    name=str(block.values.get("name") or name or ""),
                    type=str(block.values.get("type") or kind or ""),
                    auth=str(auth) if auth else DEFAULT_AUTH,
                    options=block.values,
                    passthrough=block.passthrough,
                    file=self.file,
                    line=node_line(node),
                    lines=block.lines,
                    aliases=block.aliases,
                )
            )
        return result

    def auth_of(self, entries: dict[str, Entry]) -> str:
        """The auth driver these keys select (:func:`implied_auth`)."""
        return implied_auth({key: self.text(entry) for key, entry in entries.items()})

    def smtp(self, entry: Entry | None) -> SectionConfig | None:
        if entry is None:
            return None
        sub = self.mapping_entries(entry, "'smtp-client'")
        if sub is None:
            return None
        kind = self.text(sub.get("server-type"))
        known = self.installed(
            "sender",
            kind,
            self.drivers.senders if self.drivers else None,
            sub.get("server-type"),
            f"{SMTP_SECTION}.server-type",
            entry.line,
        )
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
            report_unknown=known,
        )
        without_auth = self.drivers.without_auth if self.drivers else frozenset()
        if block.values.get("enable-authentication") is True and kind not in without_auth:
            self.installed(
                "auth",
                self.auth_of(sub),
                self.drivers.auth if self.drivers else None,
                sub.get("auth"),
                f"{SMTP_SECTION}.auth",
                entry.line,
            )
        if "auth" not in sub:
            # the commercial product's mail.smtp.auth.mechanisms may name the driver
            block.values["auth"] = self.auth_of(sub)
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

    def secret(self, entry: Entry) -> SectionConfig | None:
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

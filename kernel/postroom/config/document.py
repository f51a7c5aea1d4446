"""Reading a site configuration: YAML composed with positions, and the driver pre-scan.

The file is *composed*, not loaded: the node tree keeps every value's line and
its text, so the validator converts values by the declared type (YAML 1.1 would
turn ``10:00:00`` into 36000 and ``yes`` into True) and names the line of every
error.

The drivers named in the file (``store.driver``, each mailbox's ``type`` and
``auth``, ``smtp-client``'s ``server-type``) declare options too, so the kernel
reads the document, pre-scans those names (:meth:`Document.driver_names`), loads
the drivers, lets them add their declarations to the schema, and only then
validates (:mod:`postroom.config.validator`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from postroom.config.declaration import MAILBOX_SECTION, SMTP_SECTION, STORE_SECTION
from postroom.config.interpolate import InterpolationError, interpolate
from postroom.errors import ConfigError, ConfigErrors
from postroom.interfaces import SENDERS_GROUP, SOURCES_GROUP

_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
#: how deep ``<<`` merges and nested values may go (a hostile file cannot recurse)
MAX_DEPTH = 32
DEFAULT_STORE = "sqlite"
DEFAULT_AUTH = "basic"
#: the OAuth SASL mechanisms whose naming in ``mail.<protocol>.auth.mechanisms``
#: switches a mailbox without an ``auth`` key to an OAuth driver
_OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


def implied_auth(values: Mapping[str, str | None]) -> str:
    """The auth driver of a mailbox or ``smtp-client`` given its keys' text *values*.

    ``auth`` when given. Otherwise the commercial product's way: a
    ``mail.<protocol>.auth.mechanisms`` naming XOAUTH2 selects
    ``google-refresh`` when ``tenant-authority`` names Google, and
    ``azure-ropc`` when the Azure options (``directory-id`` or ``client-id``)
    are present; anything else is ``basic``.
    """
    explicit = values.get("auth")
    if explicit:
        return explicit
    oauth = any(
        key.startswith("mail.")
        and key.endswith(".auth.mechanisms")
        and any(m in (value or "").upper() for m in _OAUTH_MECHANISMS)
        for key, value in values.items()
    )
    if not oauth:
        return DEFAULT_AUTH
    if "google" in (values.get("tenant-authority") or "").lower():
        return "google-refresh"
    if values.get("directory-id") or values.get("client-id"):
        return "azure-ropc"
    return DEFAULT_AUTH


@attrs.define
class DriverNames:
    """The drivers a document names, so the kernel can load them before validating.

    Lists are in order of first appearance, without repeats.
    """

    store: str = DEFAULT_STORE
    sources: list[str] = attrs.field(factory=list)
    #: ``smtp-client``'s ``server-type``; empty when there is no smtp-client
    senders: list[str] = attrs.field(factory=list)
    #: ``(group, driver, auth)``: the auth driver each source or sender driver
    #: would use (a mailbox's ``auth``, default ``basic``; ``smtp-client``'s when
    #: ``enable-authentication`` or a mailbox's ``smtp-user``); the kernel loads
    #: it only for a driver that declares ``needs_auth``
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
        top = quiet_items(self.root)

        def text(node: yaml.Node | None) -> str | None:
            if not isinstance(node, yaml.ScalarNode) or is_null(node):
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
            names.store = text(quiet_items(store.value).get("driver", NO_ENTRY).value) or (
                DEFAULT_STORE
            )
        pop = top.get(MAILBOX_SECTION)
        own_accounts = False  # a mailbox logs in to the smtp-client's server itself
        for item in sequence_of(pop.value) if pop is not None else []:
            if not isinstance(item, yaml.MappingNode):
                continue
            entries = quiet_items(item)
            own_accounts = own_accounts or "smtp-user" in entries
            kind = text(entries.get("type", NO_ENTRY).value)
            add(names.sources, kind)
            if kind is not None:
                auth = implied_auth({k: text(e.value) for k, e in entries.items()})
                add(names.auth, (SOURCES_GROUP, kind, auth))
        smtp = top.get(SMTP_SECTION)
        if smtp is not None and isinstance(smtp.value, yaml.MappingNode):
            smtp_entries = quiet_items(smtp.value)
            sender = text(smtp_entries.get("server-type", NO_ENTRY).value)
            add(names.senders, sender)
            enabled = (
                text(smtp_entries.get("enable-authentication", NO_ENTRY).value) or ""
            ).lower()
            if sender is not None and (enabled in ("true", "yes", "on", "1") or own_accounts):
                auth = implied_auth({k: text(e.value) for k, e in smtp_entries.items()})
                add(names.auth, (SENDERS_GROUP, sender, auth))
        plugins = top.get("plugins")
        if plugins is not None:
            if isinstance(plugins.value, yaml.SequenceNode):
                names.plugins = [v for v in map(text, plugins.value.value) if v]
            elif is_null(plugins.value):
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


# --- node helpers, shared with the validator ------------------------------------


@attrs.frozen
class Entry:
    """One key of a mapping: its text, its node (for the line) and its value's node."""

    key: str
    key_node: yaml.Node | None
    value: yaml.Node | None

    @property
    def line(self) -> int | None:
        return node_line(self.key_node)


#: an absent key, so look-ups chain: ``items.get("type", NO_ENTRY).value``
NO_ENTRY = Entry("", None, None)


def node_line(node: yaml.Node | None) -> int | None:
    """The (1-based) line a node starts on; None without a node."""
    return node.start_mark.line + 1 if node is not None else None


def is_null(node: yaml.Node | None) -> bool:
    """No value (``key:`` or ``~``); a quoted ``'null'`` is text."""
    return node is None or (
        isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG and node.style is None
    )


def sequence_of(node: yaml.Node | None) -> list[yaml.Node]:
    """``pop-client`` accepts one mapping as a list of one."""
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [node]
    return []


def mapping_items(
    node: yaml.MappingNode,
    report: Callable[[str, yaml.Node | None, str | None], None],
    prefix: str = "",
    depth: int = 0,
) -> dict[str, Entry]:
    """A mapping's entries by key text, ``<<`` merges applied, duplicates reported.

    Explicit keys win over merged ones; among merged mappings the first wins
    (YAML merge-key semantics).
    """
    explicit: dict[str, Entry] = {}
    merged: dict[str, Entry] = {}
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
            if depth > MAX_DEPTH:
                report("merges ('<<') nested too deeply", key_node, None)
                continue
            for source in sources:
                for key, entry in mapping_items(source, report, prefix, depth + 1).items():
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
        explicit[key] = Entry(key, key_node, value_node)
    for key, entry in merged.items():
        explicit.setdefault(key, entry)
    return explicit


def quiet_items(node: yaml.MappingNode) -> dict[str, Entry]:
    """A mapping's entries, its problems left for the validator to report."""
    return mapping_items(node, lambda *_: None)

"""The schema's versions: the kernel's own, and one track per plugin that keeps tables.

A migration is a SQL script ``NNNN_description.sql`` in a package's
``sql/<dialect>/`` folder. The kernel's are recorded in ``schema_migrations``
(one version number); a plugin's (:class:`PluginMigrations`, given by its
``postroom_store_migrations`` hook) in ``plugin_migrations`` under the
plugin's owner name, so plugins number theirs from 1 without meeting the
kernel's or each other's. ``open()`` applies what is pending, the kernel's
first, each migration in its own transaction under the dialect's migration
lock: processes opening one database at once apply each exactly once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from importlib import resources

import attrs

from postroom.store.errors import StoreError
from postroom.store.sql.core import Now, SQLCore
from postroom.store.sql.dialect import SQLDialect
from postroom.store.sql.tx import Tx

#: the kernel schema version that made ``dedupe_tombstones`` and ``store_secrets``
TOMBSTONE_SCHEMA = 13

_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")
_OWNER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@attrs.frozen
class Migration:
    """One migration script: its version, its file name, its SQL."""

    version: int
    name: str
    sql: str


def _as_tuple(migrations: Iterable[Migration]) -> tuple[Migration, ...]:
    return tuple(migrations)


@attrs.frozen
class PluginMigrations:
    """A plugin's own tables, for one dialect: what ``postroom_store_migrations`` returns.

    *owner* names the plugin's version track (and should prefix its tables:
    ``autoreply_exchanges``); it must never change once released.
    """

    owner: str = attrs.field()
    migrations: tuple[Migration, ...] = attrs.field(converter=_as_tuple)

    @owner.validator
    def _check_owner(self, _attribute: object, value: str) -> None:
        if not _OWNER.match(value):
            raise ValueError(f"owner {value!r}: lower-case letters, digits and _")

    @classmethod
    def from_package(cls, owner: str, package: str, dialect: str) -> PluginMigrations | None:
        """The scripts in *package*'s ``sql/<dialect>/`` folder; None when it has none."""
        folder = resources.files(package).joinpath("sql", dialect)
        if not folder.is_dir():
            return None
        return cls(owner, read_migrations(package, dialect))


def read_migrations(package: str, dialect: str) -> list[Migration]:
    """``sql/<dialect>/NNNN_description.sql`` of *package*, in version order."""
    folder = resources.files(package).joinpath("sql", dialect)
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"two migrations numbered {version}: {entry.name}")
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    if not found:
        raise StoreError(f"no migrations for dialect {dialect!r} in {folder}")
    return [found[version] for version in sorted(found)]


class SchemaMigrations(SQLCore):
    """``open()``: connect, then bring the kernel's and the plugins' tables up to date."""

    def __init__(self, dialect: SQLDialect, now: Now | None = None) -> None:
        super().__init__(dialect, now)
        self._plugin_migrations: dict[str, PluginMigrations] = {}

    def add_plugin_migrations(self, migrations: PluginMigrations) -> None:
        """Keep a plugin's tables up to date from the next ``open()`` on."""
        if self._opened:
            raise StoreError("plugin migrations are added before open()")
        self._plugin_migrations[migrations.owner] = migrations

    @property
    def dialect_name(self) -> str:
        """Names the folder of the migrations plugins give (``sqlite``, ``postgresql``)."""
        return self.dialect.name

    def open(self) -> None:
        if self._opened:
            return
        try:
            self.dialect.connect()
        except Exception as exc:
            failure = self.dialect.database_error(exc)
            if failure is None:
                raise
            raise failure from exc
        self._opened = True
        try:
            self._migrate()
            # a store kept at an older schema (tests of upgrades) has no tombstones
            self._tombstones_ready = self.schema_version() >= TOMBSTONE_SCHEMA
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self.dialect.disconnect()

    def migrations(self) -> list[Migration]:
        """The kernel's migrations for this store's dialect, in order."""
        return read_migrations(self.dialect.migrations_package, self.dialect.name)

    def schema_version(self) -> int:
        """The kernel's applied migration version."""
        return int(
            self._read(lambda tx: tx.scalar("SELECT MAX(version) FROM schema_migrations")) or 0
        )

    def plugin_schema_version(self, owner: str) -> int:
        """The applied migration version of a plugin's tables (0: none)."""
        return int(
            self._read(
                lambda tx: tx.scalar(
                    "SELECT MAX(version) FROM plugin_migrations WHERE owner = ?", (owner,)
                )
            )
            or 0
        )

    def _migrate(self) -> None:
        def bootstrap(tx: Tx) -> None:
            self.dialect.lock_migrations(tx)
            self.dialect.prepare_migrations(tx)
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )

        self._write(bootstrap)
        self._apply("postroom", self.migrations(), self.schema_version(), self._record_core)
        for owner, plugin in sorted(self._plugin_migrations.items()):
            self._apply(
                f"plugin {owner}",
                list(plugin.migrations),
                self.plugin_schema_version(owner),
                functools.partial(self._record_plugin, owner=owner),
            )

    def _apply(
        self,
        whose: str,
        migrations: Sequence[Migration],
        applied: int,
        record: Callable[[Tx, Migration], bool],
    ) -> None:
        """Apply *migrations* above *applied*; *record(tx, migration)* returns
        False when another process applied it meanwhile."""
        if not migrations:
            return
        latest = migrations[-1].version
        if applied > latest:
            # A newer version migrated this database: its data may not fit our queries.
            raise StoreError(
                f"the database schema of {whose} is at version {applied}, newer than this "
                f"{whose} knows ({latest}): upgrade {whose}"
            )
        for migration in migrations:
            if migration.version <= applied:
                continue

            def apply(tx: Tx, migration: Migration = migration) -> None:
                self.dialect.lock_migrations(tx)
                if record(tx, migration):
                    self.dialect.run_script(tx, migration.sql)

            self._write(apply)

    def _record_core(self, tx: Tx, migration: Migration) -> bool:
        if tx.one("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)):
            return False
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            (migration.version, self.now().isoformat()),
        )
        return True

    def _record_plugin(self, tx: Tx, migration: Migration, *, owner: str) -> bool:
        if tx.one(
            "SELECT 1 FROM plugin_migrations WHERE owner = ? AND version = ?",
            (owner, migration.version),
        ):
            return False
        tx.execute(
            "INSERT INTO plugin_migrations (owner, version, name, applied_at) VALUES (?, ?, ?, ?)",
            (owner, migration.version, migration.name, self.now().isoformat()),
        )
        return True

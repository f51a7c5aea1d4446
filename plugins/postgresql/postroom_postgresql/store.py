"""The PostgreSQL interaction store, for sites that want their data in PostgreSQL.

One gateway process owns the store at a time (:mod:`postroom_postgresql.lock`).

All queries and the migration runner are the kernel's (``postroom.api.SQLStore``);
:mod:`postroom_postgresql.dialect` adds PostgreSQL's connections and spelling,
and ``sql/postgresql/`` beside this module holds its migration scripts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from postroom.api import Now, OptionSchema, Scope, SQLStore
from postroom_postgresql.dialect import PostgreSQLDialect
from postroom_postgresql.lock import SessionLock

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgreSQLStore(SQLStore):
    """Options: ``dsn`` (libpq connection string or URL, required) and
    ``schema`` (optional: the tables go there, created when missing; default:
    the connection's search path)."""

    dialect: PostgreSQLDialect

    @staticmethod
    def postroom_add_options(schema: OptionSchema) -> None:
        schema.add(
            "dsn",
            "secret",
            scope=Scope.STORE,
            types=("postgresql",),
            required=True,
            description="libpq connection string or URI, e.g. "
            "`postgresql://postroom@db.example.com/postroom` "
            "(use `${PGPASSWORD_ENV}` or `${file:...}` for a password).",
        )
        schema.add(
            "schema",
            scope=Scope.STORE,
            types=("postgresql",),
            description="Database schema for postroom's tables (created when missing); "
            "default: the connection's search path.",
        )

    def __init__(self, options: Mapping[str, Any] | None = None, now: Now | None = None) -> None:
        """Built as ``cls(options, now=...)``: the site's ``store:`` mapping
        without ``driver``, and the kernel's clock."""
        self.options: dict[str, Any] = dict(options or {})
        dsn: Any = self.options.get("dsn")
        if hasattr(dsn, "reveal"):  # a config Secret: it may hold a password
            dsn = dsn.reveal()
        if not dsn:
            raise ValueError("the postgresql store needs a 'dsn' option")
        schema = self.options.get("schema") or None
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema {schema!r}: use letters, digits and _ (at most 63)")
        super().__init__(PostgreSQLDialect(str(dsn), schema), now)

    @property
    def dsn(self) -> str:
        return self.dialect.dsn

    @property
    def schema(self) -> str | None:
        return self.dialect.schema

    def acquire_gateway_lock(self) -> SessionLock:
        """The gateway lock: a session advisory lock (:mod:`postroom_postgresql.lock`)."""
        return SessionLock.acquire(
            self.dialect.dsn, self.dialect.connect_args, self.dialect.schema, self.describe()
        )

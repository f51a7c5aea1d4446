"""The SQL interaction store: the records of every concern over one dialect."""

from __future__ import annotations

from zope.interface import implementer

from postroom.interfaces import ISQLAccess, IStore
from postroom.store.sql.core import Now
from postroom.store.sql.dialect import SQLDialect
from postroom.store.sql.handoff import HandoffRecords
from postroom.store.sql.migrations import SchemaMigrations
from postroom.store.sql.outbox import OutboxRecords
from postroom.store.sql.quarantine import QuarantineRecords
from postroom.store.sql.suppression import SuppressionRecords


@implementer(IStore, ISQLAccess)
class SQLStore(
    SchemaMigrations, OutboxRecords, HandoffRecords, QuarantineRecords, SuppressionRecords
):
    """:class:`~postroom.interfaces.IStore` on a SQL database, plus
    :class:`~postroom.interfaces.ISQLAccess` for plugins' own tables.

    A driver subclasses it to build its :class:`SQLDialect` from the site's
    options. Blocking: the kernel calls it from its thread pool only, and each
    dialect makes that safe (SQLite: one connection behind a lock; PostgreSQL:
    one connection per thread). Every timestamp it writes comes from *now*,
    the kernel's clock.
    """

    def __init__(self, dialect: SQLDialect, now: Now | None = None) -> None:
        super().__init__(dialect, now)

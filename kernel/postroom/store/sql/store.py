"""The SQL interaction store: the records of every concern over one dialect."""

from __future__ import annotations

from zope.interface import implementer

from postroom.interfaces import ISQLAccess, IStore
from postroom.store.sql.erasure import ErasureRecords
from postroom.store.sql.grants import GrantRecords
from postroom.store.sql.handoff import HandoffRecords
from postroom.store.sql.listing import InteractionListing
from postroom.store.sql.mailboxstates import MailboxStateRecords
from postroom.store.sql.migrations import SchemaMigrations
from postroom.store.sql.outboxops import OutboxOperations
from postroom.store.sql.quarantine import QuarantineRecords
from postroom.store.sql.suppression import SuppressionRecords


@implementer(IStore, ISQLAccess)
class SQLStore(
    SchemaMigrations,
    ErasureRecords,
    OutboxOperations,
    HandoffRecords,
    InteractionListing,
    QuarantineRecords,
    SuppressionRecords,
    GrantRecords,
    MailboxStateRecords,
):
    """:class:`~postroom.interfaces.IStore` on a SQL database, plus
    :class:`~postroom.interfaces.ISQLAccess` for plugins' own tables.

    Built as ``SQLStore(dialect, now)``: a driver subclasses it and builds its
    :class:`~postroom.store.sql.dialect.SQLDialect` from the site's options.
    Every timestamp it writes comes from *now*, the kernel's clock. Blocking:
    the kernel calls it from its thread pool only, and each dialect makes that
    safe (SQLite: one connection behind a lock; PostgreSQL: one connection per
    thread).
    """

"""The SQL interaction store, one module per concern.

:mod:`.dialect` is the seam a database driver fills in (how it connects, spells
placeholders, locks rows and keeps datetimes); :mod:`.tx` the transaction
every query runs in; :mod:`.core` the transactions, clock and lifecycle;
:mod:`.migrations` the schema's versions (the kernel's and each plugin's own);
:mod:`.raw`, :mod:`.interactions`, :mod:`.handoff`, :mod:`.outbox`,
:mod:`.quarantine` and :mod:`.suppression` the records; :mod:`.store`
assembles them into :class:`~postroom.store.sql.store.SQLStore`. The
kernel's migration scripts for SQLite are in ``sqlite/`` beside them; a driver
package keeps its own in ``sql/<dialect name>/``.
"""

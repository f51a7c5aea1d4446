"""What every part of the SQL store stands on: its dialect, its clock, its transactions.

One transaction per unit of work: a write transaction that lost a race (a
unique key another process inserted first, a serialisation failure) is run
again whole, up to :data:`MAX_ATTEMPTS` times, so work functions must have no
effect outside the transaction. The database driver's own exceptions leave as
:class:`~postroom.store.errors.DatabaseError` naming the database, so callers
need not know which database a site uses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from postroom.store.errors import StoreError
from postroom.store.sql.dialect import SQLDialect, to_utc
from postroom.store.sql.tx import Tx

T = TypeVar("T")

#: How often a transaction that lost a race (unique key, serialisation) is run again.
MAX_ATTEMPTS = 10

#: The clock a store reads: an aware datetime for "now".
Now = Callable[[], datetime]


def wall_clock() -> datetime:
    """The system clock, for a store built without the kernel's clock."""
    return datetime.now(UTC)


class Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class SQLCore:
    """The dialect, the injected clock and the transaction runners the records share."""

    def __init__(self, dialect: SQLDialect, now: Now | None = None) -> None:
        self.dialect = dialect
        self._now: Now = now if now is not None else wall_clock
        self._opened = False

    @property
    def concurrent_writers(self) -> bool:
        return self.dialect.concurrent_writers

    def describe(self) -> str:
        """The database, for messages (never a password)."""
        return self.dialect.describe()

    def now(self) -> datetime:
        """The kernel's clock (the wall clock without one): every stored timestamp."""
        return to_utc(self._now())

    def _dt_param(self, value: datetime | float) -> Any:
        return self.dialect.datetime_param(to_utc(value))

    def _dt_value(self, value: Any) -> datetime:
        return self.dialect.datetime_value(value)

    def _write(self, work: Callable[[Tx], T]) -> T:
        """Run *work* in a write transaction, again when it lost a race."""
        self._require_open()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.dialect.transaction(write=True) as tx:
                    return work(tx)
            except Exception as exc:
                if attempt < MAX_ATTEMPTS and self.dialect.is_conflict(exc):
                    continue
                failure = self.dialect.database_error(exc)
                if failure is None:
                    raise
                raise failure from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, work: Callable[[Tx], T]) -> T:
        self._require_open()
        try:
            with self.dialect.transaction(write=False) as tx:
                return work(tx)
        except Exception as exc:
            failure = self.dialect.database_error(exc)
            if failure is None:
                raise
            raise failure from exc

    def run_in_transaction(self, work: Callable[[Tx], T], write: bool = True) -> T:
        """Run ``work(tx)`` in one transaction and return its result (a plugin's
        queries on its own tables: :class:`~postroom.interfaces.ISQLAccess`).
        A write transaction that lost a race is run again whole."""
        return self._write(work) if write else self._read(work)

    def _require_open(self) -> None:
        if not self._opened:
            raise StoreError(f"{type(self).__name__} is not open: call open() first")

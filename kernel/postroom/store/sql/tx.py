"""One transaction's cursor, spoken to the same way on every database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from postroom.store.sql.dialect import SQLDialect

Row = tuple[Any, ...]


class Tx:
    """A transaction's cursor: ``?`` placeholders and aware datetimes on every database.

    The dialect turns each statement's placeholders into its driver's and each
    :class:`~datetime.datetime` parameter into what its timestamp columns hold,
    so kernel and plugin queries are written once.
    """

    __slots__ = ("_cursor", "dialect")

    def __init__(self, cursor: Any, dialect: SQLDialect) -> None:
        self._cursor = cursor
        self.dialect = dialect

    def _run(self, sql: str, params: Sequence[Any]) -> None:
        to_param = self.dialect.datetime_param
        values = tuple(to_param(p) if isinstance(p, datetime) else p for p in params)
        self._cursor.execute(self.dialect.placeholders(sql), values)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        self._run(sql, params)
        return int(self._cursor.rowcount)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        self._run(sql, params)
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""
        self._run(sql, params)
        return [tuple(row) for row in self._cursor.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None."""
        row = self.one(sql, params)
        return None if row is None else row[0]

    def as_datetime(self, value: Any) -> datetime:
        """A timestamp column's value as an aware UTC datetime."""
        return self.dialect.datetime_value(value)

    def script(self, sql: str) -> None:
        """Several statements in one go, without parameters, where the driver allows it."""
        self._cursor.execute(sql)

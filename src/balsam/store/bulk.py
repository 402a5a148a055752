"""Many-row writes handed to the database driver in one ``executemany``.

SQLAlchemy turns every row of an ``executemany`` into bound parameters through its compiled
statement, about fifteen microseconds a row in Python. A launcher writes four history rows
and two job-row updates per job, so on its hot path that machinery cost more than SQLite's
own work. Here the statement text is rendered once per dialect and table, the column types'
own bind processors convert the values (the stored form is exactly SQLAlchemy's), and the
rows go to the driver as tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Dialect, Table
from sqlalchemy.orm import Session

#: Placeholders by DBAPI paramstyle (the drivers Balsam supports: sqlite3 and psycopg).
PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}

Row = Sequence[Any]
Processor = Callable[[Any], Any] | None


def insert_rows(
    session: Session, table: Table, columns: tuple[str, ...], rows: Sequence[Row]
) -> None:
    """Insert ``rows`` (values in ``columns`` order) into ``table``."""
    if not rows:
        return
    conn = session.connection()
    sql = _insert_sql(conn.dialect, table, columns)
    conn.exec_driver_sql(sql, _processed(conn.dialect, table, columns, rows))


def update_rows(
    session: Session, table: Table, key: str, columns: tuple[str, ...], rows: Sequence[Row]
) -> None:
    """Set ``columns`` on the row whose ``key`` is each row's last value."""
    if not rows:
        return
    conn = session.connection()
    sql = _update_sql(conn.dialect, table, key, columns)
    conn.exec_driver_sql(sql, _processed(conn.dialect, table, (*columns, key), rows))


def _processed(
    dialect: Dialect, table: Table, columns: tuple[str, ...], rows: Sequence[Row]
) -> list[tuple[Any, ...]]:
    processors = _processors(dialect, table, columns)
    if not any(processors):
        return [tuple(row) for row in rows]
    return [
        tuple(value if p is None else p(value) for p, value in zip(processors, row, strict=True))
        for row in rows
    ]


@lru_cache(maxsize=256)
def _processors(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> tuple[Processor, ...]:
    # The dialect's own variant of each type: e.g. psycopg's JSON wraps values for its adapter.
    return tuple(
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    )


def _placeholder(dialect: Dialect) -> str:
    try:
        return PLACEHOLDERS[dialect.paramstyle]
    except KeyError:
        raise NotImplementedError(f"paramstyle {dialect.paramstyle!r}") from None


@lru_cache(maxsize=256)
def _insert_sql(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> str:
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    marks = ", ".join([_placeholder(dialect)] * len(columns))
    return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"


@lru_cache(maxsize=256)
def _update_sql(dialect: Dialect, table: Table, key: str, columns: tuple[str, ...]) -> str:
    quote, mark = dialect.identifier_preparer.quote, _placeholder(dialect)
    sets = ", ".join(f"{quote(name)} = {mark}" for name in columns)
    return f"UPDATE {quote(table.name)} SET {sets} WHERE {quote(key)} = {mark}"

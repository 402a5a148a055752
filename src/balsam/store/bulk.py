"""Many-row writes handed to the database driver in one ``executemany``.

SQLAlchemy turns every row of an ``executemany`` into bound parameters through its compiled
statement, about fifteen microseconds a row in Python. A launcher writes four history rows
and two job-row updates per job, so on its hot path that machinery cost more than SQLite's
own work. Here the statement text is rendered once per dialect and table, the column types'
own bind processors convert the values (the stored form is exactly SQLAlchemy's), and the
rows go to the driver as tuples.

On PostgreSQL, inserts of many rows go through ``COPY ... FROM STDIN`` (psycopg's copy, with
the same converted values): one statement for the lot rather than one per row, five times
faster than an ``executemany`` for a bulk create of jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Dialect, Table
from sqlalchemy.exc import DBAPIError
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
    values = _processed(conn.dialect, table, columns, rows)
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM_ROWS:
        _copy(conn, table, columns, values)
        return
    conn.exec_driver_sql(_insert_sql(conn.dialect, table, columns), values)


#: From this many rows an insert on PostgreSQL is a COPY (fewer: a COPY's set-up costs more).
COPY_FROM_ROWS = 50


def _copy(conn: Any, table: Table, columns: tuple[str, ...], rows: Sequence[Row]) -> None:
    """``COPY table (columns) FROM STDIN`` with psycopg, in the open transaction."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    statement = f"COPY {quote(table.name)} ({names}) FROM STDIN"
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except conn.dialect.dbapi.Error as exc:
        # As SQLAlchemy would have raised it: the callers' error translation applies.
        raise DBAPIError.instance(statement, None, exc, conn.dialect.dbapi.Error) from exc
    finally:
        cursor.close()


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
) -> list[Sequence[Any]]:
    converting = [(i, p) for i, p in enumerate(_processors(dialect, table, columns)) if p]
    if not converting:
        return [tuple(row) for row in rows]
    out: list[Sequence[Any]] = []
    for row in rows:
        values = list(row)
        for i, convert in converting:
            values[i] = convert(values[i])
        out.append(tuple(values))
    return out


@lru_cache(maxsize=256)
def _processors(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> tuple[Processor, ...]:
    # The dialect's own variant of each type: e.g. psycopg's JSON wraps values for its adapter.
    found: list[Processor] = []
    for name in columns:
        declared = table.c[name].type
        convert: Processor = declared.dialect_impl(dialect).bind_processor(dialect)
        if convert is not None and isinstance(declared, JSON):
            convert = _empty_once(convert)
        elif convert is not None:
            convert = _same_as_last(convert)
        found.append(convert)
    return tuple(found)


def _same_as_last(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert``, skipped when given the very object it converted last: a batch of rows
    shares its timestamps and flags (a creation stamps every job with one time)."""
    last: list[Any] = [object(), None]

    def converted(value: Any) -> Any:
        if value is not last[0]:
            last[0], last[1] = value, convert(value)
        return last[1]

    return converted


def _empty_once(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert`` for JSON values, with the empty dict (most jobs' data, tags and
    environment) converted once: every row can share the one converted value."""
    empty = convert({})

    def converted(value: Any) -> Any:
        return empty if type(value) is dict and not value else convert(value)

    return converted


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

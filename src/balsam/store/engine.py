"""Engines for the workflow database: SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Write transactions take the
write lock up front (``BEGIN IMMEDIATE``) so a read-then-write never fails half way with
"database is locked"; readers use plain deferred transactions and never block writers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from balsam.errors import DatabaseError, DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_MS = 60_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with Balsam's per-dialect settings."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred-only).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        # LIKE is case-insensitive by default in SQLite; contains/startswith must match
        # PostgreSQL (ilike compiles to lower() LIKE lower() and is unaffected).
        cur.execute("PRAGMA case_sensitive_like=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("balsam_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def is_sqlite(engine: Engine) -> bool:
    """True for the embedded SQLite backend."""
    return engine.dialect.name == "sqlite"


@contextmanager
def unit_of_work(engine: Engine, write: bool = True) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error.

    Driver errors become :class:`DatabaseError`; Balsam's own errors pass through unchanged.
    """
    bound = engine.execution_options(balsam_write=True) if write else engine
    with database_errors(), Session(bound, expire_on_commit=False) as session, session.begin():
        yield session


#: SQLite's operational errors that go away by themselves (another writer held the lock);
#: its others ("no such table", "disk is full", ...) are permanent.
SQLITE_TRANSIENT = ("database is locked", "database table is locked")


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn driver errors raised in the block into Balsam's, in one line.

    :class:`DatabaseUnavailable` (transient: retrying may help) for a lost or refused
    connection, a server shutting down or restarting, a lock or statement timeout, a
    serialization failure or deadlock; :class:`DatabaseError` (permanent) for the rest.
    """
    try:
        yield
    except SQLAlchemyError as exc:
        if is_transient_error(exc):
            raise DatabaseUnavailable(f"workflow database unavailable: {_first_line(exc)}") from exc
        raise DatabaseError(f"workflow database error: {_first_line(exc)}") from exc


def is_transient_error(exc: SQLAlchemyError) -> bool:
    """Whether a driver error may go away if the same transaction is tried again."""
    if isinstance(exc, PoolTimeout | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    if type(orig).__module__.startswith("sqlite3"):
        return any(text in str(orig) for text in SQLITE_TRANSIENT)
    # psycopg's OperationalError: connection problems, admin shutdown, lock and statement
    # timeouts, serialization failures and deadlocks (TransactionRollback).
    return True


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__

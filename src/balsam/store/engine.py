"""Engines for the workflow database: SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Write transactions take the
write lock up front (``BEGIN IMMEDIATE``) so a read-then-write never fails half way with
"database is locked"; readers use plain deferred transactions and never block writers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from balsam.errors import DatabaseError, DatabaseUnavailable, ValidationError
from balsam.store.pgsecrets import check_private

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
    passfile = make_url(url).query.get("passfile")
    if isinstance(passfile, str):
        # An owned cluster's password (or a user's copy of theirs): libpq would skip a file
        # others can read, with a warning, and then fail with "no password supplied".
        check_private(Path(passfile))
    return create_engine(url, pool_pre_ping=True, **kwargs)


class _SQLiteCompilerWithIndexHints(SQLiteCompiler):
    """SQLite's compiler, rendering ``Select.with_hint(table, "INDEXED BY ix", "sqlite")``
    after the table's name. SQLAlchemy's SQLite dialect drops FROM hints; without statistics
    SQLite's planner then takes ``ix_jobs_session_id`` for a claim's ``session_id IS NULL``
    and sorts every claimable job, so a claim slowed with the size of the table."""

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        return text


def _configure_sqlite(engine: Engine) -> None:
    engine.dialect.statement_compiler = _SQLiteCompilerWithIndexHints

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


#: SQLite's operational errors that go away by themselves (another writer held the lock, the
#: disk was full for a while: a failed write rolls back whole); others ("no such table", ...)
#: are permanent.
SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database or disk is full")


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn driver errors raised in the block into Balsam's, in one line.

    :class:`DatabaseUnavailable` (transient: retrying may help) for a lost or refused
    connection, a server shutting down or restarting, a lock or statement timeout, a
    serialization failure or deadlock; :class:`ValidationError` for a value the database's
    columns cannot hold (a number out of range, text that is not a number where one is
    compared): the caller's mistake, not the database's; :class:`DatabaseError` (permanent)
    for the rest.
    """
    try:
        yield
    except OverflowError as exc:
        # sqlite3 refuses to bind an integer beyond 64 bits, before anything reaches SQLite.
        raise ValidationError(f"a number is out of range for the workflow database: {exc}") from exc
    except DataError as exc:
        # PostgreSQL's SQLSTATE class 22 (data exception): the statement's values do not fit.
        raise ValidationError(
            f"a value does not fit the workflow database: {_first_line(exc)}"
        ) from exc
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
    # timeouts, serialization failures and deadlocks (TransactionRollback) -- but not a
    # refused login, which no retry mends.
    return not _is_refused_login(orig)


#: What libpq says when the server refuses a login (no retry helps: the password is wrong or
#: missing, pg_hba.conf has no line for this connection, the role or database does not exist).
#: A connection error carries no SQLSTATE, so its text is all there is to go by.
REFUSED_LOGIN = re.compile(
    r"password authentication failed|no password supplied|no pg_hba\.conf entry"
    r'|FATAL:\s+(?:role|database) ".*" does not exist'
)


def _is_refused_login(orig: BaseException | None) -> bool:
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in ("28", "3D"):  # authorization, database
        return True
    return REFUSED_LOGIN.search(str(orig)) is not None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__

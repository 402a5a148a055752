"""Driver errors become Balsam's: transient ones (retrying may help) told from permanent ones."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from balsam.backends.local import LocalBackend
from balsam.errors import DatabaseError, DatabaseUnavailable, NotFound, ValidationError
from balsam.schemas.queries import JobQuery, clause_from_kwargs
from balsam.store.engine import database_errors
from pgserver import PgServer


def test_a_sqlite_lock_held_too_long_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    try:
        with (
            pytest.raises(DatabaseUnavailable, match="locked"),
            database_errors(),
            engine.begin() as conn,
        ):
            conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()


def test_a_missing_table_is_permanent(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'y.db'}")
    try:
        with pytest.raises(DatabaseError) as caught, database_errors(), engine.connect() as conn:
            conn.execute(text("SELECT * FROM nothing_here"))
        assert not caught.value.transient
        assert not isinstance(caught.value, DatabaseUnavailable)
    finally:
        engine.dispose()


def test_a_postgresql_server_that_is_not_there_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now: the connection is refused.
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x")
    try:
        with pytest.raises(DatabaseUnavailable), database_errors(), engine.connect():
            pass
    finally:
        engine.dispose()


def test_a_refused_postgresql_login_is_permanent(pg_server: PgServer) -> None:
    """A login the server refuses (here: a role that does not exist) is not retried: no
    repeat of the same connection can succeed."""
    url = f"postgresql+psycopg://no_such_role@{pg_server.host}:{pg_server.port}/postgres"
    engine = create_engine(url)
    try:
        with pytest.raises(DatabaseError) as caught, database_errors(), engine.connect():
            pass
        assert not caught.value.transient, caught.value
        assert "no_such_role" in str(caught.value)
    finally:
        engine.dispose()


def test_a_number_the_database_cannot_hold_is_the_callers_error(backend: LocalBackend) -> None:
    # Beyond 64 bits sqlite3 refuses to bind it; beyond 32 bits PostgreSQL's integer columns
    # refuse it (SQLSTATE 22003). Both are bad input (422 through the server), not a failed
    # database (500).
    huge = JobQuery(clauses=[clause_from_kwargs({"num_nodes__gt": 2**70})])
    with pytest.raises(ValidationError, match=r"out of range|does not fit"):
        backend.query_jobs(huge)
    with pytest.raises((ValidationError, NotFound)):
        backend.get_batch_job(2**40)  # SQLite holds the id (and finds no row); PostgreSQL not

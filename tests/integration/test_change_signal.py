"""The change signal's waiting: SQLite's backoff, and PostgreSQL's channel surviving a dropped
connection (a real server, a real kill of the listening session)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from balsam.backends.local import LocalBackend
from balsam.domain.states import JobState
from balsam.schemas import AppCreate, JobCreate
from balsam.services.changes import POLL_FIRST, POLL_LONGEST, ChangeSignal
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from pgserver import PgServer, new_pg_database
from waiting import wait_until

LISTENERS = (
    "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN balsam_jobs%' AND datname = :db"
)


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[tuple[LocalBackend, Engine]]:
    url = new_pg_database(pg_server)
    backend = LocalBackend(make_engine(url))
    admin = create_engine(pg_server.url("postgres"), isolation_level="AUTOCOMMIT")
    yield backend, admin
    backend.close()
    admin.dispose()


def _listeners(admin: Engine, database: str) -> list[int]:
    with admin.connect() as conn:
        return list(conn.execute(text(LISTENERS), {"db": database}).scalars())


def _wait_in_thread(backend: LocalBackend, marker: int) -> tuple[threading.Thread, list[int]]:
    got: list[int] = []
    thread = threading.Thread(target=lambda: got.append(backend.wait_for_change(marker, 120)))
    thread.start()
    return thread, got


def test_a_killed_listener_is_replaced_and_no_change_is_missed(
    pg: tuple[LocalBackend, Engine],
) -> None:
    backend, admin = pg
    db = str(backend.engine.url.database)
    backend.create_app(AppCreate(name="A", executable="true"))
    a, b = backend.create_jobs([JobCreate(name=n, workflow="w", application="A") for n in "ab"])
    marker = backend.change_marker()
    thread, got = _wait_in_thread(backend, marker)
    (pid,) = wait_until(lambda: _listeners(admin, db), what="the backend to LISTEN")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    wait_until(lambda: not _listeners(admin, db), what="the listener to be gone")
    backend.set_state(a.job_id, JobState.USER_KILLED, "while the channel was down")
    thread.join(timeout=60)
    assert got and got[0] > marker, "the wait still saw the change (by polling)"
    # The next wait listens on a new connection, and wakes on the next change.
    marker = got[0]
    thread, got = _wait_in_thread(backend, marker)
    (new_pid,) = wait_until(lambda: _listeners(admin, db), what="a new LISTEN connection")
    assert new_pid != pid
    backend.set_state(b.job_id, JobState.USER_KILLED, "on the new channel")
    thread.join(timeout=60)
    assert got and got[0] == backend.change_marker() > marker
    backend.close()
    assert wait_until(lambda: not _listeners(admin, db), what="close() to end the listener") is True


def test_sqlite_polls_with_a_pause_that_grows_to_a_bound(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'balsam.db'}")
    upgrade(engine)
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    signal = ChangeSignal(engine, clock=lambda: now[0], sleep=sleep)
    assert signal.wait_for_change(0, timeout=5.0) == 0
    assert pauses[0] == POLL_FIRST
    # Growing, but for the last, cut short by the deadline.
    assert all(b >= a for a, b in itertools.pairwise(pauses[:-1]))
    assert max(pauses) == POLL_LONGEST
    assert sum(pauses) == pytest.approx(5.0)  # the last pause ends at the deadline, not after
    engine.dispose()

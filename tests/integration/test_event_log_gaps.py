"""PostgreSQL commits event ids out of order: a page of ``events_since`` stops at an id still
in flight, goes on once its transaction commits or rolls back, and never waits for good.

A second connection holds a transaction that inserted an event (so it owns a lower id) while
the backend commits a later one: exactly what concurrent launchers do, made deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, insert

from balsam.backends.local import LocalBackend
from balsam.domain.states import JobState
from balsam.schemas import AppCreate, JobCreate
from balsam.services.eventlog import PATIENCE_SECONDS, SETTLE_SECONDS, EventLog
from balsam.store.engine import make_engine
from balsam.store.tables import EVENTS, utcnow
from pgserver import PgServer, new_pg_database
from waiting import wait_until


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[LocalBackend]:
    backend = LocalBackend(make_engine(new_pg_database(pg_server)))
    yield backend
    backend.close()


def _two_jobs(backend: LocalBackend) -> tuple[str, str]:
    backend.create_app(AppCreate(name="A", executable="true"))
    a, b = backend.create_jobs([JobCreate(name=n, workflow="w", application="A") for n in "ab"])
    return a.job_id, b.job_id


def _in_flight_note(conn: Connection, job_id: str) -> None:
    """An event inserted in ``conn``'s open transaction: its id is taken, not yet visible."""
    conn.execute(
        insert(EVENTS).values(
            job_id=job_id, timestamp=utcnow(), from_state="X", to_state="X", message="in flight"
        )
    )


def _settled_page(log: EventLog, after: int) -> list[str]:
    """The messages of the page after ``after`` once nothing holds it back any more."""

    def settled() -> list[str] | None:
        page = log.since(after, 100, None)
        return None if page.more else [e.message for e in page.events]

    return wait_until(settled, what="the page to settle")


@pytest.mark.parametrize("ending", ["commit", "rollback"])
def test_a_page_waits_for_a_lower_id_in_flight(pg: LocalBackend, ending: str) -> None:
    a, b = _two_jobs(pg)
    start = pg.change_marker()
    now = [0.0]  # a clock that never reaches the patience
    log = EventLog(pg.engine, clock=lambda: now[0])
    with pg.engine.connect() as other:
        other.begin()
        _in_flight_note(other, a)
        pg.note_jobs([b], "committed later")  # a higher id, visible first
        for _ in range(3):  # however often and long it is asked, the page stops before
            page = log.since(start, 100, None)
            assert (page.events, page.cursor, page.more) == ([], start, True)
            now[0] += SETTLE_SECONDS
        if ending == "commit":
            other.commit()
        else:
            other.rollback()
    expected = ["in flight", "committed later"] if ending == "commit" else ["committed later"]
    assert _settled_page(log, start) == expected


def test_a_gap_whose_transaction_is_gone_is_passed_after_settling(pg: LocalBackend) -> None:
    a, b = _two_jobs(pg)
    start = pg.change_marker()
    with pg.engine.connect() as other:
        other.begin()
        _in_flight_note(other, a)
        other.rollback()  # a gap for good
    pg.note_jobs([b], "after the gap")
    now = [0.0]
    log = EventLog(pg.engine, clock=lambda: now[0])
    assert log.since(start, 100, None).more  # first sighting: held
    now[0] += SETTLE_SECONDS
    # Final once the transactions in flight then (other tests' too: one cluster) have ended.
    assert _settled_page(log, start) == ["after the gap"]


def test_a_transaction_left_open_holds_a_page_only_so_long(pg: LocalBackend) -> None:
    a, b = _two_jobs(pg)
    start = pg.change_marker()
    now = [0.0]
    log = EventLog(pg.engine, clock=lambda: now[0])
    with pg.engine.connect() as other:
        other.begin()
        _in_flight_note(other, a)
        pg.note_jobs([b], "later")
        assert log.since(start, 100, None).more
        now[0] += SETTLE_SECONDS
        assert log.since(start, 100, None).more  # in flight: the owners are noted
        now[0] += PATIENCE_SECONDS / 2
        assert log.since(start, 100, None).more
        now[0] += PATIENCE_SECONDS
        page = log.since(start, 100, None)
        assert [e.message for e in page.events] == ["later"] and not page.more
        other.rollback()


def test_sqlite_pages_never_wait(tmp_path: object) -> None:
    """One writer at a time: no id is ever in flight below a visible one."""
    from pathlib import Path

    from balsam.store.migrate import upgrade

    url = f"sqlite:///{Path(str(tmp_path)) / 'b.db'}"
    engine = make_engine(url)
    upgrade(engine)
    backend = LocalBackend(engine)
    a, _ = _two_jobs(backend)
    backend.set_state(a, JobState.USER_KILLED)
    page = backend.events_since(0, 100)
    assert not page.more and page.cursor == backend.change_marker()
    backend.close()

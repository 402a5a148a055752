"""Rows written straight to the driver read back as SQLAlchemy would have stored them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from balsam.backends.local import LocalBackend
from balsam.schemas import AppCreate, JobCreate
from balsam.store.bulk import insert_rows, update_rows
from balsam.store.engine import unit_of_work
from balsam.store.tables import EVENTS, JOBS, EventRow, JobRow


def test_inserted_and_updated_rows_read_back_through_the_orm(backend: LocalBackend) -> None:
    backend.create_app(AppCreate(name="A", executable="true"))
    job = backend.create_jobs([JobCreate(name="j", application="A")])[0]
    # A non-UTC offset: stored as UTC, read back aware, like every timestamp Balsam writes.
    when = datetime(2026, 12, 1, 22, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    with unit_of_work(backend.engine) as session:
        columns = ("job_id", "timestamp", "from_state", "to_state", "message")
        insert_rows(session, EVENTS, columns, [(job.job_id, when, "A", "B", "it's 100% 'quoted'")])
        update_rows(
            session, JOBS, "job_id", ("state", "state_timestamp"), [("B", when, job.job_id)]
        )
    with unit_of_work(backend.engine, write=False) as session:
        event = session.scalars(select(EventRow).where(EventRow.to_state == "B")).one()
        row = session.get(JobRow, job.job_id)
        assert row is not None
        assert (event.job_id, event.from_state, event.message) == (
            job.job_id,
            "A",
            "it's 100% 'quoted'",
        )
        assert event.timestamp == when and event.timestamp.tzinfo is not None
        assert event.timestamp.utcoffset() == timedelta(0)
        assert (row.state, row.state_timestamp) == ("B", when.astimezone(UTC))


def test_a_bulk_insert_that_breaks_a_constraint_is_a_balsam_error(db_url: str) -> None:
    """Through COPY on PostgreSQL as through executemany on SQLite: a row that breaks a
    constraint (history of a job that does not exist) is one permanent DatabaseError, and
    nothing of the transaction is left."""
    from balsam.errors import DatabaseError
    from balsam.store.bulk import COPY_FROM_ROWS
    from balsam.store.engine import make_engine
    from balsam.store.repository import EVENT_COLUMNS

    engine = make_engine(db_url)
    now = datetime.now(UTC)
    rows = [("no-such-job", now, "", "CREATED", "x")] * (COPY_FROM_ROWS + 1)
    try:
        try:
            with unit_of_work(engine) as session:
                insert_rows(session, EVENTS, EVENT_COLUMNS, rows)
        except DatabaseError as exc:
            assert not exc.transient
        else:
            raise AssertionError("the foreign key let the rows in")
        with unit_of_work(engine, write=False) as session:
            assert session.scalars(select(EventRow)).first() is None
    finally:
        engine.dispose()

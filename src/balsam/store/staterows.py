"""Job rows for state changes, read and written with SQLAlchemy Core instead of the ORM.

A launcher reports thousands of state changes a second. Loading each job as an ORM object
and writing it back through the unit of work cost more than the SQL itself (about half of a
launcher's database time), so the launcher's path reads only the columns a state change
looks at into a plain record and writes the changed columns back in one ``executemany``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter

from sqlalchemy import select
from sqlalchemy.orm import Session

from balsam.store.bulk import update_rows
from balsam.store.tables import JOBS

CHUNK = 500


@dataclass(slots=True)
class StateRow:
    """The columns of one job that a state change reads or writes."""

    job_id: str
    name: str
    application: str
    state: str
    session_id: int | None
    error_count: int
    timeout_count: int
    lost_count: int
    return_code: int | None
    max_error_retries: int
    max_timeout_retries: int
    max_lost_retries: int
    auto_timeout_retry: bool
    wait_for_parents: bool
    post_error_handler: bool
    post_timeout_handler: bool
    input_files: str
    stage_in_url: str
    stage_out_files: str
    stage_out_url: str
    update_session: int | None
    update_seq: int | None
    #: Set by the state change (never read: parsing stored datetimes costs more than a row).
    state_timestamp: datetime | None = None


READ = tuple(f.name for f in fields(StateRow) if f.name != "state_timestamp")
#: What a state change may alter; written back for every row the transaction touched.
WRITTEN = (
    "state",
    "state_timestamp",
    "session_id",
    "error_count",
    "timeout_count",
    "lost_count",
    "return_code",
    "update_session",
    "update_seq",
)


#: A row's WRITTEN values, then its id (the key of the update).
_written = attrgetter(*WRITTEN, "job_id")


def state_rows(session: Session, ids: Iterable[str], lock: bool = False) -> dict[str, StateRow]:
    """The state rows of the jobs in ``ids`` (row-locked in id order if ``lock``)."""
    wanted = sorted(set(ids))
    columns = [JOBS.c[name] for name in READ]
    found: dict[str, StateRow] = {}
    for start in range(0, len(wanted), CHUNK):
        stmt = select(*columns).where(JOBS.c.job_id.in_(wanted[start : start + CHUNK]))
        if lock:
            # Id order: two transactions locking overlapping sets cannot deadlock.
            stmt = stmt.order_by(JOBS.c.job_id).with_for_update()
        for values in session.connection().execute(stmt):
            found[values[0]] = StateRow(*values)
    return found


def write_state_rows(session: Session, rows: Sequence[StateRow]) -> None:
    """Write the changeable columns of ``rows`` in one statement."""
    update_rows(session, JOBS, "job_id", WRITTEN, [_written(row) for row in rows])

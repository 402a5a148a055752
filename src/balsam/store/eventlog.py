"""Reading the job event log in id order, for streams (``Backend.events_since``).

Events have an integer id that only grows (a sequence on PostgreSQL, the rowid on SQLite),
indexed by the primary key, so "the events after id N" is a range scan whose cost does not
depend on the table's size. Two reads per page: the ids after N (index only), then the rows
up to the page's horizon, joined to their jobs for the workflow.
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from balsam.schemas.jobs import StreamEvent
from balsam.store.tables import EVENTS, JOBS

# One statement, so one snapshot: the ids visible and the transactions in flight then.
# Only transactions holding an xid are listed; a reader (this one) holds none.
_IDS_AND_RUNNING = text(
    "SELECT ARRAY(SELECT id FROM events WHERE id > :after ORDER BY id LIMIT :limit), "
    "ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) AS x)"
)


def ids_after(session: Session, after: int, limit: int) -> list[int]:
    """The first ``limit`` event ids above ``after``, ascending."""
    stmt = select(EVENTS.c.id).where(EVENTS.c.id > after).order_by(EVENTS.c.id).limit(limit)
    return [int(i) for i in session.scalars(stmt)]


def ids_after_and_running(session: Session, after: int, limit: int) -> tuple[list[int], set[int]]:
    """PostgreSQL: :func:`ids_after` and the ids of the transactions in flight, in one
    snapshot (a missing id below a visible one may belong to one of them)."""
    ids, running = session.execute(_IDS_AND_RUNNING, {"after": after, "limit": limit}).one()
    return [int(i) for i in ids], {int(x) for x in running}


def newest_id(session: Session) -> int:
    """The newest event id (0 when none)."""
    stmt = select(EVENTS.c.id).order_by(EVENTS.c.id.desc()).limit(1)
    return int(session.scalar(stmt) or 0)


def events_between(
    session: Session, after: int, upto: int, limit: int, workflow: str | None
) -> list[StreamEvent]:
    """Events with ``after < id <= upto`` (of ``workflow``'s jobs when given), by id."""
    stmt = (
        select(
            EVENTS.c.id,
            EVENTS.c.job_id,
            JOBS.c.workflow,
            EVENTS.c.timestamp,
            EVENTS.c.from_state,
            EVENTS.c.to_state,
            EVENTS.c.message,
        )
        .join(JOBS, JOBS.c.job_id == EVENTS.c.job_id)
        .where(EVENTS.c.id > after, EVENTS.c.id <= upto)
        .order_by(EVENTS.c.id)
        .limit(limit)
    )
    if workflow is not None:
        stmt = stmt.where(JOBS.c.workflow == workflow)
    return [StreamEvent.model_validate(row._mapping) for row in session.execute(stmt)]

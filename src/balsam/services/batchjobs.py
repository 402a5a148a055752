"""Launcher batch jobs: the rows ``balsam submit-launch`` writes and ``balsam ls queues`` reads.

Each function is one transaction. A create with a ``client_key`` that a row has already
returns that row (the repeat of a create whose answer was lost); updates set what they are
given, so a repeat has the effect of one. Every state a batch job enters is written to its
history (``batch_job_events``) in the same transaction, with the message that came with it.
"""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from balsam.domain.batchjobs import BatchJobState
from balsam.errors import NotFound
from balsam.schemas.batchjobs import (
    BatchJobCreate,
    BatchJobEventOut,
    BatchJobOut,
    BatchJobUpdate,
)
from balsam.store.engine import unit_of_work
from balsam.store.tables import BatchJobEventRow, BatchJobRow, utcnow


def create_batch_job(engine: Engine, spec: BatchJobCreate) -> BatchJobOut:
    """Record a batch job; with ``client_key``, a repeat returns the row the first call made."""
    with unit_of_work(engine) as session:
        if spec.client_key:
            stmt = select(BatchJobRow).where(BatchJobRow.client_key == spec.client_key)
            found = session.scalar(stmt)
            if found is not None:
                return BatchJobOut.model_validate(found)
        now = utcnow()
        row = BatchJobRow(**spec.model_dump(), created_at=now, updated_at=now)
        session.add(row)
        session.flush()
        message = spec.status_message or "recorded before it is sent to the scheduler"
        _record(session, row.id, "", row.state, message)
        return BatchJobOut.model_validate(row)


def update_batch_job(engine: Engine, batch_id: int, changes: BatchJobUpdate) -> BatchJobOut:
    """Change the fields of ``changes`` that are set (NotFound: no such batch job)."""
    with unit_of_work(engine) as session:
        row = _row(session, batch_id)
        values = changes.model_dump(exclude_unset=True)
        new_state = values.get("state")
        if new_state is not None and new_state != row.state:
            _record(session, batch_id, row.state, new_state, values.get("status_message") or "")
        for name, value in values.items():
            setattr(row, name, value)
        if values:
            row.updated_at = utcnow()
        session.flush()
        return BatchJobOut.model_validate(row)


def get_batch_job(engine: Engine, batch_id: int) -> BatchJobOut:
    """One batch job by id (NotFound)."""
    with unit_of_work(engine, write=False) as session:
        return BatchJobOut.model_validate(_row(session, batch_id))


def list_batch_jobs(engine: Engine, states: list[BatchJobState] | None = None) -> list[BatchJobOut]:
    """Batch jobs (in ``states``, when given), oldest first."""
    with unit_of_work(engine, write=False) as session:
        stmt = select(BatchJobRow).order_by(BatchJobRow.id)
        if states is not None:
            stmt = stmt.where(BatchJobRow.state.in_([s.value for s in states]))
        return [BatchJobOut.model_validate(row) for row in session.scalars(stmt)]


def batch_job_history(engine: Engine, batch_id: int) -> list[BatchJobEventOut]:
    """The states batch job ``batch_id`` entered, oldest first (NotFound: no such job)."""
    with unit_of_work(engine, write=False) as session:
        _row(session, batch_id)
        stmt = (
            select(BatchJobEventRow)
            .where(BatchJobEventRow.batch_job_id == batch_id)
            .order_by(BatchJobEventRow.id)
        )
        return [BatchJobEventOut.model_validate(row) for row in session.scalars(stmt)]


def _record(session: Session, batch_id: int, old: str, new: str, message: str) -> None:
    session.add(
        BatchJobEventRow(
            batch_job_id=batch_id,
            timestamp=utcnow(),
            from_state=str(old),
            to_state=str(new),
            message=message,
        )
    )


def _row(session: Session, batch_id: int) -> BatchJobRow:
    row = session.get(BatchJobRow, batch_id)
    if row is None:
        raise NotFound(f"no batch job {batch_id}")
    return row

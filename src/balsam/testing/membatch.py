"""Launcher batch jobs of :class:`~balsam.testing.MemoryBackend`, as
:mod:`balsam.services.batchjobs`. Each function is one call on a store the caller has locked."""

from __future__ import annotations

from balsam.domain.batchjobs import BatchJobState
from balsam.errors import NotFound
from balsam.schemas.batchjobs import (
    BatchJobCreate,
    BatchJobEventOut,
    BatchJobOut,
    BatchJobUpdate,
)
from balsam.testing.memchecks import check_int, check_text
from balsam.testing.memstore import Store, utcnow

#: Text fields and the length of their SQL column (None: unbounded text).
_TEXT_COLUMNS: dict[str, int | None] = {
    "scheduler": 32,
    "scheduler_id": 128,
    "project": 256,
    "queue": 256,
    "job_mode": 16,
    "wf_filter": 256,
    "status_message": None,
    "script": None,
    "client_key": 64,
}


def create_batch_job(store: Store, spec: BatchJobCreate) -> BatchJobOut:
    """Record a batch job; with ``client_key``, a repeat returns the first call's row."""
    values = spec.model_dump()
    _check(values)
    check_int(spec.num_nodes, "num_nodes")
    if spec.client_key:
        for found in store.batch_jobs.values():
            if found.client_key == spec.client_key:
                return found.model_copy()
    store.last_batch_job_id += 1
    now = utcnow()
    row = BatchJobOut(id=store.last_batch_job_id, created_at=now, updated_at=now, **values)
    store.batch_jobs[row.id] = row
    message = spec.status_message or "recorded before it is sent to the scheduler"
    _record(store, row.id, "", row.state, message)
    return row.model_copy()


def update_batch_job(store: Store, batch_id: int, changes: BatchJobUpdate) -> BatchJobOut:
    """Change the set fields of ``changes`` (NotFound: no such batch job)."""
    row = _row(store, batch_id)
    values = changes.model_dump(exclude_unset=True)
    _check(values)
    new_state = values.get("state")
    if new_state is not None and new_state != row.state:
        _record(store, batch_id, row.state, new_state, str(values.get("status_message") or ""))
    if values:
        row = row.model_copy(update={**values, "updated_at": utcnow()})
        # model_copy does not validate: keep the enum, as a read from SQL gives.
        row.state = BatchJobState(row.state)
        store.batch_jobs[batch_id] = row
    return row.model_copy()


def get_batch_job(store: Store, batch_id: int) -> BatchJobOut:
    """One batch job by id (NotFound)."""
    return _row(store, batch_id).model_copy()


def list_batch_jobs(store: Store, states: list[BatchJobState] | None = None) -> list[BatchJobOut]:
    """Batch jobs (in ``states``, when given), oldest first."""
    wanted = None if states is None else {BatchJobState(s) for s in states}
    return [
        row.model_copy()
        for _, row in sorted(store.batch_jobs.items())
        if wanted is None or row.state in wanted
    ]


def batch_job_history(store: Store, batch_id: int) -> list[BatchJobEventOut]:
    """The states batch job ``batch_id`` entered, oldest first (NotFound)."""
    _row(store, batch_id)
    return [event.model_copy() for event in store.batch_job_events.get(batch_id, [])]


def _record(store: Store, batch_id: int, old: object, new: object, message: str) -> None:
    event = BatchJobEventOut(
        batch_job_id=batch_id,
        timestamp=utcnow(),
        from_state=str(old),
        to_state=str(new),
        message=message,
    )
    store.batch_job_events.setdefault(batch_id, []).append(event)


def _row(store: Store, batch_id: int) -> BatchJobOut:
    found = store.batch_jobs.get(batch_id)
    if found is None:
        raise NotFound(f"no batch job {batch_id}")
    return found


def _check(values: dict[str, object]) -> None:
    for name, length in _TEXT_COLUMNS.items():
        value = values.get(name)
        if isinstance(value, str):
            check_text(value, f"the batch job {name}", length)

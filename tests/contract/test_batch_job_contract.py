"""Launcher batch jobs and the batch job a session runs in, on every backend."""

from __future__ import annotations

import pytest

from balsam.backends.base import Backend
from balsam.domain.batchjobs import BatchJobState
from balsam.errors import NotFound
from balsam.schemas import BatchJobCreate, BatchJobUpdate

B = BatchJobState


def spec(**fields: object) -> BatchJobCreate:
    values: dict[str, object] = {
        "scheduler": "slurm",
        "project": "proj",
        "queue": "debug",
        "num_nodes": 2,
        "wall_time_minutes": 3.5,
        "job_mode": "serial",
    }
    return BatchJobCreate.model_validate(values | fields)


def test_a_new_batch_job_is_submitting_with_no_scheduler_id(backend: Backend) -> None:
    row = backend.create_batch_job(spec(wf_filter="wf1"))
    assert row.state is B.SUBMITTING
    assert row.scheduler_id is None and row.script is None and row.status_message == ""
    assert (row.num_nodes, row.wall_time_minutes, row.wf_filter) == (2, 3.5, "wf1")
    assert row.created_at == row.updated_at
    assert backend.get_batch_job(row.id) == row


def test_ids_increase_and_listing_is_oldest_first(backend: Backend) -> None:
    ids = [backend.create_batch_job(spec()).id for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [r.id for r in backend.list_batch_jobs()] == ids


def test_a_repeated_create_with_one_client_key_makes_one_row(backend: Backend) -> None:
    first = backend.create_batch_job(spec(client_key="k1"))
    again = backend.create_batch_job(spec(client_key="k1"))
    other = backend.create_batch_job(spec(client_key="k2"))
    assert again == first
    assert other.id != first.id
    assert len(backend.list_batch_jobs()) == 2


def test_an_update_sets_only_what_it_is_given(backend: Backend) -> None:
    row = backend.create_batch_job(spec())
    queued = backend.update_batch_job(
        row.id, BatchJobUpdate(scheduler_id="1234", state=B.QUEUED, script="/s/x.sh")
    )
    assert (queued.scheduler_id, queued.state, queued.script) == ("1234", B.QUEUED, "/s/x.sh")
    assert queued.updated_at >= row.updated_at
    ended = backend.update_batch_job(row.id, BatchJobUpdate(state=B.CANCELLED))
    assert (ended.scheduler_id, ended.state, ended.script) == ("1234", B.CANCELLED, "/s/x.sh")
    # A repeat has the effect of one.
    again = backend.update_batch_job(row.id, BatchJobUpdate(state=B.CANCELLED))
    assert again.state is B.CANCELLED and again.scheduler_id == "1234"
    assert backend.get_batch_job(row.id).state is B.CANCELLED


def test_a_failed_submission_keeps_its_reason(backend: Backend) -> None:
    row = backend.create_batch_job(spec())
    why = "sbatch refused the launcher job: invalid partition specified: nosuch"
    backend.update_batch_job(row.id, BatchJobUpdate(state=B.SUBMIT_FAILED, status_message=why))
    got = backend.get_batch_job(row.id)
    assert (got.state, got.status_message, got.scheduler_id) == (B.SUBMIT_FAILED, why, None)


def test_listing_by_state(backend: Backend) -> None:
    a, b, c = (backend.create_batch_job(spec()) for _ in range(3))
    backend.update_batch_job(b.id, BatchJobUpdate(state=B.RUNNING))
    backend.update_batch_job(c.id, BatchJobUpdate(state=B.GONE))
    live = backend.list_batch_jobs([B.SUBMITTING, B.RUNNING])
    assert [r.id for r in live] == [a.id, b.id]
    assert backend.list_batch_jobs([]) == []


def test_an_unknown_batch_job_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.get_batch_job(999)
    with pytest.raises(NotFound):
        backend.update_batch_job(999, BatchJobUpdate(state=B.CANCELLED))


def test_a_session_carries_its_batch_job(backend: Backend) -> None:
    inside = backend.open_session("t", "host", 1, batch_job="4242")
    outside = backend.open_session("t", "host", 2)
    assert inside.batch_job == "4242" and outside.batch_job is None
    listed = {s.id: s.batch_job for s in backend.list_sessions()}
    assert listed == {inside.id: "4242", outside.id: None}
    # A repeated open (same key) is the first session, batch job included.
    keyed = backend.open_session("t", "host", 3, client_key="c", batch_job="7")
    assert backend.open_session("t", "host", 3, client_key="c", batch_job="7") == keyed
    assert keyed.batch_job == "7"


def test_each_state_a_batch_job_enters_is_in_its_history_with_the_reason(
    backend: Backend,
) -> None:
    row = backend.create_batch_job(spec(client_key="h1"))
    backend.create_batch_job(spec(client_key="h1"))  # a repeat: no second first event
    backend.update_batch_job(row.id, BatchJobUpdate(scheduler_id="77", state=B.QUEUED))
    backend.update_batch_job(row.id, BatchJobUpdate(state=B.QUEUED))  # no change, no event
    backend.update_batch_job(row.id, BatchJobUpdate(script="/tmp/s.sh"))
    backend.update_batch_job(
        row.id, BatchJobUpdate(state=B.CANCELLED, status_message="withdrawn: not needed")
    )
    events = backend.batch_job_history(row.id)
    hops = [(e.from_state, e.to_state, e.message) for e in events]
    assert hops == [
        ("", "submitting", "recorded before it is sent to the scheduler"),
        ("submitting", "queued", ""),
        ("queued", "cancelled", "withdrawn: not needed"),
    ]
    assert all(e.batch_job_id == row.id for e in events)
    assert events[0].timestamp <= events[1].timestamp <= events[2].timestamp
    with pytest.raises(NotFound):
        backend.batch_job_history(row.id + 100)

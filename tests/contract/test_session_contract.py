"""Session-side Backend calls a launcher makes: notes on jobs, and runs lost with a launcher.

Runs on every backend (SQLite and PostgreSQL today).
"""

from __future__ import annotations

import pytest

from balsam.backends.base import Backend
from balsam.domain.states import JobState
from balsam.schemas import (
    AppCreate,
    ClaimRequest,
    JobCreate,
    RefusalCode,
    StateUpdate,
    UpdateResult,
)

S = JobState
NOTE = "needs 4 nodes, this launcher has 1"


@pytest.fixture
def app(backend: Backend) -> str:
    backend.create_app(AppCreate(name="SayHello", executable="echo hello,"))
    return "SayHello"


def new_job(backend: Backend, name: str, **fields: object) -> str:
    spec = JobCreate(name=name, workflow="test", application="SayHello", **fields)  # type: ignore[arg-type]
    (out,) = backend.create_jobs([spec])
    return out.job_id


def start_run(backend: Backend, job_id: str, pid: int = 1) -> int:
    """Open a session, claim ``job_id`` and report it RUNNING; returns the session id."""
    sess = backend.open_session("t", "host", pid)
    claimed = backend.claim_jobs(sess.id, ClaimRequest(job_ids=[job_id]))
    assert [c.job_id for c in claimed] == [job_id]
    (result,) = backend.record_updates(sess.id, [StateUpdate(job_id=job_id, state=S.RUNNING)])
    assert result.ok
    return sess.id


def lose_run(backend: Backend, session_id: int, job_id: str) -> list[UpdateResult]:
    """Report the run lost with its node, and let go of the job; returns the refusals."""
    lost = StateUpdate(
        job_id=job_id, state=S.RESTART_READY, message="node lost", lost=True, release=True
    )
    return [r for r in backend.record_updates(session_id, [lost]) if not r.ok]


def messages(backend: Backend, job_id: str) -> list[str]:
    return [e.message for e in backend.history(job_id)]


def test_a_note_is_an_event_that_keeps_the_state(backend: Backend, app: str) -> None:
    job_id = new_job(backend, "big")
    before = backend.get_job(job_id)
    assert backend.note_jobs([job_id], NOTE) == 1
    last = backend.history(job_id)[-1]
    assert (last.from_state, last.to_state, last.message) == ("PREPROCESSED", "PREPROCESSED", NOTE)
    after = backend.get_job(job_id)
    assert after.state is S.PREPROCESSED
    assert after.state_timestamp == before.state_timestamp


def test_the_same_note_is_not_written_twice_in_a_row(backend: Backend, app: str) -> None:
    job_id = new_job(backend, "big")
    assert backend.note_jobs([job_id], NOTE) == 1
    count = len(backend.history(job_id))
    assert backend.note_jobs([job_id], NOTE) == 0
    assert len(backend.history(job_id)) == count
    assert backend.note_jobs([job_id], "another note") == 1
    assert backend.note_jobs([job_id], NOTE) == 1
    assert messages(backend, job_id)[-3:] == [NOTE, "another note", NOTE]


def test_notes_are_counted_per_job(backend: Backend, app: str) -> None:
    first, second = new_job(backend, "a"), new_job(backend, "b")
    assert backend.note_jobs([first], NOTE) == 1
    assert backend.note_jobs([first, second], NOTE) == 1
    assert backend.note_jobs([first, second], NOTE) == 0
    assert messages(backend, first).count(NOTE) == 1
    assert messages(backend, second)[-1] == NOTE


def test_a_note_after_a_state_change_is_written_again(backend: Backend, app: str) -> None:
    job_id = new_job(backend, "x")
    assert backend.note_jobs([job_id], NOTE) == 1
    start_run(backend, job_id)
    assert backend.note_jobs([job_id], NOTE) == 1
    last = backend.history(job_id)[-1]
    assert (last.from_state, last.to_state, last.message) == ("RUNNING", "RUNNING", NOTE)


def test_a_lost_run_is_counted_and_the_job_released(backend: Backend, app: str) -> None:
    job_id = new_job(backend, "x")
    session_id = start_run(backend, job_id)
    assert lose_run(backend, session_id, job_id) == []
    after = backend.get_job(job_id)
    assert after.state is S.RESTART_READY
    assert after.lost_count == 1 and after.error_count == 0
    assert after.session_id is None
    last = backend.history(job_id)[-1]
    assert (last.from_state, last.to_state, last.message) == (
        "RUNNING",
        "RESTART_READY",
        "node lost",
    )
    # Released: the old session holds it no more, another launcher can take it.
    (again,) = backend.record_updates(session_id, [StateUpdate(job_id=job_id, state=S.RUNNING)])
    assert again.code is RefusalCode.NOT_HELD
    other = backend.open_session("u", "host", 2)
    assert [j.job_id for j in backend.claim_jobs(other.id, ClaimRequest())] == [job_id]


def test_lost_runs_beyond_max_lost_retries_fail_the_job(backend: Backend, app: str) -> None:
    job_id = new_job(backend, "x", max_lost_retries=1)
    assert lose_run(backend, start_run(backend, job_id, pid=1), job_id) == []
    assert backend.get_job(job_id).state is S.RESTART_READY
    assert lose_run(backend, start_run(backend, job_id, pid=2), job_id) == []
    after = backend.get_job(job_id)
    assert after.state is S.FAILED
    assert after.lost_count == 2 and after.session_id is None
    assert "gave up after" in messages(backend, job_id)[-1]
    assert backend.claim_jobs(backend.open_session("u", "host", 3).id, ClaimRequest()) == []


def test_no_lost_retries_fails_at_the_first_loss(backend: Backend, app: str) -> None:
    job_id = new_job(backend, "x", max_lost_retries=0)
    assert lose_run(backend, start_run(backend, job_id), job_id) == []
    after = backend.get_job(job_id)
    assert after.state is S.FAILED and after.lost_count == 1
    assert "gave up after 1 runs lost" in messages(backend, job_id)[-1]

"""``Backend.events``: the history of every job a query selects, in one read, on every backend."""

from __future__ import annotations

import pytest

from balsam.backends.base import Backend
from balsam.domain.states import JobState
from balsam.schemas import AppCreate, ClaimRequest, JobCreate, JobQuery, StateUpdate
from balsam.schemas.queries import clause_from_kwargs

S = JobState


def test_events_of_the_selected_jobs_in_order(backend: Backend) -> None:
    backend.create_app(AppCreate(name="A", executable="true"))
    a, b, c = backend.create_jobs(
        [
            JobCreate(name=n, workflow=w, application="A")
            for n, w in (("a", "x"), ("b", "x"), ("c", "y"))
        ]
    )
    session = backend.open_session("t", "h", 1)
    backend.claim_jobs(session.id, ClaimRequest(job_ids=[a.job_id]))
    backend.record_updates(session.id, [StateUpdate(job_id=a.job_id, state=S.RUNNING)])
    backend.record_updates(session.id, [StateUpdate(job_id=a.job_id, state=S.RUN_DONE)])
    picked = backend.events(JobQuery(clauses=[clause_from_kwargs({"workflow": "x"})]))
    assert {e.job_id for e in picked} == {a.job_id, b.job_id}
    for job in (a, b):
        mine = [(e.from_state, e.to_state) for e in picked if e.job_id == job.job_id]
        assert mine == [(e.from_state, e.to_state) for e in backend.history(job.job_id)]
    assert [e.timestamp for e in picked] == sorted(e.timestamp for e in picked)
    assert len(backend.events(JobQuery())) == sum(len(backend.history(j.job_id)) for j in (a, b, c))
    none = JobQuery(clauses=[clause_from_kwargs({"workflow": "nothing"})])
    assert backend.events(none) == []


def test_a_dropped_parent_is_no_longer_waited_for(backend: Backend) -> None:
    """Balsam 0.5's ``set_parents([])``: a child left waiting for nothing moves on."""
    from balsam.errors import InvalidTransition, NotFound

    backend.create_app(AppCreate(name="A", executable="true"))
    parent, other = backend.create_jobs(
        [JobCreate(name=n, workflow="w", application="A") for n in ("p", "o")]
    )
    (child,) = backend.create_jobs(
        [JobCreate(name="c", workflow="w", application="A", parents=[parent.job_id, other.job_id])]
    )
    assert child.state is S.AWAITING_PARENTS
    backend.remove_dependency(parent.job_id, child.job_id)
    after = backend.get_job(child.job_id)
    assert after.parents == [other.job_id] and after.state is S.AWAITING_PARENTS
    backend.remove_dependency(other.job_id, child.job_id)
    after = backend.get_job(child.job_id)
    assert after.parents == [] and after.state is S.PREPROCESSED
    assert backend.children_of(parent.job_id) == []
    with pytest.raises(NotFound, match="does not depend"):
        backend.remove_dependency(parent.job_id, child.job_id)
    # Once a launcher holds the child, its parents are fixed.
    (late,) = backend.create_jobs(
        [JobCreate(name="late", workflow="w", application="A", parents=[parent.job_id])]
    )
    session = backend.open_session("t", "h", 1)
    backend.claim_jobs(session.id, ClaimRequest(job_ids=[parent.job_id]))
    backend.record_updates(session.id, [StateUpdate(job_id=parent.job_id, state=S.RUNNING)])
    backend.record_updates(session.id, [StateUpdate(job_id=parent.job_id, state=S.RUN_DONE)])
    assert backend.get_job(late.job_id).state is S.READY  # its inputs come from the parent
    assert len(backend.claim_jobs(session.id, ClaimRequest(job_ids=[late.job_id]))) == 1
    with pytest.raises(InvalidTransition, match="too late to drop a parent"):
        backend.remove_dependency(parent.job_id, late.job_id)

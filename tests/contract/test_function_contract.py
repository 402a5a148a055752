"""Function apps on every backend (SQLite, PostgreSQL, the in-memory fake): the app's fields,
a job's call, and the outcome a launcher's state update brings (docs/functions.md)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError as PydanticValidationError

from balsam.backends.base import Backend
from balsam.domain.states import JobState
from balsam.errors import ValidationError
from balsam.schemas import (
    AppCreate,
    AppUpdate,
    ClaimRequest,
    JobCreate,
    JobQuery,
    StateUpdate,
    UpdateOutcome,
)
from balsam.schemas.queries import clause_from_kwargs

S = JobState
RAISED = {
    "exception": {
        "type": "ValueError",
        "message": "bad 7",
        "traceback": 'Traceback (most recent call last):\n  File "m.py"\nValueError: bad 7\n',
    }
}


@pytest.fixture
def apps(backend: Backend) -> Backend:
    backend.create_app(AppCreate(name="Add", function="mymod:add"))
    backend.create_app(AppCreate(name="Echo", executable="echo"))
    return backend


def add_job(backend: Backend, name: str = "a", **fields: object) -> str:
    spec = JobCreate(name=name, workflow="fn", application="Add", **fields)  # type: ignore[arg-type]
    (out,) = backend.create_jobs([spec])
    return out.job_id


def by_id(job_id: str) -> JobQuery:
    return JobQuery(clauses=[clause_from_kwargs({"job_id": job_id})])


def test_a_function_app_is_stored_shown_and_changed(backend: Backend) -> None:
    made = backend.create_app(AppCreate(name="Fit", function="pkg.fit:Model.run"))
    assert (made.function, made.python, made.executable) == ("pkg.fit:Model.run", "", "")
    (listed,) = backend.list_apps([clause_from_kwargs({"function": "pkg.fit:Model.run"})])
    assert listed.name == "Fit" and listed.executable == ""
    changed = backend.update_app("Fit", AppUpdate(python="/opt/env/bin/python"))
    assert (changed.function, changed.python, changed.executable) == (
        "pkg.fit:Model.run",
        "/opt/env/bin/python",
        "",
    )
    assert backend.update_app("Fit", AppUpdate(description="d")).python == "/opt/env/bin/python"
    # Given an executable, it becomes an executable app: its function and interpreter go.
    plain = backend.update_app("Fit", AppUpdate(executable="fit.exe"))
    assert (plain.function, plain.python, plain.executable) == ("", "", "fit.exe")
    # And back: given a function, its executable goes.
    again = backend.update_app("Fit", AppUpdate(function="pkg.fit:other"))
    assert (again.function, again.executable) == ("pkg.fit:other", "")


def test_an_app_is_an_executable_or_a_function_never_both(backend: Backend) -> None:
    with pytest.raises(PydanticValidationError, match="not both"):
        AppCreate(name="Both", executable="echo", function="m:f")
    with pytest.raises(PydanticValidationError, match="needs an executable"):
        AppCreate(name="Neither")
    backend.create_app(AppCreate(name="Fit", function="m:f"))
    with pytest.raises((ValidationError, PydanticValidationError), match="not both"):
        backend.update_app("Fit", AppUpdate(executable="fit.exe", function="m:g"))
    with pytest.raises((ValidationError, PydanticValidationError), match="needs an executable"):
        backend.update_app("Fit", AppUpdate(function=""))
    with pytest.raises((ValidationError, PydanticValidationError), match="interpreter of a"):
        backend.update_app("Fit", AppUpdate(executable="fit.exe", python="/bin/python3"))
    assert backend.get_app("Fit").function == "m:f"


def test_a_jobs_call_is_stored_as_given(apps: Backend) -> None:
    args = [1, "two", [3.5, None], {"k": True}]
    kwargs = {"steps": 10, "nested": {"a": [1, 2]}}
    job_id = add_job(apps, function_args=args, function_kwargs=kwargs)
    out = apps.get_job(job_id)
    assert (out.function_args, out.function_kwargs, out.function_outcome) == (args, kwargs, None)
    bare = apps.get_job(add_job(apps, "bare"))
    assert (bare.function_args, bare.function_kwargs) == (None, None)
    assert apps.update_jobs(by_id(job_id), {"function_kwargs": {"steps": 11}}) == 1
    assert apps.get_job(job_id).function_kwargs == {"steps": 11}
    assert apps.update_jobs(by_id(job_id), {"function_args": None}) == 1
    assert apps.get_job(job_id).function_args is None


def test_arguments_that_do_not_suit_the_app_create_nothing(apps: Backend) -> None:
    bad = [
        JobCreate(name="ok", workflow="fn", application="Add", function_args=[1]),
        JobCreate(name="args", workflow="fn", application="Add", args="1 2"),
    ]
    with pytest.raises(ValidationError, match="its app calls a Python function"):
        apps.create_jobs(bad)
    call = JobCreate(name="call", workflow="fn", application="Echo", function_kwargs={"x": 1})
    with pytest.raises(ValidationError, match="are for jobs of function apps"):
        apps.create_jobs([call])
    assert apps.count_jobs(JobQuery()) == 0


def test_a_call_that_cannot_be_stored_is_refused_before_the_backend() -> None:
    with pytest.raises(PydanticValidationError, match="function_args is not JSON"):
        JobCreate(application="Add", function_args=[{1, 2}])
    with pytest.raises(PydanticValidationError, match="Python argument name"):
        JobCreate(application="Add", function_kwargs={"not a name": 1})
    with pytest.raises(PydanticValidationError, match="function_args"):
        JobCreate(application="Add", function_args=[float("nan")])


def run(backend: Backend, job_id: str) -> int:
    """A session that holds ``job_id`` and has reported it RUNNING (clearing the outcome)."""
    sess = backend.open_session("t", "host", 1)
    assert [j.job_id for j in backend.claim_jobs(sess.id, ClaimRequest(job_ids=[job_id]))]
    running = StateUpdate(job_id=job_id, state=S.RUNNING, seq=1, outcome={})
    assert backend.record_updates(sess.id, [running])[0].ok
    return sess.id


def test_the_outcome_comes_with_the_runs_end_and_a_repeat_changes_nothing(apps: Backend) -> None:
    job_id = add_job(apps, function_args=[1, 2])
    sess = run(apps, job_id)
    done = StateUpdate(
        job_id=job_id, state=S.RUN_DONE, seq=2, release=True, outcome={"value": [3, {"x": 1}]}
    )
    (result,) = apps.record_updates(sess, [done])
    assert result.outcome is UpdateOutcome.APPLIED
    out = apps.get_job(job_id)
    assert out.state is S.JOB_FINISHED and out.function_outcome == {"value": [3, {"x": 1}]}
    # The same update sent again (its answer lost) is a duplicate: nothing is written again.
    again = done.model_copy(update={"outcome": {"value": "other"}})
    (repeat,) = apps.record_updates(sess, [again])
    assert repeat.outcome is UpdateOutcome.DUPLICATE
    assert apps.get_job(job_id).function_outcome == {"value": [3, {"x": 1}]}


def test_a_refused_update_stores_no_outcome(apps: Backend) -> None:
    job_id = add_job(apps)
    sess = run(apps, job_id)
    other = apps.open_session("u", "elsewhere", 2)
    stray = StateUpdate(job_id=job_id, state=S.RUN_ERROR, seq=1, outcome=RAISED)
    assert not apps.record_updates(other.id, [stray])[0].ok
    assert apps.get_job(job_id).function_outcome is None
    failed = StateUpdate(job_id=job_id, state=S.RUN_ERROR, seq=2, release=True, outcome=RAISED)
    assert apps.record_updates(sess, [failed])[0].ok
    out = apps.get_job(job_id)
    assert out.state is S.FAILED and out.function_outcome == RAISED


def test_a_new_run_clears_the_outcome_of_the_last(apps: Backend) -> None:
    job_id = add_job(apps, max_error_retries=1)
    sess = run(apps, job_id)
    failed = StateUpdate(job_id=job_id, state=S.RUN_ERROR, seq=2, release=True, outcome=RAISED)
    apps.record_updates(sess, [failed])
    assert apps.get_job(job_id).state is S.RESTART_READY
    assert apps.get_job(job_id).function_outcome == RAISED
    run(apps, job_id)
    assert apps.get_job(job_id).function_outcome is None
    # Cleared to SQL NULL (not JSON null): a query for jobs without an outcome finds it.
    cleared = {"function_outcome__isnull": True, "job_id": job_id}
    assert apps.count_jobs(JobQuery(clauses=[clause_from_kwargs(cleared)])) == 1
    # In one batch the last word counts: RUNNING clears, RUN_DONE sets.
    second = add_job(apps, "b")
    sess = apps.open_session("t", "host", 3)
    apps.claim_jobs(sess.id, ClaimRequest(job_ids=[second]))
    both = [
        StateUpdate(job_id=second, state=S.RUNNING, seq=1, outcome={}),
        StateUpdate(job_id=second, state=S.RUN_DONE, seq=2, release=True, outcome={"value": 1}),
    ]
    assert all(r.ok for r in apps.record_updates(sess.id, both))
    assert apps.get_job(second).function_outcome == {"value": 1}


def test_record_and_claim_carries_outcomes_too(apps: Backend) -> None:
    job_id = add_job(apps)
    sess = run(apps, job_id)
    done = StateUpdate(job_id=job_id, state=S.RUN_DONE, seq=2, release=True, outcome={"value": 0})
    answer = apps.record_and_claim(sess, [done], ClaimRequest(claim_seq=3))
    assert answer.results[0].ok
    assert apps.get_job(job_id).function_outcome == {"value": 0}


def test_an_outcome_of_another_shape_is_refused() -> None:
    with pytest.raises(PydanticValidationError, match="outcome"):
        StateUpdate(job_id="x", state=S.RUN_DONE, outcome={"value": 1, "extra": 2})
    with pytest.raises(PydanticValidationError, match="type, message and traceback"):
        StateUpdate(job_id="x", state=S.RUN_ERROR, outcome={"exception": {"type": "E"}})


def test_queries_test_the_call_and_outcome_only_for_null(apps: Backend) -> None:
    called = add_job(apps, "called", function_args=[1])
    add_job(apps, "bare")
    found = apps.query_jobs(
        JobQuery(clauses=[clause_from_kwargs({"function_args__isnull": False})])
    )
    assert [j.job_id for j in found] == [called]
    none_yet = JobQuery(clauses=[clause_from_kwargs({"function_outcome__isnull": True})])
    assert apps.count_jobs(none_yet) == 2
    with pytest.raises(ValidationError, match="can only test isnull"):
        apps.query_jobs(JobQuery(clauses=[clause_from_kwargs({"function_args": [1]})]))

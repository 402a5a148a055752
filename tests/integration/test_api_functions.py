"""Function apps in the Python API on SQLite and PostgreSQL: apps for functions, jobs that
call them, and what ``job.result()`` makes of every way a job can end.

The outcomes are recorded here as a launcher records them (a session, numbered updates);
tests/e2e/test_function_apps.py runs them through real launchers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from balsam.api import App, Job, use_backend
from balsam.backends.local import LocalBackend
from balsam.domain.states import JobState
from balsam.errors import AlreadyExists, JobError, RemoteError, RemoteTraceback, ValidationError
from balsam.schemas import ClaimRequest, StateUpdate

S = JobState
TRACE = 'Traceback (most recent call last):\n  File "/code/fit.py", line 3, in run\nKeyError: 7\n'


@pytest.fixture
def api(backend: LocalBackend) -> Iterator[LocalBackend]:
    """The test's backend, injected into the API."""
    with use_backend(backend):
        yield backend


def ended(
    backend: LocalBackend, job: Job, state: S, outcome: dict[str, Any] | None, message: str = ""
) -> None:
    """Run ``job`` to ``state`` as a launcher does, the outcome in the run's last update."""
    assert job.job_id is not None
    sess = backend.open_session("t", "host", 1)
    backend.claim_jobs(sess.id, ClaimRequest(job_ids=[job.job_id]))
    updates = [
        StateUpdate(job_id=job.job_id, state=S.RUNNING, seq=1, outcome={}),
        StateUpdate(
            job_id=job.job_id, state=state, seq=2, release=True, outcome=outcome, message=message
        ),
    ]
    assert all(r.ok for r in backend.record_updates(sess.id, updates))


def fit_job(name: str = "fit1", **fields: Any) -> Job:
    if not App.objects.filter(name="fit").exists():
        App(name="fit", function="mypkg.fit:run").save()
    job = Job(name=name, workflow="fits", application="fit", **fields)
    job.save()
    return job


def test_a_returned_value_comes_back(api: LocalBackend) -> None:
    job = fit_job(function_args=[0.5], function_kwargs={"steps": 100})
    ended(api, job, S.RUN_DONE, {"value": {"loss": 0.25, "path": [1, 2]}})
    assert job.result(timeout=10) == {"loss": 0.25, "path": [1, 2]}
    assert job.state is S.JOB_FINISHED
    assert job.function_outcome == {"value": {"loss": 0.25, "path": [1, 2]}}
    assert Job.objects.filter(function_outcome__isnull=False).count() == 1


def test_an_exception_is_raised_with_the_remote_traceback(api: LocalBackend) -> None:
    job = fit_job()
    error = {"type": "KeyError", "message": "7", "traceback": TRACE}
    ended(api, job, S.RUN_ERROR, {"exception": error}, "run failed: exit code 1")
    with pytest.raises(RemoteError) as raised:
        job.result()
    assert str(raised.value) == f"job {job.cute_id}: its function raised KeyError: 7"
    assert (raised.value.remote_type, raised.value.remote_traceback) == ("KeyError", TRACE)
    assert raised.value.job_id == job.job_id
    cause = raised.value.__cause__
    assert isinstance(cause, RemoteTraceback) and TRACE.rstrip() in str(cause)
    assert isinstance(raised.value, JobError)


def test_a_job_that_ended_without_a_value_says_why(api: LocalBackend) -> None:
    crashed = fit_job("crashed")
    ended(api, crashed, S.RUN_ERROR, None, "run failed: killed by signal 9\nmore lines")
    with pytest.raises(JobError, match=r"ended FAILED without a result: .*killed by signal 9$"):
        crashed.result()
    returned = fit_job("returned")
    ended(api, returned, S.RUN_ERROR, {"value": 1}, "run failed: exit code 1")
    with pytest.raises(JobError, match="ended FAILED after its function returned"):
        returned.result()
    killed = fit_job("killed")
    killed.update_state("USER_KILLED")
    with pytest.raises(JobError, match=r"was killed \(USER_KILLED\): it has no result"):
        killed.result()
    marked = fit_job("marked")
    marked.update_state("JOB_FINISHED")
    with pytest.raises(JobError, match="finished without a result"):
        marked.result()
    App(name="echo", executable="echo").save()
    plain = Job(name="plain", workflow="fits", application="echo")
    plain.save()
    plain.update_state("JOB_FINISHED")
    with pytest.raises(JobError, match="runs app 'echo', which calls no Python function"):
        plain.result()


def test_result_waits_and_times_out(api: LocalBackend) -> None:
    job = fit_job()
    with pytest.raises(TimeoutError, match=re.escape(f"job {job.cute_id} has not ended within")):
        job.result(timeout=0.3)
    with pytest.raises(ValidationError, match="not saved yet"):
        Job(name="new", application="fit").result()


def test_an_app_for_a_function_is_found_or_registered(api: LocalBackend) -> None:
    app = App.for_function(json.dumps)
    assert (app.name, app.function, app.python) == ("json.dumps", "json:dumps", "")
    assert App.for_function(json.dumps).id == app.id
    # Another interpreter is another app, which needs a name of its own.
    with pytest.raises(AlreadyExists, match=r"'json\.dumps' exists already"):
        App.for_function(json.dumps, python="/usr/bin/python3")
    other = App.for_function(json.dumps, name="dumps311", python="/usr/bin/python3")
    assert other.id != app.id and other.python == "/usr/bin/python3"
    assert App.for_function(json.dumps, python="/usr/bin/python3").id == other.id
    named = App.for_function(json.loads, name="loads")
    assert named.name == "loads" and str(named) == "loads: json:loads"
    assert repr(named) == "<App name='loads' function='json:loads'>"


def test_functions_a_job_cannot_import_are_refused(api: LocalBackend) -> None:
    def nested() -> None: ...

    def in_script() -> None: ...

    in_script.__module__ = "__main__"
    with pytest.raises(ValidationError, match="lambda or a nested function"):
        App.for_function(lambda: 0)
    with pytest.raises(ValidationError, match="lambda or a nested function"):
        App.for_function(nested)
    with pytest.raises(ValidationError, match=r"defined in the script itself \(__main__\)"):
        App.for_function(in_script)
    assert App.objects.count() == 0


def test_a_job_calling_a_function(api: LocalBackend) -> None:
    job = Job.calling(json.dumps, args=[[1, 2]], kwargs={"indent": 2}, name="d", workflow="w")
    assert job.job_id is None and job.application == "json.dumps"
    job.save()
    assert (job.function_args, job.function_kwargs) == ([[1, 2]], {"indent": 2})
    with pytest.raises(ValidationError, match="cannot call dumps with these arguments"):
        Job.calling(json.dumps, kwargs={"no_such_option": 1})
    by_name = Job.calling("json.dumps", args=[3], name="e")
    assert by_name.application == "json.dumps" and by_name.function_args == [3]
    assert job.app_cmd == "json:dumps([1, 2], indent=2)"


def test_a_call_edited_in_place_is_saved(api: LocalBackend) -> None:
    job = fit_job(function_args=[1], function_kwargs={"steps": 1})
    assert job.function_kwargs is not None and job.function_args is not None
    job.function_kwargs["steps"] = 2
    job.function_args.append(5)
    job.save()
    stored = api.get_job(str(job.job_id))
    assert (stored.function_args, stored.function_kwargs) == ([1, 5], {"steps": 2})


def test_app_fields_and_get_or_create(api: LocalBackend) -> None:
    app, created = App.objects.get_or_create(name="fit", function="mypkg.fit:run")
    assert created and app.id is not None and app.executable == ""
    with pytest.raises(ValidationError, match="not both"):
        App(name="both", executable="echo", function="m:f").save()
    app.python = "/opt/python"
    app.save()
    assert App.objects.get(name="fit").python == "/opt/python"

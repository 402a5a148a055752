"""``dag.add_dependency`` on jobs a script holds: the objects follow what the database says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from balsam.api import use_backend
from balsam.backends.local import LocalBackend
from balsam.core.models import BalsamJob
from balsam.domain.states import JobState
from balsam.launcher import dag
from balsam.schemas.apps import AppCreate


@pytest.fixture
def api(backend: LocalBackend) -> Iterator[LocalBackend]:
    """The test's backend, injected into the API, with the app the jobs run."""
    backend.create_app(AppCreate(name="SayHello", executable="echo hello,"))
    with use_backend(backend):
        yield backend


def stored_state(job: BalsamJob) -> JobState:
    """The job's state as a fresh read of the database gives it."""
    return BalsamJob.objects.get(pk=job.pk).state


def test_a_child_given_an_unfinished_parent_says_it_waits(api: LocalBackend) -> None:
    parent = dag.add_job(name="parent", workflow="w", application="SayHello")
    child = dag.add_job(name="child", workflow="w", application="SayHello")
    assert child.state == JobState.PREPROCESSED
    dag.add_dependency(parent, child)
    assert stored_state(child) == JobState.AWAITING_PARENTS
    assert child.state == JobState.AWAITING_PARENTS
    assert child.parents == [parent.job_id]
    # Saving the object afterwards must not undo the wait (it holds no stale state to write).
    child.args = "again"
    child.save()
    assert stored_state(child) == JobState.AWAITING_PARENTS


def test_a_child_given_a_failed_parent_says_it_failed(api: LocalBackend) -> None:
    parent = dag.add_job(name="parent", workflow="w", application="SayHello")
    parent.update_state("FAILED", "gave up")
    child = dag.add_job(name="child", workflow="w", application="SayHello")
    child.description = "unsaved edit"
    dag.add_dependency(parent.job_id or "", child)
    assert child.state == stored_state(child) == JobState.FAILED
    assert child.description == "unsaved edit"

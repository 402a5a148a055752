"""Single jobs of the Python API (``BalsamJob``): create, save, state, dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.api import close_default_backend, get_backend, get_site, use_backend
from balsam.backends.factory import init_site, open_backend
from balsam.backends.local import LocalBackend
from balsam.config import Site
from balsam.core.models import ApplicationDefinition, BalsamJob
from balsam.domain.states import JobState
from balsam.errors import (
    ConfigError,
    DependencyError,
    InvalidTransition,
    NotFound,
    ValidationError,
)
from balsam.schemas.apps import AppCreate


@pytest.fixture
def api(backend: LocalBackend) -> Iterator[LocalBackend]:
    """The test's backend, injected into the API, with the app the jobs run."""
    backend.create_app(AppCreate(name="SayHello", executable="echo hello,"))
    with use_backend(backend):
        yield backend


@pytest.fixture(autouse=True)
def _close_default() -> Iterator[None]:
    """Close the backend the API opened for BALSAM_DB_PATH, if a test made it do so."""
    yield
    close_default_backend()


def hello(**fields: object) -> BalsamJob:
    """An unsaved job of the SayHello app."""
    return BalsamJob(application="SayHello", **fields)


def test_a_new_job_is_unsaved_until_save(api: LocalBackend) -> None:
    job = hello(name="hi", workflow="test", args="world!", num_nodes=2, ranks_per_node=4)
    assert (job.pk, job.job_id, job.state) == (None, None, JobState.CREATED)
    assert job.wall_time_minutes == 1 and job.data == {} and job.parents == []
    assert BalsamJob.objects.count() == 0
    job.save()
    assert job.pk == job.job_id and len(job.job_id or "") == 36
    assert job.state == JobState.PREPROCESSED  # nothing to stage or preprocess
    assert job.created_at is not None and job.error_count == 0
    stored = BalsamJob.objects.get(pk=job.pk)
    assert (stored.name, stored.workflow, stored.args) == ("hi", "test", "world!")
    assert (stored.num_nodes, stored.ranks_per_node) == (2, 4)
    assert stored == job and hash(stored) == hash(job)
    assert [e.to_state for e in job.history()][:2] == ["CREATED", "READY"]


def test_str_and_repr_are_readable(api: LocalBackend) -> None:
    job = hello(name="hi", workflow="test")
    assert repr(job) == "<Job unsaved name='hi' workflow='test' state=CREATED>"
    job.save()
    short = (job.job_id or "")[:8]
    assert str(job) == f"hi [{short}] workflow=test app=SayHello state=PREPROCESSED"
    assert repr(job) == f"<Job {short} name='hi' workflow='test' state=PREPROCESSED>"


def test_saving_changed_fields(api: LocalBackend) -> None:
    job = hello(name="hi", data={"step": 1})
    job.save()
    events = len(job.history())
    job.args = "--verbose"
    job.num_nodes = 3
    job.data["step"] = 2  # in-place edits are noticed too
    job.environ_vars = "OMP_NUM_THREADS=4:A=b"  # type: ignore[assignment]
    job.save()
    stored = BalsamJob.objects.get(pk=job.pk)
    assert (stored.args, stored.num_nodes, stored.data) == ("--verbose", 3, {"step": 2})
    assert stored.environ_vars == {"OMP_NUM_THREADS": "4", "A": "b"}
    assert job.environ_vars == stored.environ_vars
    job.save()  # nothing changed: nothing written
    assert len(job.history()) == events
    listed = hello(name="words", args=["a b", "c"])
    listed.save()
    assert listed.args == "'a b' c"


def test_bad_fields_and_values_raise_balsam_errors(api: LocalBackend) -> None:
    with pytest.raises(ValidationError, match=r"unknown job field.*colour"):
        hello(name="x", colour="red")
    job = hello(name="x")
    with pytest.raises(ValidationError, match="'num_node' is not a job field"):
        job.num_node = 4  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="job_id is read-only"):
        job.job_id = "abc"
    with pytest.raises(ValidationError, match="unknown job state 'DONE'"):
        job.state = "DONE"
    job.num_nodes = -1
    with pytest.raises(ValidationError, match=r"job 'x': .*num_nodes"):
        job.save()
    with pytest.raises(ValidationError, match="name"):
        hello(name="has space").save()
    with pytest.raises(NotFound, match=r"unknown application.*NoSuchApp"):
        BalsamJob(name="y", application="NoSuchApp").save()
    with pytest.raises(ValidationError, match="environ_vars"):
        hello(name="z", environ_vars="not-an-assignment").save()
    assert BalsamJob.objects.count() == 0


def test_integers_too_big_for_the_database_are_refused_by_name(api: LocalBackend) -> None:
    with pytest.raises(ValidationError) as info:
        BalsamJob(name="big", application="SayHello", num_nodes=10**30).save()
    assert str(info.value) == f"job 'big': num_nodes must be at most 2147483647 (got {10**30})"
    assert BalsamJob.objects.count() == 0
    job = hello(name="hi")
    job.save()
    job.wall_time_minutes = 2**31
    with pytest.raises(ValidationError, match=r"wall_time_minutes must be at most 2147483647"):
        job.save()
    with pytest.raises(ValidationError, match=r"max_lost_retries must be at most 2147483647"):
        BalsamJob.objects.update(max_lost_retries=2**40)
    stored = BalsamJob.objects.get(pk=job.pk)
    assert (stored.wall_time_minutes, stored.max_lost_retries) == (1, 3)


def test_changing_the_state_with_save(api: LocalBackend) -> None:
    job = hello(name="hi")
    job.save()
    job.state = "user_killed"
    job.save()
    assert job.state == JobState.USER_KILLED
    last = job.history()[-1]
    assert (last.from_state, last.to_state, last.message) == (
        "PREPROCESSED",
        "USER_KILLED",
        "set by user",
    )
    job.state = JobState.READY
    job.num_nodes = 2
    job.save()
    stored = BalsamJob.objects.get(pk=job.pk)
    assert stored.state == JobState.PREPROCESSED and stored.num_nodes == 2


def test_invalid_state_changes_change_nothing(api: LocalBackend) -> None:
    job = hello(name="hi")
    job.save()
    job.num_nodes = 5
    job.state = JobState.AWAITING_PARENTS  # only Balsam decides that a job waits
    with pytest.raises(InvalidTransition, match="only to one of"):
        job.save()
    job.state = "RUNNING"  # only a launcher starts runs
    with pytest.raises(InvalidTransition, match="only to one of"):
        job.save()
    stored = BalsamJob.objects.get(pk=job.pk)
    assert stored.state == JobState.PREPROCESSED and stored.num_nodes == 1
    new = hello(name="new")
    new.state = "FAILED"
    with pytest.raises(InvalidTransition, match="starts CREATED"):
        new.save()
    job.refresh_from_db()
    assert (job.num_nodes, job.state) == (1, JobState.PREPROCESSED)
    job.update_state("FAILED", "gave up")
    assert job.state == JobState.FAILED and job.history()[-1].message == "gave up"


def test_parents_and_children(api: LocalBackend) -> None:
    a, b = hello(name="a"), hello(name="b")
    BalsamJob.objects.bulk_create([a, b])
    child = hello(name="child")
    child.set_parents([a, (b.job_id or "")[:10]])  # a job and a unique id prefix
    assert child.parents == [a.job_id, (b.job_id or "")[:10]]
    assert {p.name for p in child.get_parents()} == {"a", "b"}
    assert list(child.get_children()) == []
    child.save()
    assert child.state == JobState.AWAITING_PARENTS
    assert set(child.parents) == {a.job_id, b.job_id}
    assert [c.name for c in a.get_children()] == ["child"]
    assert {p.name for p in child.get_parents()} == {"a", "b"}
    # After the first save, parents are added through the dependency edge table.
    c = hello(name="c")
    c.save()
    child.set_parents([a, b, c])
    assert {p.name for p in child.get_parents()} == {"a", "b", "c"}
    # The list replaces the parents, as in Balsam 0.5: b and c are dropped.
    child.set_parents([a])
    assert [p.name for p in child.get_parents()] == ["a"]
    with pytest.raises(DependencyError, match="cycle"):
        a.set_parents([child])
    with pytest.raises(DependencyError, match="itself"):
        a.set_parents([a])
    with pytest.raises(ValidationError, match="not saved yet"):
        BalsamJob.objects.bulk_create([hello(name="d", parents=[hello(name="unsaved")])])
    with pytest.raises(NotFound):
        hello(name="e", parents=["0000"]).save()
    assert {p.name for p in a.get_parents()} == set()


def test_refresh_and_delete(api: LocalBackend) -> None:
    job = hello(name="hi")
    job.save()
    BalsamJob.objects.filter(pk=job.pk).update(args="changed elsewhere")
    job.args = "local edit"
    job.refresh_from_db()
    assert job.args == "changed elsewhere"
    twin = BalsamJob.objects.get(pk=job.pk)
    job.delete()
    assert job.pk is None and BalsamJob.objects.count() == 0
    with pytest.raises(BalsamJob.DoesNotExist, match="no longer exists"):
        twin.refresh_from_db()
    twin.args = "x"
    with pytest.raises(BalsamJob.DoesNotExist):
        twin.save()
    with pytest.raises(TypeError, match="unhashable"):
        hash(job)


def test_working_directory_is_absolute_on_the_active_site(site: Site) -> None:
    # No backend injected: the API opens the active workflow database (BALSAM_DB_PATH).
    ApplicationDefinition(name="SayHello", executable="echo hello,").save()
    job = hello(name="hi", workflow="test")
    with pytest.raises(ValidationError, match="not saved yet"):
        _ = job.working_directory
    job.save()
    expected = site.path / "data" / "test" / f"hi_{(job.job_id or '')[:8]}"
    assert Path(job.working_directory) == expected
    assert BalsamJob.objects.get(name="hi").working_directory == str(expected)


def test_working_directory_needs_a_site(api: LocalBackend) -> None:
    job = hello(name="hi")
    job.save()
    with pytest.raises(ConfigError, match="no active workflow database"):
        _ = job.working_directory


def test_use_backend_scopes_nest_and_restore(site: Site, tmp_path: Path) -> None:
    default = get_backend()  # opened from BALSAM_DB_PATH
    assert get_site() == site
    injected = open_backend(site)
    try:
        with use_backend(injected, site=site.path) as entered:
            assert entered is injected and get_backend() is injected
            inner = use_backend(default)
            assert get_backend() is default
            inner.restore()
            inner.restore()  # idempotent
            assert get_backend() is injected and get_site() == site
        assert get_backend() is default
        with pytest.raises(NotFound, match="missing does not exist"):
            use_backend(injected, site=tmp_path / "missing")
        assert get_backend() is default
    finally:
        injected.close()


def test_without_an_active_database_the_error_is_clear() -> None:
    with pytest.raises(ConfigError, match=r"no active workflow database.*balsamactivate"):
        BalsamJob.objects.count()


def test_switching_the_active_database_reopens(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ApplicationDefinition(name="SayHello", executable="echo hello,").save()
    hello(name="first").save()
    other = init_site(tmp_path / "other")
    monkeypatch.setenv("BALSAM_DB_PATH", str(other.path))
    assert BalsamJob.objects.count() == 0
    monkeypatch.setenv("BALSAM_DB_PATH", str(site.path))
    assert BalsamJob.objects.count() == 1

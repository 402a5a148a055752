"""``balsam modify`` and ``balsam rm`` on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import open_backend
from balsam.config import Site
from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate, JobOut
from balsam.schemas.queries import JobQuery
from launchkit import cli as run


@pytest.fixture
def db(site: Site) -> Iterator[Backend]:
    backend = open_backend(site)
    backend.create_app(AppCreate(name="SayHello", executable="echo hello,"))
    yield backend
    backend.close()


def add(db: Backend, name: str, workflow: str = "test") -> JobOut:
    (job,) = db.create_jobs([JobCreate(name=name, workflow=workflow, application="SayHello")])
    return job


@pytest.mark.parametrize(
    ("attr", "value", "field", "expected"),
    [
        ("num_nodes", "4", "num_nodes", 4),
        ("ranks-per-node", "8", "ranks_per_node", 8),
        ("post_error_handler", "true", "post_error_handler", True),
        ("auto_timeout_retry", "0", "auto_timeout_retry", False),
        ("environ_vars", "A=1:B=2", "environ_vars", {"A": "1", "B": "2"}),
        ("data", '{"mesh": [1, 2]}', "data", {"mesh": [1, 2]}),
        ("tags", '{"size": "big"}', "tags", {"size": "big"}),
        ("args", "--steps 10", "args", "--steps 10"),
    ],
)
def test_modify_sets_a_field(
    capsys: pytest.CaptureFixture[str],
    db: Backend,
    attr: str,
    value: str,
    field: str,
    expected: object,
) -> None:
    job = add(db, "hi")
    code, out, err = run(capsys, "modify", job.job_id[:8], attr, value)
    assert (code, err) == (0, "")
    assert out.startswith(f"Job {job.job_id[:8]} (hi): {field} = ")
    assert getattr(db.get_job(job.job_id), field) == expected


def test_modify_state_resets_a_failed_job(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    job = add(db, "hi")
    code, out, _err = run(capsys, "modify", job.job_id[:8], "state", "failed")
    assert code == 0
    assert out == f"Job {job.job_id[:8]} (hi) is now FAILED\n"
    code, out, _err = run(capsys, "modify", job.job_id, "state", "RESTART_READY")
    assert code == 0
    after = db.get_job(job.job_id)
    assert after.state == JobState.RESTART_READY
    last = db.history(job.job_id)[-1]
    assert (last.from_state, last.to_state, last.message) == (
        "FAILED",
        "RESTART_READY",
        "set by user",
    )


def test_modify_refuses_a_change_the_resources_forbid(
    capsys: pytest.CaptureFixture[str], db: Backend
) -> None:
    job = add(db, "hi")
    code, out, err = run(capsys, "modify", job.job_id[:8], "num_nodes", "0")
    assert (code, out) == (2, "")
    assert err == "balsam: error: num_nodes must be at least 1 (got 0)\n"
    assert db.get_job(job.job_id).num_nodes == 1


def test_rm_jobs_by_name_and_id(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    keep, hi1, hi2, other = add(db, "keep"), add(db, "hi1"), add(db, "hi2"), add(db, "x")
    code, out, err = run(capsys, "rm", "jobs", "--name", "hi", "--yes")
    assert (code, err, out) == (0, "", "Removed 2 job(s)\n")
    code, out, _err = run(capsys, "rm", "jobs", "--id", other.job_id[:8], "--yes")
    assert (code, out) == (0, "Removed 1 job(s)\n")
    assert [j.job_id for j in db.query_jobs(JobQuery())] == [keep.job_id]
    assert hi1.job_id != hi2.job_id


@pytest.mark.parametrize(("answer", "left"), [("n\n", 3), ("y\n", 0)])
def test_rm_all_jobs_asks_first(
    capsys: pytest.CaptureFixture[str],
    db: Backend,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    left: int,
) -> None:
    jobs = [add(db, f"j{i}") for i in range(3)]
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    code, out, _err = run(capsys, "rm", "jobs", "--all")
    assert "Remove 3 job(s) [y/N]:" in out
    assert all(j.job_id[:8] in out for j in jobs)  # the user sees what would go
    assert code == (0 if left == 0 else 1)
    assert db.count_jobs(JobQuery()) == left


def test_rm_apps(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    db.create_app(AppCreate(name="unused", executable="/bin/true"))
    db.create_app(AppCreate(name="spare", executable="/bin/true"))
    code, out, err = run(capsys, "rm", "apps", "--name", "unused", "--yes")
    assert (code, err, out) == (0, "", "Removed 1 app(s): unused\n")
    spare_id = next(a.id for a in db.list_apps() if a.name == "spare")
    code, out, _err = run(capsys, "rm", "apps", "--id", str(spare_id), "--yes")
    assert (code, out) == (0, "Removed 1 app(s): spare\n")
    assert [a.name for a in db.list_apps()] == ["SayHello"]


def test_rm_apps_in_use_removes_none(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    db.create_app(AppCreate(name="unused", executable="/bin/true"))
    add(db, "hi")
    code, out, err = run(capsys, "rm", "apps", "--all", "--yes")
    assert (code, out) == (4, "")
    assert err == "balsam: error: 1 job(s) use SayHello, unused; remove those jobs first\n"
    assert [a.name for a in db.list_apps()] == ["SayHello", "unused"]

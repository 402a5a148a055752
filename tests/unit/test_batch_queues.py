"""Recording launcher batch jobs around the scheduler: written before they are sent, their
answers recorded, their states refreshed, a lost submission reconciled by its name.

On the in-memory Backend with a scheduler that records (the real Slurm runs are in
tests/e2e/test_slurm_queues.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from balsam.domain.batchjobs import BatchJobState, batch_job_id, batch_job_name
from balsam.errors import SchedulerError
from balsam.platform.schedulers import SCHEDULERS, BatchState, LaunchRequest, Submission
from balsam.schemas import BatchJobCreate, BatchJobUpdate
from balsam.site.batchjobs import RECONCILE_AFTER_SECONDS, refresh, submit_recorded
from balsam.testing import MemoryBackend

B = BatchJobState


class FakeScheduler:
    """Answers as told; remembers what it was asked."""

    name = "fake"

    def __init__(self) -> None:
        self.submitted: list[LaunchRequest] = []
        self.refusal: str | None = None
        self.states: dict[str, BatchState] = {}
        self.named: dict[str, list[str]] = {}
        self.asked: list[list[str]] = []
        self.seen_rows: list[list[B]] = []
        self.backend: MemoryBackend | None = None

    def submit(self, request: LaunchRequest) -> Submission:
        if self.backend is not None:
            self.seen_rows.append([r.state for r in self.backend.list_batch_jobs()])
        if self.refusal:
            raise SchedulerError(self.refusal)
        self.submitted.append(request)
        launch_id = str(100 + len(self.submitted))
        self.states[launch_id] = BatchState.QUEUED
        return Submission(launch_id=launch_id, script=Path("/s/fake.sh"))

    def status(self, ids: Sequence[str]) -> dict[str, BatchState]:
        self.asked.append(list(ids))
        return {i: self.states.get(i, BatchState.GONE) for i in ids}

    def cancel(self, job_id: str) -> None:
        self.states[job_id] = BatchState.CANCELLED

    def find(self, job_name: str) -> list[str]:
        return self.named.get(job_name, [])


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeScheduler:
    scheduler = FakeScheduler()
    monkeypatch.setitem(SCHEDULERS, "fake", lambda: scheduler)
    return scheduler


#: What refresh warned of, in the test that runs (emptied before each).
warnings: list[str] = []


@pytest.fixture(autouse=True)
def _no_warnings_yet() -> None:
    warnings.clear()


def launch(tmp_path: Path) -> LaunchRequest:
    return LaunchRequest(
        project="proj",
        queue="debug",
        wall_time_minutes=10,
        num_nodes=2,
        job_mode="serial",
        site_path=tmp_path,
        scripts_dir=tmp_path / "qsubmit",
        balsam_argv=["/opt/balsam"],
    )


def test_the_row_is_written_before_the_submission_and_names_the_job(
    fake: FakeScheduler, tmp_path: Path
) -> None:
    backend = MemoryBackend()
    fake.backend = backend
    row, submission = submit_recorded(backend, fake, launch(tmp_path))
    assert fake.seen_rows == [[B.SUBMITTING]]
    assert fake.submitted[0].job_name == batch_job_name(row.id) == f"balsam-{row.id}"
    assert (row.state, row.scheduler_id, row.script) == (B.QUEUED, "101", "/s/fake.sh")
    assert (row.scheduler, row.num_nodes, row.wall_time_minutes) == ("fake", 2, 10)
    assert submission.launch_id == "101"


def test_a_refusal_is_recorded_with_its_reason_and_raised(
    fake: FakeScheduler, tmp_path: Path
) -> None:
    backend = MemoryBackend()
    fake.refusal = "sbatch refused the launcher job: invalid partition"
    with pytest.raises(SchedulerError, match="invalid partition"):
        submit_recorded(backend, fake, launch(tmp_path))
    (row,) = backend.list_batch_jobs()
    assert (row.state, row.status_message) == (B.SUBMIT_FAILED, fake.refusal)


def test_refresh_asks_only_about_live_rows_and_saves_changes(
    fake: FakeScheduler, tmp_path: Path
) -> None:
    backend = MemoryBackend()
    first, _ = submit_recorded(backend, fake, launch(tmp_path))
    second, _ = submit_recorded(backend, fake, launch(tmp_path))
    fake.states["101"] = BatchState.RUNNING
    rows = refresh(backend, backend.list_batch_jobs(), warnings.append)
    assert [r.state for r in rows] == [B.RUNNING, B.QUEUED]
    assert backend.get_batch_job(first.id).state is B.RUNNING
    fake.states.pop("101")
    fake.states["102"] = BatchState.CANCELLED
    rows = refresh(backend, backend.list_batch_jobs(), warnings.append)
    assert [r.state for r in rows] == [B.GONE, B.CANCELLED]
    fake.asked.clear()
    refresh(backend, backend.list_batch_jobs(), warnings.append)
    assert fake.asked == []  # both ended: the scheduler is not asked again
    assert backend.get_batch_job(second.id).state is B.CANCELLED


def test_a_row_left_submitting_is_found_by_name(fake: FakeScheduler) -> None:
    backend = MemoryBackend()
    row = backend.create_batch_job(
        BatchJobCreate(scheduler="fake", num_nodes=1, wall_time_minutes=5, job_mode="mpi")
    )
    fake.named[batch_job_name(row.id)] = ["555"]
    fake.states["555"] = BatchState.RUNNING
    (got,) = refresh(backend, backend.list_batch_jobs(), warnings.append)
    assert (got.scheduler_id, got.state) == ("555", B.RUNNING)
    assert "found by name" in backend.get_batch_job(row.id).status_message


def test_a_row_left_submitting_that_no_job_has_is_given_up_on_after_a_while(
    fake: FakeScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MemoryBackend()
    row = backend.create_batch_job(
        BatchJobCreate(scheduler="fake", num_nodes=1, wall_time_minutes=5, job_mode="mpi")
    )
    (young,) = refresh(backend, backend.list_batch_jobs(), warnings.append)
    assert young.state is B.SUBMITTING  # a submit-launch may still be under way
    old = backend.get_batch_job(row.id)
    old = old.model_copy(
        update={"created_at": old.created_at - timedelta(seconds=RECONCILE_AFTER_SECONDS + 1)}
    )
    (got,) = refresh(backend, [old], warnings.append)
    assert got.state is B.SUBMIT_FAILED
    assert "never reached the fake scheduler" in got.status_message


def test_a_scheduler_that_cannot_be_asked_leaves_rows_as_they_are(
    fake: FakeScheduler, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = MemoryBackend()
    row = backend.create_batch_job(
        BatchJobCreate(scheduler="fake", num_nodes=1, wall_time_minutes=5, job_mode="mpi")
    )
    backend.update_batch_job(row.id, BatchJobUpdate(scheduler_id="9", state=B.QUEUED))

    def broken(ids: Sequence[str]) -> dict[str, BatchState]:
        raise SchedulerError("squeue failed: down")

    fake.status = broken  # type: ignore[method-assign]
    (got,) = refresh(backend, backend.list_batch_jobs(), warnings.append)
    assert got.state is B.QUEUED
    assert warnings == ["cannot ask the fake scheduler: squeue failed: down"]


def test_the_batch_job_id_comes_from_the_first_scheduler_variable_set() -> None:
    assert batch_job_id({}) is None
    assert batch_job_id({"PBS_JOBID": "12.pbs", "LSB_JOBID": "3"}) == "12.pbs"
    assert batch_job_id({"SLURM_JOB_ID": "7", "FLUX_JOB_ID": "f1"}) == "7"
    assert batch_job_id({"SLURM_JOB_ID": " ", "COBALT_JOBID": "88"}) == "88"


def test_a_submission_whose_answers_are_lost_is_recorded_once(
    fake: FakeScheduler, tmp_path: Path
) -> None:
    """Every other answer lost after the call took effect: the retrying Backend repeats the
    create with its client key, so one row, one submission."""
    from balsam.backends.retry import retrying
    from balsam.testing.lossy import LossyBackend

    memory = MemoryBackend()
    lossy = LossyBackend(memory, loss=0.5, seed=3)
    backend = retrying(lossy, sleep=lambda _s: None)
    for _ in range(4):
        submit_recorded(backend, fake, launch(tmp_path))
    assert lossy.lost["create_batch_job"] + lossy.lost["update_batch_job"] > 0
    rows = memory.list_batch_jobs()
    assert len(rows) == len(fake.submitted) == 4
    assert {r.state for r in rows} == {B.QUEUED}
    assert [r.scheduler_id for r in rows] == ["101", "102", "103", "104"]

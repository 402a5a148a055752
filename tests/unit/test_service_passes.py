"""The service's passes (balsam.site.service.ElasticService) on the in-memory Backend and
scheduler: what it submits and withdraws, how it backs off, what it reports, and that an error
in a pass never ends it. The real runs are tests/e2e/test_service.py and test_service_slurm.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from balsam.batch_settings import QueueSettings, ServiceSettings
from balsam.config import Site, SiteSettings
from balsam.domain.batchjobs import BatchJobState
from balsam.errors import ConfigError
from balsam.platform.schedulers import BatchState
from balsam.schemas import AppCreate, JobCreate
from balsam.schemas.queries import JobQuery
from balsam.schemas.service import SERVICE_LOCK
from balsam.site.service import ElasticService, blocked_queues
from balsam.testing import MemoryBackend, MemoryScheduler

B = BatchJobState


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)  # the rows are stamped with the real time

    def __call__(self) -> datetime:
        return self.now


def make(
    tmp_path: Path, **service: object
) -> tuple[ElasticService, MemoryBackend, MemoryScheduler, Clock]:
    settings = SiteSettings(
        queues={"debug": QueueSettings(max_nodes=4, max_wall_time_minutes=60, max_queued_jobs=2)},
        service=ServiceSettings(**service),  # type: ignore[arg-type]
    )
    backend = MemoryBackend()
    backend.create_app(AppCreate(name="A", executable="true"))
    scheduler = MemoryScheduler()
    clock = Clock()
    service_ = ElasticService(Site(tmp_path, settings), backend, scheduler, "me", clock)
    return service_, backend, scheduler, clock


def jobs(backend: MemoryBackend, count: int, **fields: object) -> None:
    backend.create_jobs(
        [JobCreate(name=f"j{i}", application="A", **fields) for i in range(count)]  # type: ignore[arg-type]
    )


def kill_all(backend: MemoryBackend) -> None:
    """End the backlog: every job killed."""
    for job in backend.query_jobs(JobQuery()):
        backend.kill_jobs(job.job_id)


def test_a_backlog_gets_launchers_up_to_the_queue_limit_recorded_with_the_reason(
    tmp_path: Path,
) -> None:
    service, backend, scheduler, _clock = make(tmp_path)
    jobs(backend, 10)
    report = service.one_pass()
    rows = backend.list_batch_jobs()
    assert [(r.queue, r.num_nodes, r.state) for r in rows] == [("debug", 4, B.QUEUED)] * 2
    assert len(scheduler.in_state(BatchState.QUEUED)) == 2
    assert len(report.submitted) == 2 and "node(s) of backlog" in report.submitted[0]
    assert report.errors == []
    # The queue is full: the next pass adds none.
    again = service.one_pass()
    assert again.submitted == [] and len(backend.list_batch_jobs()) == 2


def test_queued_launchers_are_withdrawn_once_the_backlog_is_gone(tmp_path: Path) -> None:
    service, backend, scheduler, _clock = make(tmp_path)
    jobs(backend, 2)
    service.one_pass()
    (row,) = backend.list_batch_jobs()
    kill_all(backend)
    report = service.one_pass()
    assert len(report.withdrawn) == 1
    withdrawn = backend.get_batch_job(row.id)
    assert withdrawn.state is B.CANCELLED
    assert withdrawn.status_message.startswith("withdrawn by the service: not needed")
    assert scheduler.jobs[withdrawn.scheduler_id or ""].state is BatchState.CANCELLED
    assert service.one_pass().submitted == []  # and nothing is resubmitted


def test_a_running_launcher_is_never_withdrawn(tmp_path: Path) -> None:
    service, backend, scheduler, _clock = make(tmp_path)
    jobs(backend, 2)
    service.one_pass()
    (row,) = backend.list_batch_jobs()
    scheduler.start(row.scheduler_id or "")
    kill_all(backend)
    report = service.one_pass()
    assert report.withdrawn == []
    assert backend.get_batch_job(row.id).state is B.RUNNING


def test_a_refusing_scheduler_is_recorded_and_backed_off_doubling(tmp_path: Path) -> None:
    service, backend, scheduler, clock = make(
        tmp_path, submit_backoff_seconds=60, max_backoff_seconds=600
    )
    jobs(backend, 1)
    scheduler.refusal = "sbatch: error: QOSMaxSubmitJobPerUserLimit"
    first = service.one_pass()
    assert first.errors and "QOSMaxSubmitJobPerUserLimit" in first.errors[0]
    (row,) = backend.list_batch_jobs()
    assert row.state is B.SUBMIT_FAILED and "QOSMaxSubmitJobPerUserLimit" in row.status_message

    def after_last_refusal(seconds: float) -> None:
        clock.now = backend.list_batch_jobs()[-1].updated_at + timedelta(seconds=seconds)

    after_last_refusal(30)
    held = service.one_pass()
    assert len(backend.list_batch_jobs()) == 1
    assert held.blocked and held.blocked[0].startswith("debug: 1 refusal(s) in a row")
    after_last_refusal(61)  # the first pause (60 s) is over: tried again, refused again
    service.one_pass()
    assert len(backend.list_batch_jobs()) == 2
    after_last_refusal(90)  # two refusals in a row: 120 s
    service.one_pass()
    assert len(backend.list_batch_jobs()) == 2
    scheduler.refusal = None
    after_last_refusal(121)
    service.one_pass()
    rows = backend.list_batch_jobs()
    assert len(rows) == 3 and rows[-1].state is B.QUEUED


def test_backoff_is_read_from_the_rows_so_a_new_service_keeps_it(tmp_path: Path) -> None:
    service, backend, scheduler, clock = make(tmp_path)
    jobs(backend, 1)
    scheduler.refusal = "refused"
    service.one_pass()
    fresh = ElasticService(service.site, backend, scheduler, "other", clock)
    assert fresh.one_pass().submitted == []
    assert blocked_queues(backend.list_batch_jobs(), clock.now, service.settings)


def test_an_error_in_a_pass_is_reported_and_the_next_pass_runs(tmp_path: Path) -> None:
    service, backend, scheduler, _clock = make(tmp_path)
    jobs(backend, 1)
    service.one_pass()
    scheduler.down = "squeue: error: slurm_load_jobs error: Unable to contact slurm controller"
    failed = service.one_pass()
    assert any("Unable to contact" in e for e in failed.errors)
    scheduler.down = None
    assert service.one_pass().errors == []


def test_an_unexpected_exception_in_a_pass_does_not_end_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, _backend, _scheduler, _clock = make(tmp_path)

    def broken(*_args: object) -> object:
        raise KeyError("bug")

    monkeypatch.setattr(service, "_observe", broken)
    report = service.one_pass()
    assert report.errors == ["KeyError: 'bug'"]


def test_run_renews_the_lock_with_the_report_and_stops_on_request(tmp_path: Path) -> None:
    service, backend, _scheduler, _clock = make(tmp_path, period_seconds=0.01, lock_seconds=1)
    backend.acquire_service_lock(SERVICE_LOCK, "me", hostname="h", pid=1, lease_seconds=5)
    jobs(backend, 1)
    backend.request_service_stop(SERVICE_LOCK)
    service.run()  # one pass, then the stop request in the renewed lock ends it
    lock = backend.get_service_lock(SERVICE_LOCK)
    assert lock is not None
    report = json.loads(lock.status)
    assert report["submitted"] and report["recent"][0].endswith(report["submitted"][0])


def test_a_service_whose_queue_is_not_listed_is_refused(tmp_path: Path) -> None:
    settings = SiteSettings(
        queues={"debug": QueueSettings()}, service=ServiceSettings(queues=["prod"])
    )
    with pytest.raises(ConfigError, match=r"service\.queues names 'prod'"):
        ElasticService(Site(tmp_path, settings), MemoryBackend(), MemoryScheduler(), "me")

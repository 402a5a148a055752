"""``campaign_report`` uses only the Backend protocol: the same campaign gives the same figures
on SQLite, PostgreSQL, the in-memory fake and through the edge service (in process and on a
real uvicorn). Runs carry the launcher's own times, so the node figures are known exactly;
several pages (``page_size=2``) make the keyset paging cross page boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from balsam.api.analytics import campaign_report
from balsam.backends.base import Backend
from balsam.domain.states import JobState
from balsam.schemas import AppCreate, ClaimRequest, JobCreate, JobQuery, StateUpdate

S = JobState


def test_the_report_is_the_same_on_every_backend(backend: Backend) -> None:
    backend.create_app(AppCreate(name="A", executable="true"))
    specs = [
        JobCreate(
            name=f"j{i}", workflow="v" if i == 4 else "w", application="A", num_nodes=1 + i % 2
        )
        for i in range(5)
    ]
    jobs = backend.create_jobs(specs)
    session = backend.open_session("t", "h", 1).id
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    # Job i runs from t0 + 10 i for 10 + i seconds; job 3 fails with exit code 4.
    for i, job in enumerate(jobs[:4]):
        claim = ClaimRequest(job_ids=[job.job_id], max_nodes=2, claim_seq=10 * i + 1)
        assert backend.claim_jobs(session, claim)
        start = t0 + timedelta(seconds=10 * i)
        end = start + timedelta(seconds=10 + i)
        last = S.RUN_ERROR if i == 3 else S.RUN_DONE
        updates = [
            StateUpdate(job_id=job.job_id, state=S.RUNNING, timestamp=start, seq=10 * i + 2),
            StateUpdate(
                job_id=job.job_id, state=last, timestamp=end, seq=10 * i + 3,
                return_code=4 if i == 3 else 0,
            ),
        ]  # fmt: skip
        assert all(r.ok for r in backend.record_updates(session, updates))
    report = campaign_report(backend, page_size=2, nodes=2)
    assert (report.jobs, report.runs) == (5, 4)
    # Node-seconds: 1 x 10 + 2 x 11 + 1 x 12 + 2 x 13.
    assert report.busy_node_hours == pytest.approx(70 / 3600, abs=1e-6)
    running = next(r for r in report.state_times.rows() if r.state == "RUNNING")
    assert (running.count, running.total_seconds) == (4, pytest.approx(46))
    assert [(r.cause, r.jobs) for r in report.error_causes.rows()] == [("exit code 4", 1)]
    assert report.state_counts == backend.count_by_state(JobQuery())
    progress = {r.workflow: (r.total, r.finished) for r in report.workflows.rows()}
    assert progress == {"v": (1, 0), "w": (4, 3)}

"""``Job.objects.wait`` and ``Job.objects.as_completed`` on jobs a real launcher runs.

Every test runs on SQLite and PostgreSQL (the ``site`` fixture); launchers are ``balsam
launcher`` subprocesses. The last tests change a job from another process and check that the
waiter wakes soon after, on PostgreSQL through NOTIFY (the marker re-check is pushed out to a
minute there, so only a notification can explain a quick wake).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from balsam.api import ALL_COMPLETED, FIRST_COMPLETED, Job, close_default_backend
from balsam.api.jobs import JobDoesNotExist
from balsam.backends.base import Backend
from balsam.config import Site
from balsam.errors import ValidationError
from balsam.services import changes
from launchkit import S, add_app, add_jobs, start_launcher, stop
from waiting import wait_until


@pytest.fixture(autouse=True)
def _close_api_backend() -> Iterator[None]:
    yield
    close_default_backend()


def _shell_jobs(be: Backend, *scripts: str, workflow: str = "test") -> list[Job]:
    add_app(be, "Sh", "/bin/sh") if not be.list_apps() else None
    outs = add_jobs(
        be,
        "Sh",
        *(
            {
                "name": f"j{i}",
                "args": f"-c '{s}'",
                "workflow": workflow,
                "max_error_retries": 0,
                "node_packing_count": 4,
            }
            for i, s in enumerate(scripts)
        ),
    )
    return [Job.objects.get(job_id=o.job_id) for o in outs]


def test_wait_returns_every_job_once_a_launcher_ended_them(site: Site, backend_of: Backend) -> None:
    jobs = _shell_jobs(backend_of, "exit 0", "exit 0", "exit 3")
    launcher = start_launcher("--consume-all", "--job-mode", "serial", quiet=True)
    try:
        # Objects and ids alike; the objects given are the ones returned, brought up to date.
        done, not_done = Job.objects.wait([jobs[0], jobs[1].job_id, jobs[2]], timeout=120)
    finally:
        stop(launcher)
    assert not_done == []
    assert [j.job_id for j in done] == [j.job_id for j in jobs]
    assert done[0] is jobs[0] and done[2] is jobs[2]
    assert [j.state for j in done] == [S.JOB_FINISHED, S.JOB_FINISHED, S.FAILED]
    assert all(j.state is backend_of.get_job(str(j.job_id)).state for j in done)


def test_as_completed_yields_each_job_as_it_ends(site: Site, backend_of: Backend) -> None:
    slow, quick = _shell_jobs(backend_of, "sleep 4", "exit 0")
    launcher = start_launcher("--consume-all", "--job-mode", "serial", quiet=True)
    try:
        seen = [(j.job_id, j.state) for j in Job.objects.as_completed([slow, quick], timeout=120)]
    finally:
        stop(launcher)
    assert seen == [(quick.job_id, S.JOB_FINISHED), (slow.job_id, S.JOB_FINISHED)]


def test_first_completed_returns_with_the_rest_not_done(site: Site, backend_of: Backend) -> None:
    (quick,) = _shell_jobs(backend_of, "exit 0")
    (never,) = _shell_jobs(backend_of, "exit 0", workflow="not-launched")
    launcher = start_launcher("--wf-filter", "test", "--job-mode", "serial", quiet=True)
    try:
        done, not_done = Job.objects.wait([never, quick], timeout=120, return_when=FIRST_COMPLETED)
    finally:
        stop(launcher)
    assert done == [quick] and done[0].state is S.JOB_FINISHED
    assert not_done == [never] and not_done[0].state is S.PREPROCESSED


def test_a_timeout_ends_the_wait_with_nothing_changed(site: Site, backend_of: Backend) -> None:
    (job,) = _shell_jobs(backend_of, "exit 0")  # no launcher: it never runs
    started = time.monotonic()
    done, not_done = Job.objects.wait([job.job_id], timeout=1, return_when=ALL_COMPLETED)
    assert time.monotonic() - started >= 1
    assert done == [] and [j.job_id for j in not_done] == [job.job_id]
    with pytest.raises(TimeoutError, match="1 of 1 jobs have not completed"):
        list(Job.objects.as_completed([job], timeout=0.5))
    assert backend_of.get_job(str(job.job_id)).state is S.PREPROCESSED


def test_bad_arguments_are_refused(site: Site, backend_of: Backend) -> None:
    (job,) = _shell_jobs(backend_of, "exit 0")
    with pytest.raises(ValidationError, match="return_when"):
        Job.objects.wait([job], return_when="FIRST_EXCEPTION")
    with pytest.raises(ValidationError, match="timeout"):
        Job.objects.wait([job], timeout=-1)
    with pytest.raises(JobDoesNotExist):
        Job.objects.wait(["0" * 8 + "-0000-4000-8000-" + "0" * 12], timeout=1)


# ---- woken by another process ------------------------------------------------------------------

KILLER = """
import sys, time
from balsam.backends.factory import open_backend
from balsam.config import load_site
from balsam.domain.states import JobState
be = open_backend(load_site(sys.argv[1]))
for line in sys.stdin:
    be.set_state(line.strip(), JobState.USER_KILLED, "killed by the other process")
    print(time.monotonic(), flush=True)
"""


def _listening(site: Site) -> bool:
    """Whether a session of the site's PostgreSQL is blocked on LISTEN balsam_jobs."""
    engine = create_engine(site.database_url().replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN balsam_jobs%'"
                    " AND datname = current_database()"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return bool(found)


def test_a_change_in_another_process_wakes_the_wait(
    site: Site, backend_of: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five tries: each wait must return well under a second after the other process's commit."""
    postgres = site.settings.database.kind != "sqlite"
    if postgres:
        # Only a notification can wake it quickly now: the marker re-check waits a minute.
        monkeypatch.setattr(changes, "RECHECK_SECONDS", 60.0)
    jobs = _shell_jobs(backend_of, *["exit 0"] * 5, workflow="never-launched")
    killer = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(site.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert killer.stdin is not None and killer.stdout is not None
    delays = []
    try:
        for job in jobs:
            woke: list[float] = []

            def waiter(job: Job = job, woke: list[float] = woke) -> None:
                Job.objects.wait([job], timeout=120)
                woke.append(time.monotonic())

            thread = threading.Thread(target=waiter)
            thread.start()
            if postgres:
                wait_until(lambda: _listening(site), what="the waiter to LISTEN")
            killer.stdin.write(f"{job.job_id}\n")
            killer.stdin.flush()
            committed = float(killer.stdout.readline())
            thread.join(timeout=120)
            assert woke, "the wait did not return"
            delays.append(woke[0] - committed)
    finally:
        killer.communicate(timeout=30)
    assert all(j.state is S.USER_KILLED for j in jobs)
    assert max(delays) < 0.5, delays
    print(f"wake-up delays: median {statistics.median(delays) * 1000:.1f} ms, {delays}")

"""``balsam service start|stop|status`` through the real command, on the ``local`` scheduler.

The service runs as a real background process holding the database's lock; its launchers are
real ``balsam launcher`` processes on this host. What a user checks: the jobs finish, the
batch jobs it submitted are listed with why, a second service is refused, a killed one is
taken over, ``stop`` ends it, and nothing is submitted once the work is done. The Slurm runs
(launchers queued, then withdrawn) are in tests/e2e/test_service_slurm.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import init_site, open_backend
from balsam.batch_settings import QueueSettings, ServiceSettings
from balsam.config import Site, load_settings, save_settings
from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import JobQuery
from balsam.schemas.service import SERVICE_LOCK
from launchkit import gone
from waiting import wait_until

BALSAM = str(Path(sys.executable).parent / "balsam")


@pytest.fixture
def wf(tmp_path: Path) -> Iterator[tuple[Site, Backend]]:
    """A workflow database whose service submits one-node local launchers, with an app."""
    site = init_site(tmp_path / "wf")
    current = load_settings(site.path)
    current.queues = {"local": QueueSettings(max_nodes=1, max_wall_time_minutes=10)}
    current.service = ServiceSettings(
        period_seconds=0.5, lock_seconds=3, wall_time_minutes=5, job_mode="serial"
    )
    current.launcher = current.launcher.model_copy(
        update={"heartbeat_seconds": 0.5, "lease_seconds": 3}
    )
    save_settings(site.path, current)
    backend = open_backend(site)
    backend.create_app(AppCreate(name="Echo", executable="echo done"))
    yield site, backend
    lock = backend.get_service_lock(SERVICE_LOCK)
    if lock is not None and not gone(lock.pid):
        os.kill(lock.pid, signal.SIGKILL)
    backend.close()


def balsam(site: Site, *argv: str) -> subprocess.CompletedProcess[str]:
    """``balsam ARGV`` on ``site``, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_CLI_TRACEBACK"}
    return subprocess.run(
        [BALSAM, *argv],
        env=env | {"BALSAM_DB_PATH": str(site.path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def add_jobs(backend: Backend, count: int) -> None:
    """``count`` jobs packed four to a node: up to four need one launcher of one node."""
    backend.create_jobs(
        [
            JobCreate(name=f"j{i}", workflow="w", application="Echo", node_packing_count=4)
            for i in range(count)
        ]
    )


def all_finished(backend: Backend) -> bool:
    jobs = backend.query_jobs(JobQuery())
    return bool(jobs) and all(j.state is JobState.JOB_FINISHED for j in jobs)


def report(backend: Backend) -> dict[str, object]:
    lock = backend.get_service_lock(SERVICE_LOCK)
    assert lock is not None and lock.status, "the service has not reported a pass"
    found: dict[str, object] = json.loads(lock.status)
    return found


def passes_after(backend: Backend, count: int) -> None:
    """Wait until the service has reported ``count`` more passes."""
    seen: list[object] = []

    def another() -> bool:
        lock = backend.get_service_lock(SERVICE_LOCK)
        stamp = lock.heartbeat if lock else None
        if stamp is not None and (not seen or seen[-1] != stamp):
            seen.append(stamp)
        return len(seen) > count

    wait_until(another, timeout=60)


def test_the_service_submits_a_launcher_for_waiting_jobs_and_nothing_once_they_are_done(
    wf: tuple[Site, Backend],
) -> None:
    site, backend = wf
    add_jobs(backend, 3)
    started = balsam(site, "service", "start")
    assert started.returncode == 0, started.stderr
    assert "Started the service" in started.stdout
    wait_until(lambda: all_finished(backend), timeout=90)
    rows = backend.list_batch_jobs()
    assert len(rows) == 1, rows
    assert (rows[0].scheduler, rows[0].queue, rows[0].num_nodes) == ("local", "local", 1)
    passes_after(backend, 4)
    assert len(backend.list_batch_jobs()) == 1  # nothing resubmitted for work that is done
    status = balsam(site, "service", "status")
    assert status.returncode == 0, status.stderr
    assert "service: running" in status.stdout
    assert "latest decisions:" in status.stdout and "submitted batch job 1" in status.stdout
    assert "node(s) of backlog not covered" in status.stdout
    log_text = (site.log_dir / "service.log").read_text()
    assert "submitted batch job 1 (local" in log_text and "because" in log_text
    stopped = balsam(site, "service", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert backend.get_service_lock(SERVICE_LOCK) is None
    assert balsam(site, "service", "status").stdout.strip() == "The service is not running."


def test_a_second_service_is_refused_in_one_line_naming_the_first(
    wf: tuple[Site, Backend],
) -> None:
    site, backend = wf
    assert balsam(site, "service", "start").returncode == 0
    lock = backend.get_service_lock(SERVICE_LOCK)
    assert lock is not None
    again = balsam(site, "service", "start")
    assert again.returncode != 0
    lines = again.stderr.splitlines()
    assert len(lines) == 1 and "already runs" in lines[0] and f"pid {lock.pid}" in lines[0]
    foreground = balsam(site, "service", "start", "--foreground")
    assert foreground.returncode != 0 and "already runs" in foreground.stderr
    held = backend.get_service_lock(SERVICE_LOCK)
    assert held is not None and held.holder == lock.holder


def test_a_service_killed_with_sigkill_is_taken_over_and_its_work_carries_on(
    wf: tuple[Site, Backend],
) -> None:
    site, backend = wf
    assert balsam(site, "service", "start").returncode == 0
    first = backend.get_service_lock(SERVICE_LOCK)
    assert first is not None
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: gone(first.pid), timeout=30)
    # Its pid is gone on this host: the next start takes the lock at once, not after expiry.
    restarted = balsam(site, "service", "start")
    assert restarted.returncode == 0, restarted.stderr
    second = backend.get_service_lock(SERVICE_LOCK)
    assert second is not None and second.holder != first.holder and second.pid != first.pid
    add_jobs(backend, 2)
    wait_until(lambda: all_finished(backend), timeout=90)
    assert len(backend.list_batch_jobs()) == 1


def test_stop_through_the_database_ends_a_service_it_cannot_signal(
    wf: tuple[Site, Backend],
) -> None:
    """``stop`` from another host cannot signal: the request in the lock reaches the service."""
    site, backend = wf
    assert balsam(site, "service", "start").returncode == 0
    lock = backend.get_service_lock(SERVICE_LOCK)
    assert lock is not None
    backend.request_service_stop(SERVICE_LOCK)
    wait_until(lambda: gone(lock.pid), timeout=30)
    assert backend.get_service_lock(SERVICE_LOCK) is None
    assert "stop requested through the database" in (site.log_dir / "service.log").read_text()


def test_jobs_no_queue_can_run_are_reported_and_never_asked_for(
    wf: tuple[Site, Backend],
) -> None:
    site, backend = wf
    backend.create_jobs(
        [
            JobCreate(name="wide", workflow="w", application="Echo", num_nodes=4),
            JobCreate(name="long", workflow="w", application="Echo", wall_time_minutes=600),
        ]
    )
    assert balsam(site, "service", "start").returncode == 0
    passes_after(backend, 2)
    found = report(backend)
    unrunnable = "\n".join(str(item) for item in found["unrunnable"])  # type: ignore[attr-defined]
    assert (
        "1 job(s) of 4 node(s), 1 minutes: needs 4 node(s); the largest queue (local) takes 1"
        in (unrunnable)
    )
    assert "needs 600 minutes" in unrunnable and "local allows 10" in unrunnable
    assert backend.list_batch_jobs() == []
    status = balsam(site, "service", "status").stdout
    assert "jobs no queue can run:" in status


def test_a_service_with_no_queue_is_one_line_and_does_not_start(tmp_path: Path) -> None:
    site = init_site(tmp_path / "bare")
    done = balsam(site, "service", "start")
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "the service has no queue to submit to" in lines[0], done.stderr
    backend = open_backend(site)
    try:
        assert backend.get_service_lock(SERVICE_LOCK) is None
    finally:
        backend.close()


def test_stop_and_status_when_no_service_runs_say_so(wf: tuple[Site, Backend]) -> None:
    site, _backend = wf
    for command in ("stop", "status"):
        done = balsam(site, "service", command)
        assert done.returncode == 0 and done.stdout.strip() == "The service is not running."

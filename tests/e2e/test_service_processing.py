"""``service.processing``: the service's own launcher does the steps around runs.

Real processes on the ``local`` scheduler: ``balsam service start`` in the background, its
processing launcher (``balsam launcher --processing-only``) and the compute launchers it
submits. What a user checks: every job finishes, each preprocess and postprocess ran in the
service's processing launcher and each run in a compute launcher (the launchers' logs say
which did what), and the processing launcher never outlives its service, stopped or killed.
"""

from __future__ import annotations

import json
import os
import re
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


@pytest.fixture
def wf(tmp_path: Path) -> Iterator[tuple[Site, Backend]]:
    """A database whose service keeps a processing launcher and submits local launchers."""
    site = init_site(tmp_path / "wf")
    current = load_settings(site.path)
    current.queues = {"local": QueueSettings(max_nodes=1, max_wall_time_minutes=10)}
    current.service = ServiceSettings(
        period_seconds=0.5,
        lock_seconds=3,
        wall_time_minutes=5,
        job_mode="serial",
        processing=True,
    )
    current.launcher = current.launcher.model_copy(
        update={"heartbeat_seconds": 0.5, "lease_seconds": 3}
    )
    save_settings(site.path, current)
    backend = open_backend(site)
    backend.create_app(
        AppCreate(
            name="Steps", executable="echo run", preprocess="echo pre", postprocess="echo post"
        )
    )
    yield site, backend
    lock = backend.get_service_lock(SERVICE_LOCK)
    if lock is not None and not gone(lock.pid):
        os.kill(lock.pid, signal.SIGKILL)
    backend.close()


BALSAM = str(Path(sys.executable).parent / "balsam")


def balsam(site: Site, *argv: str) -> subprocess.CompletedProcess[str]:
    """``balsam ARGV`` on ``site``'s database."""
    env = os.environ | {"BALSAM_DB_PATH": str(site.path)}
    return subprocess.run(
        [BALSAM, *argv], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def report(backend: Backend) -> dict[str, object]:
    lock = backend.get_service_lock(SERVICE_LOCK)
    return json.loads(lock.status) if lock is not None and lock.status else {}


def processing_pid(backend: Backend) -> int | None:
    """The pid of the processing launcher, as the service's last pass reported it."""
    match = re.search(r"\(pid (\d+)\)", str(report(backend).get("processing", "")))
    return int(match.group(1)) if match else None


def moves(log_file: Path) -> set[tuple[str, str]]:
    """(job id prefix, state) of each state change a launcher's log records."""
    found = re.findall(
        r"\[([0-9a-f]{8})\] balsam\.launcher\.jobflow: -> (\w+)", log_file.read_text()
    )
    return set(found)


def test_pre_and_postprocessing_run_in_the_service_and_runs_on_the_compute_launchers(
    wf: tuple[Site, Backend],
) -> None:
    site, backend = wf
    jobs = backend.create_jobs(
        [
            JobCreate(name=f"s{i}", workflow="w", application="Steps", node_packing_count=4)
            for i in range(4)
        ]
    )
    assert {j.state for j in jobs} == {JobState.STAGED_IN}
    started = balsam(site, "service", "start")
    assert started.returncode == 0, started.stderr
    wait_until(
        lambda: {j.state for j in backend.query_jobs(JobQuery())} == {JobState.JOB_FINISHED},
        timeout=90,
        what=lambda: f"the jobs to finish: {[j.state for j in backend.query_jobs(JobQuery())]}",
    )
    pid = processing_pid(backend)
    assert pid is not None, report(backend)
    logs = {int(p.stem.rsplit("_", 1)[1]): moves(p) for p in site.log_dir.glob("launcher_*.log")}
    processing, compute = logs.pop(pid), logs
    assert compute, "no compute launcher ran"
    ran = set().union(*compute.values())
    for job in jobs:
        short = job.job_id[:8]
        assert {(short, "PREPROCESSED"), (short, "POSTPROCESSED")} <= processing
        assert (short, "RUNNING") not in processing
        assert (short, "RUNNING") in ran
        assert (short, "PREPROCESSED") not in ran and (short, "POSTPROCESSED") not in ran
        log_text = (site.job_dir(job.working_directory) / "postprocess.log").read_text()
        assert log_text == "# Balsam Postprocessor: echo post\npost\n"
    status = balsam(site, "service", "status")
    assert f"processing launcher running (pid {pid})" in status.stdout
    # Stopping the service stops its processing launcher.
    assert balsam(site, "service", "stop").returncode == 0
    wait_until(lambda: gone(pid), timeout=30, what="the processing launcher to stop")


def test_a_processing_launcher_never_outlives_a_killed_service(wf: tuple[Site, Backend]) -> None:
    site, backend = wf
    assert balsam(site, "service", "start").returncode == 0
    pid = wait_until(lambda: processing_pid(backend), timeout=30, what="the processing launcher")
    lock = backend.get_service_lock(SERVICE_LOCK)
    assert lock is not None
    os.kill(lock.pid, signal.SIGKILL)
    wait_until(lambda: gone(pid), timeout=30, what="the orphaned processing launcher to exit")
    # A new service takes over and starts its own.
    assert balsam(site, "service", "start").returncode == 0
    wait_until(lambda: processing_pid(backend) not in (None, pid), timeout=30, what="a new one")

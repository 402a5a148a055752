"""What happens to a campaign when Slurm ends its allocations: ``submit-launch`` on a real Slurm.

A real Slurm cluster (tests/slurmcluster.py: munged, slurmctld and four slurmd nodes on this
host) runs for the module. Launchers are submitted the way users submit them, with
``balsam submit-launch``; the tests then do to the batch jobs what a machine does to them —
the wall time runs out, an operator or the user scancels one, two allocations overlap — and
check what a user would: every job ends JOB_FINISHED exactly once, under the batch job the
history names.

Without Slurm installed these tests fail (``apt-get install slurm-wlm munge``); they never
skip.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import open_backend
from balsam.config import Site
from balsam.platform.schedulers.slurm import BatchState, SlurmScheduler
from balsam.schemas.jobs import JobOut
from launchkit import (
    BALSAM,
    S,
    add_app,
    add_jobs,
    all_jobs,
    run_pid,
    settings,
    slurm_scheduled_site,
)
from slurmcluster import SlurmCluster, start_cluster
from waiting import wait_until

#: A job that outlives its first allocation and is quick once rerun: the first run leaves a
#: marker in the working directory (which a rerun keeps) and then sleeps far past the wall time.
SLOW_THEN_QUICK = "sh -c 'if [ -e started ]; then echo second; else touch started; sleep 600; fi'"


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    cluster = start_cluster(nodes=4, cpus_per_node=2)
    yield cluster
    cluster.stop()


@pytest.fixture
def site_backend(
    tmp_path_factory: pytest.TempPathFactory, slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Site, Backend]]:
    """A site whose launchers go to the cluster; short leases so a dead one is noticed soon."""
    path = tmp_path_factory.mktemp("scenarios") / "wf"
    site = slurm_scheduled_site(path, slurm.conf, monkeypatch, mpi_launcher_args=["--mpi=pmi2"])
    settings(
        site,
        launcher={"heartbeat_seconds": 1.0, "lease_seconds": 6.0, "kill_grace_seconds": 3.0},
    )
    backend = open_backend(site)
    yield site, backend
    backend.close()
    slurm.run("scancel", "--user", "root")


def submit_launch(*args: str) -> str:
    """``balsam submit-launch ARGS``; the Slurm id of the batch job it submitted."""
    done = subprocess.run(
        [BALSAM, "submit-launch", "-A", "proj", "-q", "debug", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[2]


def wait_batch_ended(slurm: SlurmCluster, batch_id: str, timeout: float = 150) -> BatchState:
    """Wait until Slurm no longer holds ``batch_id`` queued or running; its last state."""
    scheduler = SlurmScheduler()
    live = (BatchState.QUEUED, BatchState.RUNNING)
    wait_until(
        lambda: scheduler.status([batch_id])[batch_id] not in live,
        timeout,
        interval=0.5,
        what=lambda: f"batch job {batch_id} to end: {slurm.diagnostics()}",
    )
    return scheduler.status([batch_id])[batch_id]


def runs_by_batch(backend: Backend, job_id: str) -> list[str]:
    """The batch job named by each RUNNING event of the job, in order."""
    found = []
    for event in backend.history(job_id):
        if event.to_state == S.RUNNING:
            match = re.search(r"batch job (\d+)\)", event.message)
            assert match, event.message
            found.append(match.group(1))
    return found


def finished_once(backend: Backend, job_id: str) -> bool:
    return [e.to_state for e in backend.history(job_id)].count(S.JOB_FINISHED) == 1


def running(backend: Backend, count: int) -> bool:
    return sum(j.state is S.RUNNING for j in all_jobs(backend)) == count


def long_jobs(backend: Backend, prefix: str, count: int) -> list[JobOut]:
    """``count`` jobs of SLOW_THEN_QUICK, two to a node."""
    add_app(backend, "Long", SLOW_THEN_QUICK)
    specs = (
        {"name": f"{prefix}{i}", "wall_time_minutes": 0, "node_packing_count": 2}
        for i in range(count)
    )
    return add_jobs(backend, "Long", *specs)


def start_running(backend: Backend, count: int, *args: str) -> str:
    """Submit a launcher; its batch job's id once ``count`` runs have started."""
    batch = submit_launch(*args, "--job-mode", "serial")
    wait_until(lambda: running(backend, count), 60, interval=0.3, what="the runs to start")
    return batch


def next_launcher_finishes(backend: Backend, jobs: list[JobOut], first: str) -> None:
    """A second launcher finishes every job, each run once under ``first`` and once under it."""
    second = submit_launch("-t", "3", "-n", "1", "--job-mode", "serial")
    wait_until(
        lambda: {j.state for j in all_jobs(backend)} == {S.JOB_FINISHED},
        120,
        interval=0.5,
        what=lambda: f"the jobs to finish: {[j.state for j in all_jobs(backend)]}",
    )
    for job in jobs:
        assert runs_by_batch(backend, job.job_id) == [first, second]
        assert finished_once(backend, job.job_id)


@pytest.mark.slow
def test_jobs_cut_off_by_the_wall_time_finish_under_the_next_launcher(
    slurm: SlurmCluster, site_backend: tuple[Site, Backend]
) -> None:
    _site, backend = site_backend
    jobs = long_jobs(backend, "long", 2)
    first = start_running(backend, 2, "-t", "1", "-n", "1")
    # The launcher ends the runs before Slurm ends the allocation: timeouts, to be rerun.
    assert wait_batch_ended(slurm, first) in (BatchState.FINISHED, BatchState.GONE)
    for job in jobs:
        after = backend.get_job(job.job_id)
        assert after.state is S.RESTART_READY and after.timeout_count == 1, after.state
    next_launcher_finishes(backend, jobs, first)


@pytest.mark.slow
def test_a_launcher_scancelled_mid_run_leaves_its_jobs_to_the_next_one(
    slurm: SlurmCluster, site_backend: tuple[Site, Backend]
) -> None:
    _site, backend = site_backend
    jobs = long_jobs(backend, "cut", 4)
    first = start_running(backend, 4, "-t", "5", "-n", "2")
    slurm.run("scancel", first)
    wait_batch_ended(slurm, first, timeout=60)
    # Nothing is left running in the name of a batch job that is gone.
    wait_until(
        lambda: not any(j.state is S.RUNNING for j in all_jobs(backend)),
        60,
        interval=0.5,
        what=lambda: f"the cut runs to be let go: {[j.state for j in all_jobs(backend)]}",
    )
    next_launcher_finishes(backend, jobs, first)


@pytest.mark.slow
def test_a_launcher_that_dies_without_a_word_is_recovered_from_its_expired_lease(
    slurm: SlurmCluster, site_backend: tuple[Site, Backend]
) -> None:
    """SIGKILL of the launcher and its runs, as when its node crashes: nothing is handed back."""
    site, backend = site_backend
    jobs = long_jobs(backend, "kill", 2)
    first = start_running(backend, 2, "-t", "5", "-n", "1")
    (launcher_log,) = (site.path / "log").glob("launcher_*.log")
    launcher_pid = int(launcher_log.stem.rsplit("_", 1)[1])
    os.kill(launcher_pid, signal.SIGKILL)
    for job in jobs:  # each run is its own process group, as the launcher starts it
        os.killpg(run_pid(backend, job.job_id), signal.SIGKILL)
    wait_batch_ended(slurm, first, timeout=60)
    # The jobs still say RUNNING: only the lease's expiry tells another launcher they are lost.
    assert all(j.state is S.RUNNING for j in all_jobs(backend))
    next_launcher_finishes(backend, jobs, first)
    for job in jobs:
        after = backend.get_job(job.job_id)
        assert (after.lost_count, after.timeout_count, after.error_count) == (1, 0, 0)


def test_two_overlapping_batch_jobs_share_the_database_and_run_each_job_once(
    slurm: SlurmCluster, site_backend: tuple[Site, Backend]
) -> None:
    _site, backend = site_backend
    add_app(backend, "Nap", "sleep 1")
    jobs = add_jobs(backend, "Nap", *({"name": f"nap{i}"} for i in range(16)))
    first = submit_launch("-t", "3", "-n", "1", "--job-mode", "serial")
    second = submit_launch("-t", "3", "-n", "1", "--job-mode", "serial")
    scheduler = SlurmScheduler()
    # Both allocations hold nodes at the same time.
    wait_until(
        lambda: set(scheduler.status([first, second]).values()) == {BatchState.RUNNING},
        60,
        interval=0.3,
        what=lambda: f"both batch jobs to run: {slurm.diagnostics()}",
    )
    wait_until(
        lambda: {j.state for j in all_jobs(backend)} == {S.JOB_FINISHED},
        120,
        interval=0.5,
        what=lambda: f"the jobs to finish: {[j.state for j in all_jobs(backend)]}",
    )
    ran_under: Counter[str] = Counter()
    for job in jobs:
        (batch,) = runs_by_batch(backend, job.job_id)
        ran_under[batch] += 1
        assert finished_once(backend, job.job_id)
    assert set(ran_under) == {first, second}, ran_under
    assert sum(ran_under.values()) == len(jobs)
    for batch in (first, second):
        assert wait_batch_ended(slurm, batch, timeout=60) in (BatchState.FINISHED, BatchState.GONE)

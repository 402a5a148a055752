"""``balsam submit-launch`` on a real Slurm: sbatch, the launcher in the allocation, the end.

A real Slurm cluster (tests/slurmcluster.py: munged, slurmctld and three slurmd nodes on this
host) runs for the module. The site's ``platform.scheduler`` is ``slurm``; the user types
``balsam submit-launch`` exactly as on a machine, and follows the batch job with the adapter's
own status call (squeue), as ``balsam ls queues`` will.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from balsam.backends.factory import open_backend
from balsam.config import Site
from balsam.platform.schedulers.slurm import BatchState, SlurmScheduler
from launchkit import (
    BALSAM,
    S,
    add_app,
    add_jobs,
    all_jobs,
    entered,
    job_dir,
    slurm_scheduled_site,
)
from slurmcluster import SlurmCluster, start_cluster
from waiting import wait_until


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    cluster = start_cluster(nodes=3, cpus_per_node=2)
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm_site(
    tmp_path_factory: pytest.TempPathFactory, slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> Site:
    path = tmp_path_factory.mktemp("slurm") / "wf"
    return slurm_scheduled_site(path, slurm.conf, monkeypatch, mpi_launcher_args=["--mpi=pmi2"])


def submit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BALSAM, "submit-launch", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_submit_launch_runs_the_jobs_in_a_slurm_allocation_which_then_ends(
    slurm_site: Site, slurm: SlurmCluster
) -> None:
    be = open_backend(slurm_site)
    try:
        add_app(be, "Where", "sh -c 'echo $SLURM_JOB_ID $SLURMD_NODENAME'")
        jobs = add_jobs(be, "Where", *({"name": f"w{i}"} for i in range(6)))
        done = submit("-A", "proj", "-q", "debug", "-t", "3", "-n", "2", "--job-mode", "serial")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("Submitted launch "), done.stdout
        batch_id = done.stdout.split()[2]
        scheduler = SlurmScheduler()
        wait_until(
            lambda: {j.state for j in all_jobs(be)} == {S.JOB_FINISHED},
            120,
            interval=0.5,
            what=lambda: f"the jobs to finish: {slurm.diagnostics()}",
        )
        # Every job ran inside that allocation, on its two nodes.
        seen = {
            tuple(job_dir(slurm_site, j).joinpath(f"{j.name}.out").read_text().split())
            for j in jobs
        }
        assert {batch for batch, _ in seen} == {batch_id}
        # Each run's history names the batch job that ran it.
        assert all(
            f"batch job {batch_id})" in entered(be, j.job_id, S.RUNNING).message for j in jobs
        )
        assert {node for _, node in seen} <= {"n1", "n2", "n3"}
        # --consume-all: the launcher exits, and the batch job leaves the queue.
        wait_until(
            lambda: (
                scheduler.status([batch_id])[batch_id] in (BatchState.FINISHED, BatchState.GONE)
            ),
            60,
            interval=0.5,
            what="the batch job to end",
        )
        script = next(slurm_site.scripts_dir.glob("slurm_*.sh")).read_text()
        assert "#SBATCH --nodes=2" in script and "#SBATCH --partition=debug" in script
    finally:
        be.close()


def test_a_partition_slurm_does_not_have_is_one_line_and_nothing_runs(
    slurm_site: Site, slurm: SlurmCluster
) -> None:
    done = submit("-A", "proj", "-q", "nosuch", "-t", "3", "-n", "1")
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert line.startswith("balsam: error: sbatch refused the launcher job: ")
    assert "partition" in line.lower()
    assert slurm.run("squeue", "-h").stdout.strip() == ""


def test_scancel_through_the_adapter_ends_a_queued_launcher(
    slurm_site: Site, slurm: SlurmCluster
) -> None:
    # Scheduler flags reach sbatch: this one holds the job in the queue for an hour.
    done = submit(
        "-A", "proj", "-q", "debug", "-t", "3", "-n", "1", "--sched-flags", "--begin=now+1hour"
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.split()[2]
    scheduler = SlurmScheduler()
    assert scheduler.status([batch_id])[batch_id] is BatchState.QUEUED
    scheduler.cancel(batch_id)
    wait_until(
        lambda: scheduler.status([batch_id])[batch_id] in (BatchState.CANCELLED, BatchState.GONE),
        30,
        interval=0.3,
        what="the cancel",
    )

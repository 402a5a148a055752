"""The elastic queue against a real Slurm: ``balsam service`` submits launchers for work of
mixed sizes, the jobs finish, launchers left queued are withdrawn once the backlog is gone,
and nothing is submitted after.

A real Slurm cluster of four nodes runs for the module (tests/slurmcluster.py). Another
user's job holds two of the nodes, so the service's second launcher has to wait in the queue
while the first runs the work: that is the launcher the service must withdraw. Everything is
done with the commands a user types.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import open_backend
from balsam.batch_settings import QueueSettings, ServiceSettings
from balsam.config import Site, load_settings, save_settings
from balsam.domain.batchjobs import BatchJobState
from balsam.schemas.service import SERVICE_LOCK
from launchkit import BALSAM, S, add_app, add_jobs, all_jobs, gone, slurm_scheduled_site
from slurmcluster import SlurmCluster, start_cluster
from waiting import wait_until

B = BatchJobState


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    cluster = start_cluster(nodes=4, cpus_per_node=2)
    yield cluster
    cluster.stop()


@pytest.fixture
def site_backend(
    tmp_path_factory: pytest.TempPathFactory, slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Site, Backend]]:
    """A site submitting to the cluster's ``debug`` partition (2 nodes, 2 queued at most)."""
    path = tmp_path_factory.mktemp("service") / "wf"
    site = slurm_scheduled_site(path, slurm.conf, monkeypatch)
    current = load_settings(site.path)
    current.projects = []
    current.queues = {
        "debug": QueueSettings(max_nodes=2, max_wall_time_minutes=10, max_queued_jobs=2)
    }
    current.service = ServiceSettings(
        period_seconds=1, lock_seconds=6, wall_time_minutes=3, job_mode="mpi"
    )
    current.launcher = current.launcher.model_copy(
        update={"heartbeat_seconds": 1.0, "lease_seconds": 6.0}
    )
    save_settings(site.path, current)
    backend = open_backend(load_settings_site(site))
    yield site, backend
    lock = backend.get_service_lock(SERVICE_LOCK)
    if lock is not None and not gone(lock.pid):
        os.kill(lock.pid, signal.SIGKILL)
    backend.close()
    slurm.run("scancel", "--user", "root")


def load_settings_site(site: Site) -> Site:
    """``site`` with the settings now in its file."""
    return Site(site.path, load_settings(site.path))


def balsam(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BALSAM, *args], capture_output=True, text=True, timeout=120, check=False)


def squeue_names(slurm: SlurmCluster) -> dict[str, str]:
    """{job name: state} of the jobs Slurm still lists."""
    out = slurm.run("squeue", "-h", "-o", "%j %T").stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_the_service_follows_the_backlog_and_withdraws_what_it_no_longer_needs(
    slurm: SlurmCluster, site_backend: tuple[Site, Backend]
) -> None:
    _site, backend = site_backend
    blocker = slurm.run(
        "sbatch", "--parsable", "-N", "2", "--exclusive", "-J", "other-user", "-o", "/dev/null",
        "--wrap", "sleep 600",
    )  # fmt: skip
    assert blocker.returncode == 0, blocker.stderr
    wait_until(lambda: squeue_names(slurm).get("other-user") == "RUNNING", timeout=60)
    add_app(backend, "Work", "sleep 3")
    add_jobs(backend, "Work", *({"name": f"one{i}"} for i in range(4)))
    add_jobs(backend, "Work", *({"name": f"two{i}", "num_nodes": 2} for i in range(2)))

    started = balsam("service", "start")
    assert started.returncode == 0, started.stderr
    done = {S.JOB_FINISHED}
    wait_until(lambda: {j.state for j in all_jobs(backend)} <= done, timeout=240)

    # Once the backlog is gone, no launcher of the service is left in Slurm's queue.
    def balsam_jobs_left() -> dict[str, str]:
        return {n: s for n, s in squeue_names(slurm).items() if n.startswith("balsam-")}

    wait_until(lambda: not balsam_jobs_left(), timeout=120)
    live = (B.SUBMITTING, B.QUEUED, B.RUNNING)
    # The service's next pass records what Slurm says of them.
    wait_until(lambda: all(r.state not in live for r in backend.list_batch_jobs()), timeout=60)
    rows = backend.list_batch_jobs()
    assert len(rows) >= 2, rows
    assert all(r.queue == "debug" and r.num_nodes == 2 for r in rows)
    withdrawn = [r for r in rows if r.state is B.CANCELLED]
    assert withdrawn, [(r.id, r.state, r.status_message) for r in rows]
    for row in withdrawn:
        assert row.status_message.startswith("withdrawn by the service: not needed"), row
    ran = [r for r in rows if r.state in (B.FINISHED, B.GONE)]
    assert ran, [(r.id, r.state) for r in rows]
    history = backend.batch_job_history(withdrawn[0].id)
    assert [e.to_state for e in history][-1] == "cancelled"

    # Nothing is submitted after: the backlog is empty, pass after pass.
    count = len(rows)
    seen: set[object] = set()

    def passes(n: int) -> bool:
        lock = backend.get_service_lock(SERVICE_LOCK)
        if lock is not None:
            seen.add(lock.heartbeat)
        return len(seen) >= n

    wait_until(lambda: passes(5), timeout=60)
    assert len(backend.list_batch_jobs()) == count
    lock = backend.get_service_lock(SERVICE_LOCK)
    assert lock is not None
    report = json.loads(lock.status)
    assert report["summary"].startswith("backlog 0 node(s) in 0 job(s)")
    assert any("withdrew batch job" in line for line in report["recent"]), report

    listed = balsam("ls", "queues")
    assert listed.returncode == 0 and "withdrawn by the service" in listed.stdout
    assert balsam("service", "stop").returncode == 0
    assert backend.get_service_lock(SERVICE_LOCK) is None


def test_a_partition_slurm_refuses_is_recorded_backed_off_and_shown(
    slurm: SlurmCluster, site_backend: tuple[Site, Backend]
) -> None:
    site, backend = site_backend
    current = load_settings(site.path)
    current.queues = {"nosuch": QueueSettings(max_nodes=2, max_wall_time_minutes=10)}
    current.service = current.service.model_copy(
        update={"submit_backoff_seconds": 600.0, "max_backoff_seconds": 600.0}
    )
    save_settings(site.path, current)
    add_app(backend, "Work", "true")
    add_jobs(backend, "Work", {"name": "waiting"})
    assert balsam("service", "start").returncode == 0

    def refused() -> bool:
        return any(r.state is B.SUBMIT_FAILED for r in backend.list_batch_jobs())

    wait_until(refused, timeout=60)
    (row,) = backend.list_batch_jobs()
    assert "invalid partition" in row.status_message.lower(), row.status_message
    seen: set[object] = set()

    def passes(n: int) -> bool:
        lock = backend.get_service_lock(SERVICE_LOCK)
        if lock is not None:
            seen.add(lock.heartbeat)
        return len(seen) >= n

    wait_until(lambda: passes(4), timeout=60)
    assert len(backend.list_batch_jobs()) == 1  # backing off: not resubmitted every pass
    status = balsam("service", "status")
    assert "queues backing off:" in status.stdout and "nosuch: 1 refusal(s)" in status.stdout
    listed = balsam("ls", "queues")
    assert "submit_failed" in listed.stdout
    assert balsam("service", "stop").returncode == 0

"""``balsam ls queues`` and ``balsam queue rm`` on a real Slurm, and the batch job a launcher's
session records.

A real Slurm cluster (tests/slurmcluster.py) runs for the module. Every command is the one a
user types; the database is read through the Backend (and the sessions table directly, since a
launcher that has exited has no open session left to list).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from balsam.backends.factory import open_backend
from balsam.config import Site
from balsam.store.engine import make_engine
from launchkit import BALSAM, S, add_app, add_jobs, all_jobs, slurm_scheduled_site
from slurmcluster import SlurmCluster, start_cluster
from waiting import wait_until


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    cluster = start_cluster(nodes=2, cpus_per_node=2)
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm_site(
    tmp_path_factory: pytest.TempPathFactory, slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> Site:
    path = tmp_path_factory.mktemp("slurmq") / "wf"
    return slurm_scheduled_site(path, slurm.conf, monkeypatch)


def balsam(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BALSAM, *args], capture_output=True, text=True, timeout=60, check=False)


def queue_rows() -> dict[str, list[str]]:
    """``balsam ls queues`` as {row id: cells}."""
    done = balsam("ls", "queues")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "SCHEDULER", "SCHED_ID"], done.stdout
    return {line.split()[0]: line.split() for line in lines[1:] if line.strip()[:1].isdigit()}


def submitted(done: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """(Slurm's id, the batch job's row id) from submit-launch's line."""
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    return words[2], done.stdout.split("(batch job ", 1)[1].split(",", 1)[0]


def test_ls_queues_follows_a_launcher_from_queued_to_its_end_and_its_session_knows_it(
    slurm_site: Site, slurm: SlurmCluster
) -> None:
    be = open_backend(slurm_site)
    try:
        add_app(be, "Nap", "sleep 2")
        add_jobs(be, "Nap", *({"name": f"n{i}"} for i in range(2)))
        done = balsam("submit-launch", "-A", "proj", "-q", "debug", "-t", "3", "-n", "1",
                      "--job-mode", "serial")  # fmt: skip
        slurm_id, row_id = submitted(done)
        (row,) = be.list_batch_jobs()
        assert (str(row.id), row.scheduler, row.scheduler_id) == (row_id, "slurm", slurm_id)
        # Slurm knows the job by the row's name.
        names = slurm.run("squeue", "-h", "-j", slurm_id, "-o", "%j").stdout.split()
        assert names == [f"balsam-{row_id}"]
        cells = queue_rows()[row_id]
        assert cells[1:3] == ["slurm", slurm_id]
        assert cells[8] in ("queued", "running"), cells
        wait_until(
            lambda: {j.state for j in all_jobs(be)} == {S.JOB_FINISHED},
            120,
            interval=0.5,
            what=lambda: f"the jobs to finish: {slurm.diagnostics()}",
        )
        wait_until(
            lambda: queue_rows()[row_id][8] in ("finished", "gone"),
            60,
            interval=0.5,
            what="ls queues to show the batch job ended",
        )
        assert be.get_batch_job(int(row_id)).state in ("finished", "gone")
        engine = make_engine(slurm_site.database_url())
        try:
            with engine.connect() as conn:
                recorded = conn.execute(text("SELECT batch_job FROM sessions")).scalars().all()
        finally:
            engine.dispose()
        assert recorded and set(recorded) == {slurm_id}
    finally:
        be.close()


def test_queue_rm_cancels_a_held_launcher_and_ls_queues_says_so(
    slurm_site: Site, slurm: SlurmCluster
) -> None:
    done = balsam("submit-launch", "-A", "proj", "-q", "debug", "-t", "3", "-n", "1",
                  "--sched-flags", "--begin=now+1hour")  # fmt: skip
    slurm_id, row_id = submitted(done)
    assert queue_rows()[row_id][8] == "queued"
    rm = balsam("queue", "rm", row_id)
    assert rm.returncode == 0, rm.stderr
    assert f"Cancelled batch job {row_id} (slurm job {slurm_id})" in rm.stdout
    assert queue_rows()[row_id][8] == "cancelled"
    wait_until(
        lambda: (
            slurm.run("squeue", "-h", "-j", slurm_id, "-o", "%T").stdout.strip()
            in ("", "CANCELLED")
        ),
        30,
        interval=0.3,
        what="Slurm to cancel it",
    )
    # Cancelling it again is one line, and changes nothing.
    again = balsam("queue", "rm", row_id)
    assert again.returncode != 0
    assert again.stderr.splitlines() == [
        f"balsam: error: batch job {row_id} has ended already (cancelled)"
    ]


def test_a_refused_submission_is_a_row_with_its_reason(
    slurm_site: Site, slurm: SlurmCluster
) -> None:
    done = balsam("submit-launch", "-A", "proj", "-q", "nosuch", "-t", "3", "-n", "1")
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert line.startswith("balsam: error: sbatch refused the launcher job: ")
    listing = balsam("ls", "queues").stdout
    assert "submit_failed" in listing and "sbatch refused the launcher job" in listing
    missing = balsam("queue", "rm", "99")
    assert missing.returncode != 0
    assert missing.stderr.splitlines() == ["balsam: error: no batch job 99"]

"""One contract for every batch scheduler Balsam drives: the in-memory fake
(balsam.testing.MemoryScheduler), the ``local`` scheduler (real processes) and ``slurm`` (a
real Slurm cluster started for this module).

What the service and ``balsam ls queues`` rely on: a submission gets an id the scheduler then
reports on; a job is found by its name; cancelling ends it, and cancelling it again (or an id
the scheduler never had) is harmless; an id the scheduler does not know is GONE.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from balsam.platform.schedulers import BatchState, LaunchRequest, Scheduler
from balsam.platform.schedulers.local import LocalScheduler
from balsam.platform.schedulers.slurm import SlurmScheduler
from balsam.testing import MemoryScheduler
from slurmcluster import SlurmCluster, start_cluster
from waiting import wait_until

ENDED = {BatchState.CANCELLED, BatchState.GONE, BatchState.FINISHED, BatchState.FAILED}


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    cluster = start_cluster(nodes=1, cpus_per_node=2)
    yield cluster
    cluster.stop()


@pytest.fixture(params=["memory", "local", "slurm"])
def scheduler(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Scheduler, Callable[[str], None]]]:
    """A scheduler, and how to make a job of it start (the fake starts jobs when told)."""
    if request.param == "memory":
        fake = MemoryScheduler()
        yield fake, fake.start
    elif request.param == "local":
        yield LocalScheduler(), lambda _id: None
    else:
        cluster: SlurmCluster = request.getfixturevalue("slurm")
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
        yield SlurmScheduler(), lambda _id: None
        cluster.run("scancel", "--user", str(os.getuid()))


def launch(tmp_path: Path, name: str) -> LaunchRequest:
    """A launch whose script only sleeps (its 'launcher' is ``sh -c 'sleep 300'``)."""
    site = tmp_path / "wf"
    site.mkdir(exist_ok=True)
    return LaunchRequest(
        project="",
        queue="debug",
        wall_time_minutes=5,
        num_nodes=1,
        job_mode="serial",
        site_path=site,
        scripts_dir=site / "qsubmit",
        job_name=name,
        balsam_argv=["/bin/sh", "-c", "sleep 300", "sh"],
    )


def test_a_submitted_job_is_reported_on_until_it_is_cancelled(
    scheduler: tuple[Scheduler, Callable[[str], None]], tmp_path: Path
) -> None:
    sched, start = scheduler
    submission = sched.submit(launch(tmp_path, "balsam-contract-1"))
    job = submission.launch_id
    assert job
    start(job)
    wait_until(
        lambda: sched.status([job])[job] in (BatchState.QUEUED, BatchState.RUNNING), timeout=30
    )
    sched.cancel(job)
    wait_until(lambda: sched.status([job])[job] in ENDED, timeout=60)
    sched.cancel(job)  # an ended job: left as it is, no error
    assert sched.status([job])[job] in ENDED


def test_a_job_is_found_by_its_name_and_others_are_not(
    scheduler: tuple[Scheduler, Callable[[str], None]], tmp_path: Path
) -> None:
    sched, _start = scheduler
    if isinstance(sched, LocalScheduler):
        assert sched.find("balsam-anything") == []  # local launchers carry no name
        return
    job = sched.submit(launch(tmp_path, "balsam-contract-2")).launch_id
    assert sched.find("balsam-contract-2") == [job]
    assert sched.find("balsam-contract-none") == []
    sched.cancel(job)


def test_an_id_the_scheduler_never_had_is_gone_and_cancelling_it_is_harmless(
    scheduler: tuple[Scheduler, Callable[[str], None]],
) -> None:
    sched, _start = scheduler
    unknown = "999999"
    assert sched.status([unknown]) == {unknown: BatchState.GONE}
    sched.cancel(unknown)
    assert sched.status([]) == {}


def test_free_nodes_are_a_list_of_windows(
    scheduler: tuple[Scheduler, Callable[[str], None]],
) -> None:
    sched, _start = scheduler
    windows = sched.backfill("debug")
    assert all(w.queue == "debug" and w.num_nodes >= 1 and w.minutes > 0 for w in windows)
    if isinstance(sched, SlurmScheduler):
        # The idle one-node cluster: its node is free, for the partition's (unbounded) limit.
        assert [(w.num_nodes, w.minutes) for w in windows] == [(1, float("inf"))]

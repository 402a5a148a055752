"""The launcher inside real Slurm allocations: srun MPI jobs, serial workers, node splits.

A real Slurm cluster (munged, slurmctld, four slurmd nodes ``n1..n4`` of 2 CPUs each) runs on
this host for the module (tests/slurmcluster.py). Launchers are started the way users start
them: ``sbatch`` of a script that runs ``balsam launcher``, or ``srun`` inside ``salloc``.
The simulated nodes share this host's name, so jobs tell where they ran by
``SLURMD_NODENAME``, which Slurm sets for every process of a step on that node.

Without Slurm installed these tests fail (``apt-get install slurm-wlm munge``); they never
skip.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.schemas.jobs import JobOut
from launchkit import (
    BALSAM,
    S,
    add_app,
    add_jobs,
    all_jobs,
    entered,
    job_dir,
    settings,
    state_of,
)
from slurmcluster import SlurmCluster, start_cluster
from waiting import WaitTimeout, wait_until

NODES = ["n1", "n2", "n3", "n4"]
BATCH_DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")

MPI_PROGRAM = """\
import os, sys
from mpi4py import MPI

comm = MPI.COMM_WORLD
names = comm.gather(os.environ.get("SLURMD_NODENAME", "?"), root=0)
if comm.Get_rank() == 0:
    print("size", comm.Get_size(), "nodes", ",".join(sorted(names)), flush=True)
sys.exit(0 if comm.Get_size() == int(sys.argv[1]) else 1)
"""


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    """The module's Slurm cluster: four nodes of two CPUs."""
    cluster = start_cluster(nodes=len(NODES), cpus_per_node=2)
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm_site(site: Site, slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Site:
    """The test's site, configured for the cluster: srun with PMI-2 for MPICH programs."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    settings(
        site,
        platform={"mpi_launcher": "auto", "mpi_launcher_args": ["--mpi=pmi2"]},
        launcher={"worker_start_seconds": 60.0},
    )
    return site


def sbatch(slurm: SlurmCluster, site: Site, nodes: int, minutes: int, *launcher: str) -> str:
    """Submit a batch script running ``balsam launcher ...``; returns the Slurm job id."""
    script = site.path / f"batch_{time.monotonic_ns()}.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"export BALSAM_DB_PATH={shlex.quote(str(site.path))}\n"
        f"exec {shlex.quote(BALSAM)} launcher {shlex.join(launcher)}\n"
    )
    out = slurm.run(
        "sbatch", "--parsable", "--exclusive", f"--nodes={nodes}", f"--time={minutes}",
        f"--output={site.path}/slurm-%j.out", str(script),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def batch_state(slurm: SlurmCluster, job_id: str) -> str:
    """The Slurm state of a batch job (``scontrol show job``)."""
    out = slurm.run("scontrol", "-o", "show", "job", job_id).stdout
    match = re.search(r"JobState=(\S+)", out)
    return match.group(1) if match else "UNKNOWN"


def wait_batch(slurm: SlurmCluster, site: Site, job_id: str, timeout: float = 120) -> str:
    """Wait until a batch job ends and return its final state (cancelled if it does not)."""

    def ended() -> str | None:
        state = batch_state(slurm, job_id)
        return state if state in BATCH_DONE else None

    def still() -> str:
        return f"batch job {job_id} to end (still {batch_state(slurm, job_id)}): {batch_log(site)}"

    try:
        return wait_until(ended, timeout, interval=0.3, what=still)
    except WaitTimeout:
        slurm.run("scancel", job_id)
        raise


def batch_log(site: Site) -> str:
    """The batch jobs' output and the launcher logs (for failure messages)."""
    parts = [p.read_text() for p in sorted(site.path.glob("slurm-*.out"))]
    parts += [p.read_text()[-3000:] for p in sorted((site.path / "log").glob("*.log"))]
    return "\n".join(parts)


def where_ran(site: Site, job_id: str, be: Backend) -> str:
    """The node name a job printed (its app echoes ``$SLURMD_NODENAME``)."""
    job = be.get_job(job_id)
    return (job_dir(site, job) / f"{job.name}.out").read_text().strip()


# ---- mpi mode: srun MPI jobs across nodes --------------------------------------------------


def test_mpi_mode_runs_an_mpi4py_job_across_two_nodes_with_srun(
    slurm: SlurmCluster, slurm_site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    program = tmp_path / "mpi_nodes.py"
    program.write_text(MPI_PROGRAM)
    add_app(backend_of, "MpiNodes", f"{sys.executable} {program}")
    (job,) = add_jobs(
        backend_of, "MpiNodes", {"name": "wide", "args": "4", "num_nodes": 2, "ranks_per_node": 2}
    )
    batch = sbatch(slurm, slurm_site, 2, 5, "--consume-all", "--job-mode", "mpi")
    assert wait_batch(slurm, slurm_site, batch) == "COMPLETED", batch_log(slurm_site)
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED, batch_log(slurm_site)
    out = (job_dir(slurm_site, job) / "wide.out").read_text()
    match = re.search(r"size (\d+) nodes (\S+)", out)
    assert match, out
    size, names = int(match.group(1)), match.group(2).split(",")
    assert size == 4
    assert len(set(names)) == 2 and set(names) <= set(NODES), names
    running = entered(backend_of, job.job_id, S.RUNNING).message
    assert f"on {','.join(sorted(set(names)))} " in running, running


def test_mpi_mode_runs_jobs_side_by_side_on_their_own_nodes(
    slurm: SlurmCluster, slurm_site: Site, backend_of: Backend
) -> None:
    """Four one-node jobs in a 4-node allocation run at once, each on a node of its own."""
    add_app(backend_of, "Where", "bash -c 'echo $SLURMD_NODENAME; sleep 2'")
    jobs = add_jobs(backend_of, "Where", *({"name": f"w{i}"} for i in range(4)))
    started = time.monotonic()
    batch = sbatch(slurm, slurm_site, 4, 5, "--consume-all", "--job-mode", "mpi")
    assert wait_batch(slurm, slurm_site, batch) == "COMPLETED", batch_log(slurm_site)
    assert {state_of(backend_of, j.job_id) for j in jobs} == {S.JOB_FINISHED}
    assert sorted(where_ran(slurm_site, j.job_id, backend_of) for j in jobs) == NODES
    runs = [entered(backend_of, j.job_id, S.RUNNING).timestamp for j in jobs]
    # Side by side: all four started before the first could have ended (each sleeps 2 s).
    assert (max(runs) - min(runs)).total_seconds() < 2.0, runs
    assert time.monotonic() - started < 60


# ---- serial mode: one worker per node -------------------------------------------------------


def test_serial_mode_spreads_jobs_over_every_node_through_workers(
    slurm: SlurmCluster, slurm_site: Site, backend_of: Backend
) -> None:
    add_app(backend_of, "Where", "bash -c 'echo $SLURMD_NODENAME; sleep 0.5'")
    specs = ({"name": f"s{i}", "node_packing_count": 2} for i in range(16))
    jobs = add_jobs(backend_of, "Where", *specs)
    batch = sbatch(slurm, slurm_site, 4, 5, "--consume-all", "--job-mode", "serial")
    assert wait_batch(slurm, slurm_site, batch) == "COMPLETED", batch_log(slurm_site)
    assert {state_of(backend_of, j.job_id) for j in jobs} == {S.JOB_FINISHED}, batch_log(slurm_site)
    per_node = Counter(where_ran(slurm_site, j.job_id, backend_of) for j in jobs)
    assert set(per_node) == set(NODES), per_node
    assert sum(n for node, n in per_node.items() if node != "n1") >= 8, per_node
    for j in jobs:
        node = where_ran(slurm_site, j.job_id, backend_of)
        assert f"on {node} (pid " in entered(backend_of, j.job_id, S.RUNNING).message


def test_a_lost_node_takes_its_job_back_and_the_job_reruns_elsewhere(
    slurm: SlurmCluster, slurm_site: Site, backend_of: Backend
) -> None:
    """Kill every Balsam process of a remote node (as if it crashed) while it runs a job."""
    add_app(backend_of, "Where", "bash -c 'echo $SLURMD_NODENAME; sleep 5'")
    jobs = add_jobs(backend_of, "Where", {"name": "p"}, {"name": "q"})
    batch = sbatch(slurm, slurm_site, 2, 5, "--consume-all", "--job-mode", "serial")
    nodes = wait_until(
        lambda: nodes_printed(slurm_site, jobs),
        timeout=60,
        what=lambda: f"both jobs to print their node: {batch_log(slurm_site)}",
    )
    assert sorted(nodes.values()) == ["n1", "n2"], nodes
    victim = next(jid for jid, node in nodes.items() if node == "n2")
    killed = kill_node_processes("n2")
    assert killed >= 2, "the worker and the job it runs"
    assert wait_batch(slurm, slurm_site, batch) == "COMPLETED", batch_log(slurm_site)
    after = backend_of.get_job(victim)
    assert after.state is S.JOB_FINISHED and after.lost_count == 1, batch_log(slurm_site)
    lost = entered(backend_of, victim, S.RESTART_READY).message
    assert "lost with node n2" in lost
    # It ran again on the node that was left.
    assert where_ran(slurm_site, victim, backend_of) == "n1"


def nodes_printed(site: Site, jobs: list[JobOut]) -> dict[str, str]:
    """Each job's node once every one of ``jobs`` has printed it, else an empty dict."""
    nodes = {}
    for j in jobs:
        out = job_dir(site, j) / f"{j.name}.out"
        printed = out.read_text().strip() if out.exists() else ""
        if not printed:
            return {}
        nodes[j.job_id] = printed
    return nodes


def kill_node_processes(node: str) -> int:
    """SIGKILL the Balsam worker and job processes of a simulated node; returns how many."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        on_node = f"SLURMD_NODENAME={node}".encode() in env
        ours = b"balsam.launcher.worker" in cmd or any(v.startswith(b"BALSAM_JOB_ID=") for v in env)
        if on_node and ours:
            os.kill(int(entry.name), 9)
            killed += 1
    return killed


# ---- splitting one allocation; the allocation's own time --------------------------------------


def test_two_launchers_split_one_allocation_by_limit_and_offset(
    slurm: SlurmCluster, slurm_site: Site, backend_of: Backend
) -> None:
    add_app(backend_of, "Where", "bash -c 'echo $SLURMD_NODENAME; sleep 0.3'")
    a = add_jobs(backend_of, "Where", *({"name": f"a{i}", "workflow": "a"} for i in range(6)))
    b = add_jobs(backend_of, "Where", *({"name": f"b{i}", "workflow": "b"} for i in range(6)))
    script = slurm_site.path / "split.sh"
    common = f"{shlex.quote(BALSAM)} launcher --consume-all --job-mode mpi"
    script.write_text(
        "#!/bin/bash\n"
        f"export BALSAM_DB_PATH={shlex.quote(str(slurm_site.path))}\n"
        f"{common} --wf-filter a --limit-nodes 2 &\n"
        f"{common} --wf-filter b --offset-nodes 2 &\n"
        "wait\n"
    )
    out = slurm.run(
        "sbatch", "--parsable", "--exclusive", "--nodes=4", "--time=5",
        f"--output={slurm_site.path}/slurm-%j.out", str(script),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    batch = out.stdout.strip()
    assert wait_batch(slurm, slurm_site, batch) == "COMPLETED", batch_log(slurm_site)
    assert {state_of(backend_of, j.job_id) for j in a + b} == {S.JOB_FINISHED}
    assert {where_ran(slurm_site, j.job_id, backend_of) for j in a} <= {"n1", "n2"}
    assert {where_ran(slurm_site, j.job_id, backend_of) for j in b} <= {"n3", "n4"}


def test_a_launcher_in_an_allocation_takes_its_time_limit_from_slurm(
    slurm: SlurmCluster, slurm_site: Site, backend_of: Backend
) -> None:
    add_app(backend_of, "Echo", "echo ok")
    (short,) = add_jobs(backend_of, "Echo", {"name": "short", "wall_time_minutes": 1})
    (long,) = add_jobs(backend_of, "Echo", {"name": "long", "wall_time_minutes": 30})
    batch = sbatch(slurm, slurm_site, 1, 3, "--consume-all", "--job-mode", "serial")
    assert wait_batch(slurm, slurm_site, batch) == "COMPLETED", batch_log(slurm_site)
    log_text = batch_log(slurm_site)
    match = re.search(r"the allocation ends in ([\d.]+) minutes", log_text)
    assert match, log_text
    assert 1.0 < float(match.group(1)) <= 3.0
    assert state_of(backend_of, short.job_id) is S.JOB_FINISHED
    # 30 minutes never fit a 3-minute allocation: not started, left for a longer one.
    assert state_of(backend_of, long.job_id) is S.PREPROCESSED
    assert len(all_jobs(backend_of)) == 2


@pytest.mark.slow
def test_slurm_wall_time_ends_runs_as_timeouts_that_restart(
    slurm: SlurmCluster, slurm_site: Site, backend_of: Backend
) -> None:
    """A 1-minute allocation: the launcher stops the run before Slurm kills the batch job."""
    settings(slurm_site, launcher={"kill_grace_seconds": 5.0})
    add_app(backend_of, "Sleep", "sleep 600")
    (job,) = add_jobs(backend_of, "Sleep", {"name": "forever", "wall_time_minutes": 0})
    batch = sbatch(slurm, slurm_site, 1, 1, "--consume-all", "--job-mode", "serial")
    final = wait_batch(slurm, slurm_site, batch, timeout=150)
    assert final == "COMPLETED", batch_log(slurm_site)
    after = backend_of.get_job(job.job_id)
    assert after.state is S.RESTART_READY and after.timeout_count == 1, batch_log(slurm_site)
    assert "launcher time limit reached" in entered(backend_of, job.job_id, S.RUN_TIMEOUT).message
    assert os.environ.get("SLURM_CONF")

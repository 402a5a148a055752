"""Serial mode across nodes with workers started by MPICH's mpiexec (not srun).

The allocation is two host names for this one machine, ``localhost`` and its own name: the
launcher runs on the second and starts a worker on the first with ``mpiexec -ppn 1``; Hydra
starts a local host's processes itself, so this is the real mpiexec path without ssh. (Workers
started by srun on four Slurm nodes: tests/e2e/test_slurm_launcher.py.)
"""

from __future__ import annotations

import re
import socket

import pytest

from balsam.backends.base import Backend
from balsam.config import Site
from launchkit import S, add_app, add_jobs, entered, launch, settings, state_of


def test_mpiexec_starts_a_worker_on_the_other_node_and_both_run_jobs(
    site: Site, backend_of: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = socket.gethostname()
    assert me != "localhost"
    monkeypatch.setenv("SLURM_JOB_NODELIST", f"localhost,{me}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    settings(site, platform={"mpi_launcher": "mpich", "cpus_per_node": 2})
    add_app(backend_of, "Nap", "sleep 0.5")
    jobs = add_jobs(backend_of, "Nap", *({"name": f"n{i}", "node_packing_count": 2}
                                         for i in range(8)))  # fmt: skip
    run_all = launch("--consume-all", "--job-mode", "serial", timeout=120)
    assert run_all.returncode == 0, run_all.stderr
    assert {state_of(backend_of, j.job_id) for j in jobs} == {S.JOB_FINISHED}
    where = []
    for j in jobs:
        message = entered(backend_of, j.job_id, S.RUNNING).message
        match = re.search(r" on (\S+) \(pid \d+\)", message)
        assert match, message
        where.append(match.group(1))
    assert set(where) == {"localhost", me}, where
    logs = "".join(p.read_text() for p in (site.path / "log").glob("launcher_*.log"))
    assert "worker on localhost" in logs and "connected" in logs
    assert "mpiexec" in logs and "-ppn 1" in logs

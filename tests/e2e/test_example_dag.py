"""docs/examples/dag_workflow.py runs as docs/workflows.md shows, under a real launcher
(SQLite, PostgreSQL): the diamond finishes, and a failed simulation fails the reduce step
without running it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.schemas.jobs import JobOut
from launchkit import S, all_jobs, balsam, job_dir, start_launcher, stop

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "dag_workflow.py"
SIMS = [f"sim{i}" for i in range(4)]


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    """``python docs/examples/dag_workflow.py ARGS``, as the docs run it."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=120
    )


def by_name(backend: Backend) -> dict[str, JobOut]:
    return {job.name: job for job in all_jobs(backend)}


def test_the_diamond_runs_and_a_failed_parent_fails_its_child(
    site: Site, backend_of: Backend
) -> None:
    launcher = start_launcher("--wf-filter", "dag-demo", "--job-mode", "serial", quiet=True)
    try:
        ok = run_example()
        broken = run_example("--run", "broken", "--fail", "2")
        listing = balsam("ls", "--wf", "dag-demo")
    finally:
        stop(launcher)

    # 1. Every job finished; the reduce step read all four results.
    assert ok.returncode == 0, ok.stderr
    names = ["prep", *SIMS, "reduce"]
    assert ok.stdout.splitlines() == [
        *(f"{name:14} JOB_FINISHED" for name in names),
        "best of 4 points: f(1.5) = -0.2209",
    ]
    jobs = by_name(backend_of)
    prep, reduce = jobs["prep"], jobs["reduce"]
    assert all(jobs[s].parents == [prep.job_id] for s in SIMS)
    assert sorted(reduce.parents) == sorted(jobs[s].job_id for s in SIMS)
    # Each sim got the prep's sweep.json copied in; reduce read the results in place.
    for name in SIMS:
        workdir = job_dir(site, jobs[name])
        assert json.loads((workdir / "sweep.json").read_text()) == {"x": [0.0, 0.5, 1.0, 1.5]}
        assert (workdir / "result.json").exists()
    reduce_dir = job_dir(site, reduce)
    assert sorted(p.name for p in reduce_dir.iterdir()) == ["reduce.out", "summary.json"]
    summary = json.loads((reduce_dir / "summary.json").read_text())
    assert summary == {"points": 4, "best_x": 1.5, "best_y": -0.2209}

    # 2. sim2 failed; the other sims still finished; reduce FAILED without ever running.
    assert broken.returncode == 1, broken.stderr
    failed = by_name(backend_of)["broken-sim2"]
    assert broken.stdout.splitlines() == [
        "broken-prep    JOB_FINISHED",
        "broken-sim0    JOB_FINISHED",
        "broken-sim1    JOB_FINISHED",
        "broken-sim2    FAILED",
        "broken-sim3    JOB_FINISHED",
        "broken-reduce  FAILED",
        f"broken-reduce ended FAILED: parent {failed.job_id[:8]} (broken-sim2) ended FAILED",
    ]
    error = [e for e in backend_of.history(failed.job_id) if e.to_state == S.RUN_ERROR]
    assert "the solver diverged at x=1.0" in error[0].message
    child = by_name(backend_of)["broken-reduce"]
    hops = [e.to_state for e in backend_of.history(child.job_id)]
    assert hops == [S.CREATED, S.AWAITING_PARENTS, S.FAILED]
    assert not job_dir(site, child).exists()

    # 3. What `balsam ls --wf dag-demo` shows.
    assert listing.returncode == 0, listing.stderr
    states = {line.split()[1]: line.split()[-1] for line in listing.stdout.splitlines()[2:]}
    assert states == {
        **{name: "JOB_FINISHED" for name in names},
        **{f"broken-{name}": "JOB_FINISHED" for name in ["prep", "sim0", "sim1", "sim3"]},
        "broken-sim2": "FAILED",
        "broken-reduce": "FAILED",
    }

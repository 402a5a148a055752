"""docs/examples/dynamic_workflow.py runs as docs/workflows.md shows, under a real launcher
(SQLite, PostgreSQL): running jobs spawn the next steps, and the refinement that gets there
first kills its siblings, whose processes the launcher stops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.schemas.jobs import JobOut
from launchkit import S, all_jobs, balsam, gone, job_dir, run_pid, start_launcher, stop, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "dynamic_workflow.py"
SCANS = [f"scan{i}" for i in range(8)]
NAMES = ["search", *SCANS, "choose", "refine0", "refine1", "refine2"]
STATES = {name: "JOB_FINISHED" for name in NAMES} | {
    "refine1": "USER_KILLED",
    "refine2": "USER_KILLED",
}


def test_jobs_spawn_the_search_and_the_winner_kills_its_siblings(
    site: Site, backend_of: Backend
) -> None:
    launcher = start_launcher("--wf-filter", "dynamic-demo", "--job-mode", "serial", quiet=True)
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        jobs = {job.name: job for job in all_jobs(backend_of)}
        killed = [jobs["refine1"], jobs["refine2"]]
        # The kills are in the database; the launcher stops their processes within its
        # kill_poll_seconds (2 s).
        ran = [job for job in killed if S.RUNNING in hops(backend_of, job)]
        for job in ran:
            pid = run_pid(backend_of, job.job_id)
            wait_for(f"{job.name}'s process (pid {pid}) to end", lambda pid=pid: gone(pid))
        # Nor is any other process of theirs left (a queued run started as refine0 ended is
        # stopped as its start is refused, before any RUNNING is recorded).
        ids = [job.job_id for job in killed]
        wait_for("no process of a killed job", lambda: not processes_of(ids))
        listing = balsam("ls", "--wf", "dynamic-demo")
    finally:
        stop(launcher)

    # What the driver printed: every job it led to, and the answer.
    assert done.stdout.splitlines() == [
        *(f"{name:8} {STATES[name]}" for name in NAMES),
        "found x = 0.6625 (misfit 0.0025)",
    ]
    # What `balsam ls` shows.
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()[2:]]
    assert {row[1]: row[-1] for row in rows} == STATES

    # The spawned jobs exist with the right parents.
    search, choose = jobs["search"], jobs["choose"]
    assert all(jobs[name].parents == [search.job_id] for name in SCANS)
    assert sorted(choose.parents) == sorted(jobs[n].job_id for n in ["search", *SCANS])
    assert all(jobs[f"refine{i}"].parents == [choose.job_id] for i in range(3))
    # refine0 started from the best scan (0.6875) and walked to the answer.
    assert "refine --x 0.6875" in jobs["refine0"].args
    winner = job_dir(site, jobs["refine0"])
    assert json.loads((winner / "result.json").read_text()) == {"x": 0.6625, "misfit": 0.0025}
    assert "refine0: good enough; killed refine1, refine2" in (winner / "refine0.out").read_text()

    # The killed ones were stopped: no result.json, and the one that was running when the kill
    # came (refine1, beside refine0 on this machine's two or more cores) had not got far.
    assert jobs["refine1"] in ran, [e.to_state for e in backend_of.history(jobs["refine1"].job_id)]
    for job in killed:
        assert hops(backend_of, job)[-1] is S.USER_KILLED
        workdir = job_dir(site, job)
        assert not (workdir / "result.json").exists()
    out = (job_dir(site, jobs["refine1"]) / "refine1.out").read_text().splitlines()
    assert out and len(out) < 20 and all(": step " in line for line in out), out
    # A kill is routine: a start refused because the job was killed is no warning.
    logs = "".join(p.read_text() for p in (site.path / "log").glob("launcher_*.log"))
    refusals = [line for line in logs.splitlines() if "state change refused" in line]
    assert all(" INFO " in line for line in refusals), refusals


def processes_of(job_ids: list[str]) -> list[int]:
    """Live processes run for these jobs (their environment has ``BALSAM_JOB_ID``)."""
    marks = {f"BALSAM_JOB_ID={job_id}".encode() for job_id in job_ids}
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if marks & set(environ.split(b"\0")):
            found.append(int(entry.name))
    return found


def hops(backend: Backend, job: JobOut) -> list[S]:
    """The states a job went through, in order."""
    return [S(e.to_state) for e in backend.history(job.job_id)]

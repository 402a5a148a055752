"""A dynamic workflow: jobs that add jobs while they run, and a job that kills its siblings.

An adaptive search for the x in [0, 1] where a (stand-in) simulation's misfit is smallest::

    search ──┬── scan0 … scan7 ──┐          coarse scan, added by search
             └───────────────────┴── choose ──┬── refine0     local refinements, added by
                                              ├── refine1     choose from the 3 best scans;
                                              └── refine2     the first good enough kills
                                                              the others

Run it inside an active workflow database (``source balsamactivate NAME``) while a launcher
runs the ``dynamic-demo`` workflow, for example in another terminal::

    balsam launcher --wf-filter dynamic-demo --job-mode serial

    python dynamic_workflow.py

The driver adds one job, ``search``, and waits until it and every job it led to have ended.
The rest happens inside the running jobs, with the ``dag`` module (the launcher gives each job
``BALSAM_JOB_ID`` and ``BALSAM_DB_PATH``, so ``dag.current_job`` is the job itself):

* ``search`` adds eight coarse ``scan`` jobs over [0, 1] and a ``choose`` job that waits for
  all of them (``dag.add_job``, ``dag.spawn_child`` with extra ``parents``);
* ``choose`` reads the scans' results (``dag.parents``) and spawns one ``refine`` job from
  each of the three best points, best first;
* each ``refine`` walks towards a smaller misfit, one simulation per step; the first that
  gets under the tolerance kills its siblings that have not ended (``dag.kill``): the
  launcher stops the running ones (SIGTERM), the waiting ones never start. Only a refine
  that ends writes ``result.json``.

The steps are this same file, run by the launcher as the jobs' command. Exit status of the
driver: 0 when a refine found a good enough x, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from balsam.api import Job, JobQuerySet
from balsam.launcher import dag

WORKFLOW = "dynamic-demo"
APP = "dynamic-demo-step"
ENDED = ["JOB_FINISHED", "FAILED", "USER_KILLED"]

SCANS = 8  # coarse points over [0, 1]
REFINES = 3  # refinements, from the best scans
STEP = 0.005  # how far a refinement moves per step
TOLERANCE = 0.003  # good enough
MAX_STEPS = 40
SIMULATION_SECONDS = 0.25  # what one simulation costs here (a real one: hours)


def simulate(x: float) -> float:
    """The stand-in for an expensive simulation: the misfit at x (its minimum is at 0.66)."""
    time.sleep(SIMULATION_SECONDS)
    return round(abs(x - 0.66), 4)


def add_step(name: str, args: str, **fields: Any) -> dict[str, Any]:
    """The fields every job of the search has; nothing is copied from parents (each step
    reads what it needs where it lies)."""
    return {"name": name, "application": APP, "args": args, "input_files": "", **fields}


# --- the steps, as the launcher runs them (in the job's working directory) -----------------


def parents() -> JobQuerySet:
    """The current job's parents (``dag.parents`` is None only outside a Balsam job)."""
    assert dag.parents is not None, "the steps run as Balsam jobs"
    return dag.parents


def search(argv: list[str]) -> int:
    """Add the coarse scan, and the job that chooses from it."""
    scans = [
        dag.spawn_child(
            **add_step(f"scan{i}", f"scan --x {(i + 0.5) / SCANS}"), node_packing_count=4
        )
        for i in range(SCANS)
    ]
    dag.spawn_child(**add_step("choose", "choose"), parents=scans)
    print(f"search: added {len(scans)} scans and choose")
    return 0


def scan(argv: list[str]) -> int:
    """One coarse simulation."""
    x = float(argv[argv.index("--x") + 1])
    misfit = simulate(x)
    Path("result.json").write_text(json.dumps({"x": x, "misfit": misfit}))
    print(f"scan: misfit({x}) = {misfit}")
    return 0


def choose(argv: list[str]) -> int:
    """Spawn a refinement from each of the best scans (best first: they start first)."""
    results = [
        json.loads((Path(p.working_directory) / "result.json").read_text())
        for p in parents().filter(name__startswith="scan")
    ]
    best = sorted(results, key=lambda r: r["misfit"])[:REFINES]
    for i, start in enumerate(best):
        dag.spawn_child(**add_step(f"refine{i}", f"refine --x {start['x']}"), node_packing_count=4)
    print(f"choose: refining from {[r['x'] for r in best]}")
    return 0


def refine(argv: list[str]) -> int:
    """Walk towards a smaller misfit; when good enough, kill the sibling refinements."""
    me = dag.current_job
    assert me is not None, "refine runs as a Balsam job"
    x = float(argv[argv.index("--x") + 1])
    for step in range(1, MAX_STEPS + 1):
        misfit = simulate(x)
        print(f"{me.name}: step {step}: misfit({x:.4f}) = {misfit}", flush=True)
        if misfit < TOLERANCE:
            killed = kill_siblings(me)
            print(f"{me.name}: good enough; killed {', '.join(killed) or 'nothing'}")
            break
        x += STEP if simulate(x + STEP) < misfit else -STEP
    Path("result.json").write_text(json.dumps({"x": round(x, 4), "misfit": misfit}))
    return 0


def kill_siblings(me: Job) -> list[str]:
    """Kill the other children of this job's parent that have not ended; their names."""
    parent = parents().first()
    assert parent is not None, "a refine has a parent"
    # kill() passes over a sibling that ended meanwhile: no race to handle here.
    killed = parent.get_children().exclude(pk=me.pk).kill(recursive=True)
    return sorted(Job.objects.filter(job_id__in=killed).values_list("name", flat=True))


STEPS = {"search": search, "scan": scan, "choose": choose, "refine": refine}


# --- the driver ------------------------------------------------------------------------------


def family(root: Job) -> list[Job]:
    """``root`` and every job below it, as they are now."""
    found = {root.pk: root}
    frontier = [root]
    while frontier:
        for child in frontier.pop().get_children():
            if child.pk not in found:
                found[child.pk] = child
                frontier.append(child)
    return list(found.values())


def wait_for_family(root: Job, timeout: float) -> list[Job]:
    """Wait until ``root`` and every job it led to have ended. Jobs are only added by jobs
    that run, so once all the jobs seen have ended and no new one appeared, nothing will."""
    deadline = time.monotonic() + timeout
    jobs: list[Job] = []
    while True:
        seen = family(root)
        if len(seen) == len(jobs):
            return sorted(seen, key=lambda j: j.created_at or 0)
        jobs = seen
        _done, not_done = Job.objects.wait(jobs, timeout=max(0, deadline - time.monotonic()))
        if not_done:
            raise TimeoutError(f"not ended after {timeout} s: {[j.name for j in not_done]}")


def drive(argv: list[str]) -> int:
    """Start the search, wait for everything it spawned, print what happened."""
    argparse.ArgumentParser(description="Run the adaptive search and wait for it.").parse_args(argv)
    dag.add_app(APP, shlex.join([sys.executable, str(Path(__file__).resolve())]))
    root = Job(**add_step("search", "search"), workflow=WORKFLOW)
    root.save()

    jobs = wait_for_family(root, timeout=300)
    for job in jobs:
        print(f"{job.name:8} {job.state}")
    good = [
        json.loads(job.read_file_in_workdir("result.json"))
        for job in jobs
        if job.name.startswith("refine") and job.state == "JOB_FINISHED"
    ]
    good = [r for r in good if r["misfit"] < TOLERANCE]
    if not good:
        print("no refinement got under the tolerance", file=sys.stderr)
        return 1
    print(f"found x = {good[0]['x']} (misfit {good[0]['misfit']})")
    return 0


def main(argv: list[str]) -> int:
    """A step when the first word names one (the launcher's call), else the driver."""
    if argv and argv[0] in STEPS:
        return STEPS[argv[0]](argv[1:])
    return drive(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

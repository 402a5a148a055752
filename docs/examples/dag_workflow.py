"""A DAG: one preprocess step, four simulations side by side, one reduce step.

::

    prep ──┬── sim0 ──┬── reduce
           ├── sim1 ──┤
           ├── sim2 ──┤
           └── sim3 ──┘

Run it inside an active workflow database (``source balsamactivate NAME``) while a launcher
runs the ``dag-demo`` workflow, for example in another terminal::

    balsam launcher --wf-filter dag-demo --job-mode serial

    python dag_workflow.py                          # every job finishes
    python dag_workflow.py --run broken --fail 2    # sim2 fails: reduce never runs

The driver builds the DAG with the Python API (``parents=``, ``set_parents``) and waits for
the reduce step (``Job.objects.wait``). The steps are this same file, run by the launcher as
the jobs' command (``python dag_workflow.py prep|sim|reduce``):

* ``prep`` writes ``sweep.json``, the points to simulate;
* each ``sim`` gets ``sweep.json`` copied from its parent's working directory
  (``input_files``), simulates its point and writes ``result.json``;
* ``reduce`` finds its parents with the ``dag`` module (``dag.parents``), reads every
  ``result.json`` from their working directories and writes ``summary.json``.

``--run NAME`` prefixes the job names (``NAME-prep``, ...), so that several runs can share
the workflow; ``--fail K`` makes simulation K exit with an error. Exit status: 0 when the
reduce step finished, 1 when it did not.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from balsam import JobState
from balsam.api import Job
from balsam.launcher import dag

WORKFLOW = "dag-demo"
APP = "dag-demo-step"
SIMULATIONS = 4


# --- the steps, as the launcher runs them (in the job's working directory) -----------------


def prep(argv: list[str]) -> int:
    """Choose the points to simulate."""
    points = [round(0.5 * i, 2) for i in range(SIMULATIONS)]
    Path("sweep.json").write_text(json.dumps({"x": points}))
    print(f"prep: {len(points)} points {points}")
    return 0


def sim(argv: list[str]) -> int:
    """Simulate one point of the sweep (a parent's file, copied here) into result.json."""
    parser = argparse.ArgumentParser(prog="sim")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--fail", action="store_true", help="exit with an error (the demo)")
    args = parser.parse_args(argv)
    x = json.loads(Path("sweep.json").read_text())["x"][args.index]
    if args.fail:
        print(f"sim{args.index}: the solver diverged at x={x}", file=sys.stderr)
        return 1
    y = round(math.exp(-x) * math.cos(2 * x), 4)
    Path("result.json").write_text(json.dumps({"x": x, "y": y}))
    print(f"sim{args.index}: f({x}) = {y}")
    return 0


def reduce(argv: list[str]) -> int:
    """Read every parent's result.json from its working directory; write summary.json."""
    results = []
    for parent in dag.parents or []:
        path = Path(parent.working_directory) / "result.json"
        results.append(json.loads(path.read_text()))
    best = min(results, key=lambda r: r["y"])
    summary = {"points": len(results), "best_x": best["x"], "best_y": best["y"]}
    Path("summary.json").write_text(json.dumps(summary))
    print(f"reduce: {summary}")
    return 0


STEPS = {"prep": prep, "sim": sim, "reduce": reduce}


# --- the driver ------------------------------------------------------------------------------


def drive(argv: list[str]) -> int:
    """Build the DAG, wait for its last job, print what it found."""
    parser = argparse.ArgumentParser(description="Run the diamond DAG and wait for it.")
    parser.add_argument("--run", default="", help="prefix of the job names")
    parser.add_argument("--fail", type=int, help="make simulation K fail")
    args = parser.parse_args(argv)
    prefix = f"{args.run}-" if args.run else ""

    # One app for every step: this file, run by the job's Python.
    dag.add_app(APP, shlex.join([sys.executable, str(Path(__file__).resolve())]))

    def job(name: str, step: str, **fields: object) -> Job:
        return Job(name=prefix + name, workflow=WORKFLOW, application=APP, args=step, **fields)

    first = job("prep", "prep")
    first.save()
    sims = [
        job(
            f"sim{i}",
            f"sim --index {i}" + (" --fail" if i == args.fail else ""),
            parents=[first],
            input_files="sweep.json",
            node_packing_count=SIMULATIONS,
        )
        for i in range(SIMULATIONS)
    ]
    Job.objects.bulk_create(sims)
    # reduce reads its parents' files where they are: no copies (input_files="").
    last = job("reduce", "reduce", input_files="")
    last.set_parents(sims)
    last.save()

    # Every job, not only the last: a failed sim fails reduce at once, while the other sims
    # still run.
    everything = [first, *sims, last]
    _done, not_done = Job.objects.wait(everything, timeout=300)
    if not_done:
        print(f"not ended after 300 s: {[j.name for j in not_done]}", file=sys.stderr)
        return 1
    for each in everything:
        print(f"{each.name:14} {each.state}")
    if last.state is not JobState.JOB_FINISHED:
        print(f"{last.name} ended {last.state}: {last.history()[-1].message}")
        return 1
    summary = json.loads(last.read_file_in_workdir("summary.json"))
    print(f"best of {summary['points']} points: f({summary['best_x']}) = {summary['best_y']}")
    return 0


def main(argv: list[str]) -> int:
    """A step when the first word names one (the launcher's call), else the driver."""
    if argv and argv[0] in STEPS:
        return STEPS[argv[0]](argv[1:])
    return drive(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

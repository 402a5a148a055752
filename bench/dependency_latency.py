"""How fast a finished parent's children start: a chain and a fan-out, in one launcher and two.

Workloads (``/bin/true`` jobs, serial mode, one node of ``--slots`` CPUs per launcher):

* ``chain``: N jobs (default 200), each the child of the one before. Figure: per step, the time
  from the parent's run ending (its RUNNING -> RUN_DONE event) to the child's run starting (its
  -> RUNNING event), median, p90 and max; and the chain's whole span per step.
* ``fanout``: one parent and N children (default 1,000). Figures: from the parent's end to the
  first child's start, to every slot busy (the ``slots``-th start) and to the last start; and
  the children's start rate against the same launcher's rate on N independent jobs.

``--launchers 1`` runs everything in one launcher. ``--launchers 2`` puts alternate chain steps
(or, in the fan-out, the parent and the children) in two workflows, each run by its own launcher
(``--wf-filter``): every step then crosses from one launcher to the other, through the database.
Times come from the jobs' histories (the launchers' clocks; one host). Run from the repository
root with the venv active:

    python bench/dependency_latency.py chain --launchers 1
    python bench/dependency_latency.py chain --launchers 2
    python bench/dependency_latency.py fanout --launchers 1 --jobs 1000 --slots 16
    python bench/dependency_latency.py chain --db postgresql://postgres@127.0.0.1:5432/bench
    python bench/dependency_latency.py chain --compare-src /tmp/before/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import fresh_pg_database

WORKFLOWS = ("A", "B")


def prepare(
    root: Path, db: str, workload: str, jobs: int, slots: int, launchers: int, stage_in: bool
) -> None:
    """Make the site and its jobs (run by the tree under test, in a process of its own)."""
    from balsam.backends.factory import init_site, open_backend
    from balsam.config import save_settings
    from balsam.schemas import AppCreate, JobCreate

    site = init_site(root / "wf") if db == "sqlite" else init_site(root / "wf", kind="url", url=db)
    site.settings.platform.cpus_per_node = slots
    save_settings(site.path, site.settings)
    backend = open_backend(site)
    backend.create_app(AppCreate(name="T", executable="/bin/true"))
    count = jobs if workload == "chain" else jobs + 1
    ids = [str(uuid.uuid4()) for _ in range(count)]
    specs = []
    for i, jid in enumerate(ids):
        if workload == "chain":
            parents = [ids[i - 1]] if i else []
            workflow = WORKFLOWS[i % launchers]
        else:
            parents = [ids[0]] if i else []
            workflow = WORKFLOWS[min(i, 1) % launchers]
        specs.append(
            JobCreate(
                job_id=jid,
                name=f"j{i}",
                workflow=workflow,
                application="T",
                node_packing_count=slots,
                parents=parents,
                # Stage-in copies all of a parent's files by default ("*"): along a chain each
                # step copies every file before it. Measured apart (--stage-in).
                input_files="*" if stage_in else "",
            )
        )
    backend.create_jobs(specs)
    backend.close()


def times(root: Path) -> dict[str, dict[str, float]]:
    """Each job's run start and end (epoch seconds) from its history, by job name."""
    from balsam.backends.factory import open_backend
    from balsam.config import load_site
    from balsam.schemas import JobQuery

    backend = open_backend(load_site(root / "wf"))
    names = {job.job_id: job.name for job in backend.query_jobs(JobQuery())}
    found: dict[str, dict[str, float]] = {name: {} for name in names.values()}
    for event in backend.events(JobQuery()):
        when = event.timestamp.timestamp()
        if event.to_state == "RUNNING":
            found[names[event.job_id]]["start"] = when
        elif event.from_state == "RUNNING":
            found[names[event.job_id]]["end"] = when
    backend.close()
    return found


def run(args: argparse.Namespace, src: Path | None) -> dict[str, float]:
    """One measured run of the workload with the tree ``src`` (None: this one)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with tempfile.TemporaryDirectory(prefix="deplat-") as tmp:
        root = Path(tmp)
        db = args.db if args.db == "sqlite" else fresh_pg_database(args.db)
        step = [sys.executable, __file__, "_prepare", args.workload, "--jobs", str(args.jobs)]
        step += ["--slots", str(args.slots), "--db", db, "--root", str(root)]
        step += ["--launchers", str(args.launchers)] + (["--stage-in"] if args.stage_in else [])
        subprocess.run(step, env=env, check=True)
        env["BALSAM_DB_PATH"] = str(root / "wf")
        balsam = str(Path(sys.executable).parent / "balsam")
        procs = []
        t0 = time.perf_counter()
        for wf in WORKFLOWS[: args.launchers]:
            argv = [balsam, "launcher", "--consume-all", "--job-mode", "serial"]
            if args.launchers > 1:
                argv += ["--wf-filter", wf]
            procs.append(subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL))
        codes = [proc.wait() for proc in procs]
        took = time.perf_counter() - t0
        reader = [sys.executable, __file__, "_times", "--root", str(root)]
        found = json.loads(subprocess.run(reader, env=env, check=True, capture_output=True).stdout)
    if any(codes) or any("start" not in t or "end" not in t for t in found.values()):
        raise SystemExit(f"a launcher failed ({codes}) or some job did not run")
    figures = chain_figures(found) if args.workload == "chain" else fanout_figures(found, args)
    figures["seconds"] = took
    return figures


def chain_figures(found: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per-step parent end -> child start, in milliseconds."""
    steps = [
        1000 * (found[f"j{i}"]["start"] - found[f"j{i - 1}"]["end"]) for i in range(1, len(found))
    ]
    span = found[f"j{len(found) - 1}"]["start"] - found["j0"]["start"]
    return {
        "median": statistics.median(steps),
        "p90": statistics.quantiles(steps, n=10)[-1],
        "max": max(steps),
        "span per step": 1000 * span / len(steps),
    }


def fanout_figures(
    found: dict[str, dict[str, float]], args: argparse.Namespace
) -> dict[str, float]:
    """Parent end -> first child start, -> every slot busy, -> last child start (ms)."""
    end = found["j0"]["end"]
    starts = sorted(t["start"] for name, t in found.items() if name != "j0")
    return {
        "first": 1000 * (starts[0] - end),
        "slots busy": 1000 * (starts[min(args.slots, len(starts)) - 1] - end),
        "last": 1000 * (starts[-1] - end),
        "children/s": len(starts) / max(starts[-1] - end, 1e-9),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["chain", "fanout", "_prepare", "_times"])
    parser.add_argument("extra", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=None, help="200 for chain, 1000 for fanout")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--launchers", type=int, choices=[1, 2], default=1)
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument(
        "--stage-in", action="store_true", help="keep input_files='*' (copy parents' files)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compare-src", type=Path, help="also run source tree DIR each round")
    args = parser.parse_args()
    if args.workload == "_prepare":
        prepare(
            args.root, args.db, args.extra, args.jobs, args.slots, args.launchers, args.stage_in
        )
        return 0
    if args.workload == "_times":
        print(json.dumps(times(args.root)))
        return 0
    if args.jobs is None:
        args.jobs = 200 if args.workload == "chain" else 1000
    variants: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.compare_src is not None:
        variants.append((_label(args.compare_src), args.compare_src))
    print(
        f"{args.workload} of {args.jobs} x /bin/true, {args.launchers} launcher(s), "
        f"{args.slots} slots each, db={args.db.split(':')[0]}, rounds={args.rounds} (ms)"
    )
    for rnd in range(1, args.rounds + 1):
        for label, src in variants:
            figures = run(args, src)
            shown = "  ".join(f"{k} {v:8.2f}" for k, v in figures.items())
            print(f"  round {rnd}: {shown}  [{label}]", flush=True)
    return 0


def _label(src: Path) -> str:
    """The commit a source tree is at, for the figures' labels."""
    out = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or str(src)


if __name__ == "__main__":
    raise SystemExit(main())

"""A thousand slots busy: slot utilization and launcher CPU per job as the allocation grows.

On this one host, a serial-mode launcher is given an allocation of N nodes x C slots: node 0 is
the launcher's own (its local worker), and the other N-1 are worker processes started by one
``mpiexec`` step, exactly as on a real multi-node allocation except that every "node" is this
host. Each slot runs ``sleep S`` jobs, ``--jobs-per-slot`` of them (at most ``--max-jobs``).

Figures, per allocation size:

* utilization: busy slot-seconds (each job's RUNNING to RUN_DONE, from its history) over
  slots x makespan, the makespan being the launcher's whole run (start-up and exit included);
  and the same over the span from the first start to the last end (steady state);
* launcher CPU per job: the launcher process's CPU (its loop and helper threads) over jobs,
  and the workers' (with their jobs') over jobs.

Each size runs in a fresh process. Run from the repository root with the venv active:

    python bench/large_allocation.py                       # 2, 64, 256 and 1,024 slots
    python bench/large_allocation.py --slots 1024 --compare-src /tmp/before/src
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_SLOTS = (2, 64, 256, 1024)


def plan(slots: int, per_node: int) -> tuple[int, int]:
    """(nodes, cpus per node) for an allocation of ``slots``."""
    cpus = min(per_node, slots)
    return max(1, slots // cpus), cpus


def run_one(args: argparse.Namespace) -> dict[str, float]:
    """Build the site, run the launcher in this process, measure it (one allocation size)."""
    from sqlalchemy import create_engine, text

    from balsam.backends.factory import init_site, open_backend
    from balsam.config import save_settings
    from balsam.domain.resources import NodeSpec
    from balsam.launcher.options import JobMode, LauncherOptions
    from balsam.launcher.placement import NodePool
    from balsam.launcher.runner import Launcher
    from balsam.platform.mpi import MpichLauncher, MpiRun
    from balsam.schemas import AppCreate, JobCreate

    class LocalNodes(MpichLauncher):
        """Starts the "remote" nodes' workers on this host: every node is this host."""

        def placement(self, run: MpiRun) -> list[str]:
            ranks = str(run.total_ranks)
            return ["-n", ranks, "-ppn", ranks, "-hosts", "localhost"]

    root = Path(args.root)
    url = args.db
    site = init_site(root / "wf") if url == "sqlite" else init_site(root / "wf", "url", url)
    site.settings.platform.cpus_per_node = args.cpus
    save_settings(site.path, site.settings)
    backend = open_backend(site, retry=False) if _new_api() else open_backend(site)
    backend.create_app(AppCreate(name="Sleep", executable=f"sleep {args.seconds}"))
    for start in range(0, args.jobs, 5000):
        specs = [
            JobCreate(
                name=f"j{i}", workflow="big", application="Sleep", node_packing_count=args.cpus
            )
            for i in range(start, min(args.jobs, start + 5000))
        ]
        backend.create_jobs(specs)
    pool = NodePool([NodeSpec(f"n{i}", args.cpus) for i in range(args.nodes)])
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    mpi = LocalNodes(executable=mpiexec)
    options = LauncherOptions(job_mode=JobMode.SERIAL, consume_all=True)
    launcher = Launcher(site, backend, options, pool, mpi, "n0", 0, dict(os.environ))
    kids0 = _children_cpu()
    began = datetime.now(UTC).replace(tzinfo=None)
    cpu0, t0 = time.process_time(), time.perf_counter()
    code = launcher.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    args.began = began
    workers = _children_cpu() - kids0
    backend.close()
    engine = create_engine(site.database_url())
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT job_id, to_state, timestamp FROM events "
                "WHERE to_state IN ('RUNNING', 'RUN_DONE')"
            )
        ).all()
        finished = conn.execute(
            text("SELECT count(*) FROM jobs WHERE state = 'JOB_FINISHED'")
        ).scalar_one()
    engine.dispose()
    return _figures(rows, code, wall, cpu, workers, int(finished), args)


def _new_api() -> bool:
    from inspect import signature

    from balsam.backends.factory import open_backend

    return "retry" in signature(open_backend).parameters


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _figures(
    rows: list[object],
    code: int,
    wall: float,
    cpu: float,
    workers: float,
    finished: int,
    args: argparse.Namespace,
) -> dict[str, float]:
    starts: dict[str, datetime] = {}
    busy, first, last = 0.0, None, None
    for job_id, to_state, stamp in rows:  # type: ignore[misc]
        when = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
        when = when.replace(tzinfo=None)
        if to_state == "RUNNING":
            starts[job_id] = when
            first = when if first is None or when < first else first
        elif job_id in starts:
            busy += (when - starts[job_id]).total_seconds()
            last = when if last is None or when > last else last
    slots = args.nodes * args.cpus
    span = (last - first).total_seconds() if first and last else wall
    lead = (first - args.began).total_seconds() if first else 0.0
    return {
        "lead": lead,
        "tail": wall - lead - span,
        "slots": slots,
        "jobs": args.jobs,
        "finished": finished,
        "exit": code,
        "makespan": wall,
        "ideal": args.jobs * args.seconds / slots,
        "utilization": busy / (slots * wall),
        "steady": busy / (slots * span),
        "launcher_ms": cpu / args.jobs * 1e3,
        "workers_ms": workers / args.jobs * 1e3,
    }


def measure(slots: int, args: argparse.Namespace, src: Path | None) -> dict[str, float]:
    """One allocation size in a fresh process (``src``: another source tree's launcher)."""
    nodes, cpus = plan(slots, args.per_node)
    jobs = min(args.max_jobs, slots * args.jobs_per_slot)
    root = Path(tempfile.mkdtemp(prefix="balsam-big-"))
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    db = args.db
    if db != "sqlite":
        sys.path.insert(0, str(Path(__file__).parent))
        from benchlib import fresh_pg_database

        db = fresh_pg_database(db)
    cmd = [
        sys.executable,
        __file__,
        "_one",
        "--nodes",
        str(nodes),
        "--cpus",
        str(cpus),
        "--jobs",
        str(jobs),
        "--seconds",
        str(args.seconds),
        "--db",
        db,
        "--root",
        str(root),
    ]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"the run failed:\n{out.stderr[-3000:]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(label: str, fig: dict[str, float]) -> None:
    print(
        f"  {fig['slots']:5.0f} slots {fig['jobs']:6.0f} jobs  makespan {fig['makespan']:6.1f} s "
        f"(ideal {fig['ideal']:5.1f})  utilization {fig['utilization']:6.1%} "
        f"(steady {fig['steady']:6.1%}; first start {fig['lead']:4.1f} s, after the last end "
        f"{fig['tail']:4.1f} s)  launcher {fig['launcher_ms']:6.3f} ms/job  "
        f"workers+jobs {fig['workers_ms']:6.3f} ms/job  finished {fig['finished']:.0f} "
        f"exit {fig['exit']:.0f}  [{label}]",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("_one", help=argparse.SUPPRESS)
    for name in ("--nodes", "--cpus", "--jobs"):
        one.add_argument(name, type=int, required=True)
    one.add_argument("--seconds", type=float, required=True)
    one.add_argument("--db", required=True)
    one.add_argument("--root", required=True)
    parser.add_argument("--slots", default=",".join(map(str, DEFAULT_SLOTS)))
    parser.add_argument("--per-node", type=int, default=16, help="slots per node (16)")
    parser.add_argument("--seconds", type=float, default=2.0, help="each job sleeps this (2)")
    parser.add_argument("--jobs-per-slot", type=int, default=20)
    parser.add_argument("--max-jobs", type=int, default=20_000)
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument("--compare-src", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    if args.command == "_one":
        print(json.dumps(run_one(args)))
        return 0
    print(
        f"sleep {args.seconds:g} s jobs, {args.per_node} slots per node, db={args.db.split(':')[0]}"
    )
    ok = True
    for slots in (int(s) for s in args.slots.split(",")):
        variants: list[tuple[str, Path | None]] = [("this tree", None)]
        if args.compare_src is not None:
            variants.append((str(args.compare_src), args.compare_src.resolve()))
        for label, src in variants:
            fig = measure(slots, args, src)
            report(label, fig)
            ok = ok and fig["exit"] == 0 and fig["finished"] == fig["jobs"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

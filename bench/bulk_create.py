"""Bulk creation at database speed: ``BalsamJob.objects.bulk_create`` against a bare executemany.

A campaign script builds N ``BalsamJob`` objects (each with a parent among 1,000 jobs made
before) and saves them in one ``bulk_create`` call: validated, all or nothing. The baseline,
in the same invocation, writes the same rows (the job rows, one dependency edge and the two
history rows per job that the call makes) with the database driver's own ``executemany`` in
one transaction, and nothing else: the floor for any Python client.

Figures: jobs per second of the call (and of the baseline), and memory per job: the peak the
call adds over the objects it was given, and the whole process's growth per job (the objects
included). Each measurement runs in a fresh process. From the repository root, venv active:

    python bench/bulk_create.py --jobs 100000
    python bench/bulk_create.py --jobs 100000 --db postgresql://postgres@127.0.0.1:PORT/bench
    python bench/bulk_create.py --jobs 20000 --compare-src /tmp/before/src
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
import uuid
from datetime import UTC, datetime
from pathlib import Path

PARENTS = 1000


def rss_kb() -> int:
    """This process's resident memory now (KiB)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_kb() -> int:
    """This process's peak resident memory so far (KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def make_site(root: Path, db: str) -> object:
    from balsam.backends.factory import init_site

    return init_site(root / "wf") if db == "sqlite" else init_site(root / "wf", "url", db)


def run_api(args: argparse.Namespace) -> dict[str, float]:
    """The user's path: BalsamJob objects, one bulk_create."""
    from balsam.api import use_backend
    from balsam.backends.factory import open_backend
    from balsam.core.models import BalsamJob
    from balsam.schemas import AppCreate

    site = make_site(Path(args.root), args.db)
    backend = open_backend(site)  # type: ignore[arg-type]
    backend.create_app(AppCreate(name="Sim", executable="python sim.py"))
    with use_backend(backend, site):  # type: ignore[arg-type]
        parents = BalsamJob.objects.bulk_create(
            [BalsamJob(name=f"p{i}", workflow="w", application="Sim") for i in range(PARENTS)]
        )
        start_rss = rss_kb()
        jobs = [
            BalsamJob(
                name=f"sim{i}",
                workflow="w",
                application="Sim",
                args=f"--seed {i} --steps 1000",
                num_nodes=1,
                ranks_per_node=4,
                parents=[parents[i % PARENTS]],
                input_files="",
            )
            for i in range(args.jobs)
        ]
        built_rss = rss_kb()
        t0 = time.perf_counter()
        BalsamJob.objects.bulk_create(jobs)
        took = time.perf_counter() - t0
        end_rss = rss_kb()
        count = BalsamJob.objects.filter(workflow="w").count() - PARENTS
    backend.close()
    return {
        "seconds": took,
        "count": count,
        "call_peak_kb_per_job": max(0, peak_kb() - built_rss) / args.jobs,
        "objects_kb_per_job": (built_rss - start_rss) / args.jobs,
        "total_kb_per_job": (max(end_rss, peak_kb()) - start_rss) / args.jobs,
    }


def run_bare(args: argparse.Namespace) -> dict[str, float]:
    """The floor: the same rows through the driver's executemany, one transaction."""
    from sqlalchemy import create_engine

    from balsam.backends.factory import open_backend
    from balsam.schemas import AppCreate, JobCreate

    site = make_site(Path(args.root), args.db)
    backend = open_backend(site)  # type: ignore[arg-type]
    backend.create_app(AppCreate(name="Sim", executable="python sim.py"))
    made = backend.create_jobs(
        [JobCreate(name=f"p{i}", workflow="w", application="Sim") for i in range(PARENTS)]
    )
    parents = [j.job_id for j in made]
    backend.close()
    url = site.database_url()  # type: ignore[attr-defined]
    engine = create_engine(url)
    sqlite = url.startswith("sqlite")
    mark = "?" if sqlite else "%s"
    now = datetime.now(UTC).isoformat(" ") if sqlite else datetime.now(UTC)
    names = [
        "job_id",
        "name",
        "workflow",
        "description",
        "application",
        "args",
        "num_nodes",
        "ranks_per_node",
        "threads_per_rank",
        "threads_per_core",
        "gpus_per_rank",
        "cpu_affinity",
        "node_packing_count",
        "wall_time_minutes",
        "environ_vars",
        "mpi_flags",
        "input_files",
        "stage_in_url",
        "stage_out_files",
        "stage_out_url",
        "post_error_handler",
        "post_timeout_handler",
        "auto_timeout_retry",
        "wait_for_parents",
        "max_error_retries",
        "max_timeout_retries",
        "max_lost_retries",
        "data",
        "tags",
        "state",
        "state_timestamp",
        "created_at",
        "working_directory",
        "error_count",
        "timeout_count",
        "lost_count",
        "cpus_needed",
        "gpus_needed",
    ]
    insert_jobs = f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"
    insert_edges = f"INSERT INTO job_parents (parent_id, child_id) VALUES ({mark}, {mark})"
    insert_events = (
        "INSERT INTO events (job_id, timestamp, from_state, to_state, message) "
        f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark})"
    )
    t0 = time.perf_counter()
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        for start in range(0, args.jobs, 5000):
            rows, edges, events = [], [], []
            for i in range(start, min(args.jobs, start + 5000)):
                job_id = str(uuid.uuid4())
                rows.append(
                    (
                        job_id,
                        f"sim{i}",
                        "w",
                        "",
                        "Sim",
                        f"--seed {i} --steps 1000",
                        1,
                        4,
                        1,
                        1,
                        0,
                        "none",
                        1,
                        1,
                        "{}",
                        "",
                        "",
                        "",
                        "",
                        "",
                        False,
                        False,
                        True,
                        True,
                        0,
                        3,
                        3,
                        "{}",
                        "{}",
                        "AWAITING_PARENTS",
                        now,
                        now,
                        f"data/w/sim{i}_{job_id[:8]}",
                        0,
                        0,
                        0,
                        4,
                        0,
                    )
                )
                edges.append((parents[i % PARENTS], job_id))
                events.append((job_id, now, "", "CREATED", "created"))
                events.append((job_id, now, "CREATED", "AWAITING_PARENTS", ""))
            cur.executemany(insert_jobs, rows)
            cur.executemany(insert_edges, edges)
            cur.executemany(insert_events, events)
        conn.commit()
    finally:
        conn.close()
    took = time.perf_counter() - t0
    engine.dispose()
    return {"seconds": took, "count": args.jobs}


def measure(variant: str, args: argparse.Namespace, src: Path | None) -> dict[str, float]:
    """One measurement in a fresh process on a fresh database."""
    root = Path(tempfile.mkdtemp(prefix="balsam-bulk-"))
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
        variant,
        "--jobs",
        str(args.jobs),
        "--db",
        db,
        "--root",
        str(root),
    ]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{variant} failed:\n{out.stderr[-3000:]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="run")
    parser.add_argument("variant", nargs="?", default="")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument("--root", default="")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare-src", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    if args.command == "_one":
        run = run_api if args.variant == "api" else run_bare
        print(json.dumps(run(args)))
        return 0
    kind = args.db.split(":")[0]
    print(f"bulk_create of {args.jobs} jobs with parents, db={kind}, rounds={args.rounds}")
    variants: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.compare_src is not None:
        variants.append((str(args.compare_src), args.compare_src.resolve()))
    ok = True
    for n in range(1, args.rounds + 1):
        bare = measure("bare", args, None)
        rate = args.jobs / bare["seconds"]
        print(f"  round {n}: bare executemany {rate:9.0f} jobs/s", flush=True)
        for label, src in variants:
            fig = measure("api", args, src)
            ok = ok and fig["count"] == args.jobs
            print(
                f"           bulk_create      {args.jobs / fig['seconds']:9.0f} jobs/s "
                f"({bare['seconds'] / fig['seconds']:5.1%} of bare)  "
                f"call peak {fig['call_peak_kb_per_job']:5.2f} KiB/job, objects "
                f"{fig['objects_kb_per_job']:5.2f} KiB/job, whole "
                f"{fig['total_kb_per_job']:5.2f} KiB/job  [{label}]",
                flush=True,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""How long ``balsam report`` takes, and how much memory, on a big campaign's event log.

Makes a workflow database with ``balsam init`` (SQLite, or ``--db-url`` for PostgreSQL) and
fills it with the bulk path the other benchmarks use: N finished campaign jobs, each with the
events a launcher leaves (created, fast-forwarded to PREPROCESSED, RUNNING, the run's end and
its fast-forward: 8 per job; 1 in 20 ends RUN_ERROR -> FAILED, 6 events), spread over
``--hours`` of 16 batch jobs of 64 nodes. Then times, as separate processes, each the median
of ``--rounds``:

* compute: ``campaign_report()`` and ``summary_text()`` in a fresh Python (no plots);
* ``balsam report --out DIR`` (the whole command, plots included);

with each process's peak RSS (its VmHWM).

    python bench/report_scale.py --jobs 1000000
    python bench/report_scale.py --jobs 200000 --db postgresql://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BALSAM = Path(sys.executable).parent / "balsam"
HOPS_DONE = [
    ("", "CREATED"),
    ("CREATED", "READY"),
    ("READY", "STAGED_IN"),
    ("STAGED_IN", "PREPROCESSED"),
    ("PREPROCESSED", "RUNNING"),
    ("RUNNING", "RUN_DONE"),
    ("RUN_DONE", "POSTPROCESSED"),
    ("POSTPROCESSED", "JOB_FINISHED"),
]
HOPS_FAILED = [*HOPS_DONE[:5], ("RUNNING", "RUN_ERROR"), ("RUN_ERROR", "FAILED")]
BATCH_JOBS, BATCH_NODES = 16, 64
COMPUTE = (
    "from balsam.api.analytics import campaign_report, summary_text; "
    "from balsam.backends.factory import open_active_backend; "
    "site, backend = open_active_backend(); "
    "print(summary_text(campaign_report(backend)))"
)


def make_site(root: Path, db: str) -> Path:
    """benchlib's site, imported only here (it pulls in SQLAlchemy)."""
    from benchlib import make_site as made

    return made(root, db)


def job_and_events(
    rng: random.Random, t0: datetime, span: float
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """One job row that ran somewhere in ``span`` seconds after ``t0``, with its events."""
    from benchlib import job_row

    failed = rng.random() < 0.05
    start = t0 + timedelta(seconds=rng.uniform(0, span))
    end = start + timedelta(seconds=rng.expovariate(1 / 120))
    row = job_row("FAILED" if failed else "JOB_FINISHED", end)
    row.update(
        workflow=f"wf{rng.randrange(8)}",
        created_at=t0,
        node_packing_count=rng.choice([1, 4]),
        return_code=1 if failed else 0,
        error_count=int(failed),
    )
    hops = HOPS_FAILED if failed else HOPS_DONE
    times = [t0] * 4 + [start] + [end] * (len(hops) - 5)
    events = [
        {"job_id": row["job_id"], "timestamp": when, "from_state": a, "to_state": b, "message": ""}
        for (a, b), when in zip(hops, times, strict=True)
    ]
    return row, events


def fill(site: Path, jobs: int, hours: float) -> tuple[float, int]:
    """Insert ``jobs`` jobs with their events and the batch jobs; returns (seconds, events).

    Run in its own process (``--fill-into``), so that the measuring process stays small: a
    child's peak RSS counts the parent's pages it was forked with.
    """
    from benchlib import CHUNK
    from sqlalchemy import insert, text

    from balsam.backends.factory import open_backend
    from balsam.config import load_site
    from balsam.schemas import AppCreate
    from balsam.store.tables import EventRow, JobRow

    backend = open_backend(load_site(site), retry=False)
    backend.create_app(AppCreate(name="T", executable="true"))
    engine = backend.engine  # type: ignore[attr-defined]
    rng = random.Random(1)
    t0 = datetime.now(UTC) - timedelta(hours=hours + 1)
    started, written = time.perf_counter(), 0
    with engine.begin() as conn:
        for first in range(0, jobs, CHUNK):
            pairs = [job_and_events(rng, t0, hours * 3600) for _ in range(min(CHUNK, jobs - first))]
            conn.execute(insert(JobRow), [row for row, _ in pairs])
            events = [e for _, evs in pairs for e in evs]
            conn.execute(insert(EventRow), events)
            written += len(events)
        add_batch_jobs(conn, t0, hours)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    backend.close()
    return time.perf_counter() - started, written


def add_batch_jobs(conn: Any, t0: datetime, hours: float) -> None:
    """BATCH_JOBS allocations of BATCH_NODES nodes, each running through the whole span."""
    from sqlalchemy import insert

    from balsam.store.tables import BatchJobEventRow, BatchJobRow

    end = t0 + timedelta(hours=hours, minutes=10)
    for i in range(1, BATCH_JOBS + 1):
        conn.execute(
            insert(BatchJobRow),
            [{"id": i, "scheduler": "local", "scheduler_id": str(i), "project": "p", "queue": "q",
              "num_nodes": BATCH_NODES, "wall_time_minutes": hours * 60 + 10, "job_mode": "serial",
              "wf_filter": None, "state": "finished", "status_message": "", "script": None,
              "client_key": None, "created_at": t0, "updated_at": end}],
        )  # fmt: skip
        hops = [("", "queued", t0), ("queued", "running", t0), ("running", "finished", end)]
        conn.execute(
            insert(BatchJobEventRow),
            [{"batch_job_id": i, "timestamp": w, "from_state": a, "to_state": b, "message": ""}
             for a, b, w in hops],
        )  # fmt: skip


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - began
    if status != 0:
        raise SystemExit(f"{argv[0]} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return took, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fill-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill_into:
        seconds, events = fill(args.fill_into, args.jobs, args.hours)
        print(f"{seconds} {events}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        site = make_site(Path(tmp), args.db)
        filler = [sys.executable, __file__, "--fill-into", str(site), "--jobs", str(args.jobs)]
        filled = subprocess.run([*filler, "--hours", str(args.hours)], check=True,
                                capture_output=True, text=True).stdout.split()  # fmt: skip
        seconds, events = float(filled[0]), int(filled[1])
        kind = "sqlite" if args.db == "sqlite" else "postgresql"
        print(f"{args.jobs} jobs, {events} events, db={kind}, filled in {seconds:.0f} s")
        print(f"  median of {args.rounds} run(s); peak RSS: the largest")
        env = {**os.environ, "BALSAM_DB_PATH": str(site)}
        runs = {
            "compute + summary (no plots)": [sys.executable, "-c", COMPUTE],
            "balsam report (with plots)": [str(BALSAM), "report", "--out", f"{tmp}/out"],
        }
        for label, argv in runs.items():
            results = [timed(argv, env) for _ in range(args.rounds)]
            wall = statistics.median(r[0] for r in results)
            rss = max(r[1] for r in results)
            print(f"  {label:<30} {wall:>7.1f} s   peak RSS {rss:>6.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

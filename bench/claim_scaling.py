"""Claim latency against database size: it must stay flat from 1,000 to 1,000,000 jobs.

Fills a database with N runnable jobs (plus as many finished ones, as a real campaign has),
then times claim_jobs(limit=256) + record of the batch as RUNNING, repeated. Prints one line
per size: median and p90 claim time in milliseconds.

    python bench/claim_scaling.py --db sqlite --sizes 1000,10000,100000,1000000
    python bench/claim_scaling.py --db postgresql+psycopg://postgres@127.0.0.1:5432/bench
    python bench/claim_scaling.py --sizes 1000,1000000 --compare-src /tmp/before/src

With ``--compare-src``, each size is measured for this tree and for that one, alternately, each
in a fresh process on a fresh database built by its own migrations.
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
from datetime import UTC, datetime
from pathlib import Path

from benchlib import CHUNK, fresh_pg_database, job_row
from sqlalchemy import insert, text

from balsam.backends.local import LocalBackend
from balsam.schemas import AppCreate, ClaimRequest
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from balsam.store.tables import JobRow


def fill(backend: LocalBackend, target: int, have: int) -> None:
    """Add runnable and finished jobs until there are ``target`` of each."""
    now = datetime.now(UTC)
    with backend.engine.begin() as conn:
        for start in range(have, target, CHUNK):
            n = min(CHUNK, target - start)
            conn.execute(insert(JobRow), [job_row("PREPROCESSED", now) for _ in range(n)])
            conn.execute(insert(JobRow), [job_row("JOB_FINISHED", now) for _ in range(n)])


def claims() -> dict[str, ClaimRequest]:
    """The claims launchers make: serial mode (one-node jobs), mpi mode (a 4-node launcher),
    saying what their nodes have where the tree's claims can (16 CPUs, no GPUs); and a claim
    that says nothing of its nodes or workflows (an API or benchmark client's)."""
    fits = {"cpus_per_node": 16, "gpus_per_node": 0}
    fits = {k: v for k, v in fits.items() if k in ClaimRequest.model_fields}
    return {
        "serial": ClaimRequest(limit=256, workflows=["bench"], serial_only=True, **fits),
        "mpi": ClaimRequest(limit=256, workflows=["bench"], max_nodes=4, **fits),
        "any": ClaimRequest(limit=256),
    }


def time_claims(backend: LocalBackend, rounds: int, request: ClaimRequest) -> list[float]:
    """Seconds per claim of 256 jobs; each batch is released again so the pool stays full."""
    sess = backend.open_session("bench", "host", 0)
    times = []
    numbered = "claim_seq" in ClaimRequest.model_fields
    for n in range(1, rounds + 1):
        # Numbered as a launcher numbers them (where the tree's claims are).
        asked = request.model_copy(update={"claim_seq": n}) if numbered else request
        t0 = time.perf_counter()
        jobs = backend.claim_jobs(sess.id, asked)
        times.append(time.perf_counter() - t0)
        assert len(jobs) == 256, len(jobs)
        backend.release_jobs(sess.id, [j.job_id for j in jobs])
    backend.close_session(sess.id)
    return times


def measure_sizes(db: str, sizes: list[int], rounds: int) -> list[list[float]]:
    """[serial median, serial p90, mpi median, mpi p90] in ms for each size, on one database."""
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}" if db == "sqlite" else db
    if db != "sqlite":
        url = fresh_pg_database(url)
    engine = make_engine(url)
    upgrade(engine)
    backend = LocalBackend(engine)
    backend.create_app(AppCreate(name="T", executable="true"))
    rows, have = [], 0
    for size in sizes:
        fill(backend, size, have)
        have = size
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE jobs"))
        cells: list[float] = []
        for request in claims().values():
            times = sorted(time_claims(backend, rounds, request))
            cells += [statistics.median(times) * 1000, times[int(0.9 * (len(times) - 1))] * 1000]
        rows.append(cells)
    backend.close()
    return rows


def in_process(src: Path | None, db: str, size: int, rounds: int) -> list[float]:
    """One size measured in a fresh process (``src``: another source tree)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, __file__, "--one", str(size), "--db", db, "--rounds", str(rounds)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL (empty db)")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--compare-src", type=Path, default=None, metavar="DIR")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_sizes(args.db, [args.one], args.rounds)[0]))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    kind = "sqlite" if args.db == "sqlite" else "postgresql"
    print(f"db={kind} rounds={args.rounds} claim limit=256 (median / p90 ms)")
    print(
        f"{'runnable jobs':>14} {'total rows':>11} {'serial mode':>16} {'mpi mode':>16}"
        f" {'any (no fit)':>16}"
    )
    if args.compare_src is None:
        for size, cells in zip(sizes, measure_sizes(args.db, sizes, args.rounds), strict=True):
            report(size, cells, "")
        return 0
    for size in sizes:
        for label, src in (("this tree", None), (str(args.compare_src), args.compare_src)):
            report(size, in_process(src, args.db, size, args.rounds), f"  [{label}]")
    return 0


def report(size: int, cells: list[float], label: str) -> None:
    serial = f"{cells[0]:>7.2f} / {cells[1]:>6.2f}"
    mpi = f"{cells[2]:>7.2f} / {cells[3]:>6.2f}"
    unfit = f"{cells[4]:>7.2f} / {cells[5]:>6.2f}" if len(cells) > 4 else "-"
    print(f"{size:>14,} {2 * size:>11,} {serial:>16} {mpi:>16} {unfit:>16}{label}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

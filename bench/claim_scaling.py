"""Claim latency against database size: it must stay flat from 1,000 to 1,000,000 jobs.

Fills a database with N runnable jobs (plus as many finished ones, as a real campaign has),
then times claim_jobs(limit=256) + record of the batch as RUNNING, repeated. Prints one line
per size: median and p90 claim time in milliseconds.

    python bench/claim_scaling.py --db sqlite --sizes 1000,10000,100000,1000000
    python bench/claim_scaling.py --db postgresql+psycopg://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import statistics
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


#: The claims launchers make: serial mode (one-node jobs), mpi mode (a 4-node launcher).
CLAIMS = {
    "serial": ClaimRequest(limit=256, workflows=["bench"], serial_only=True),
    "mpi": ClaimRequest(limit=256, workflows=["bench"], max_nodes=4),
}


def time_claims(backend: LocalBackend, rounds: int, request: ClaimRequest) -> list[float]:
    """Seconds per claim of 256 jobs; each batch is released again so the pool stays full."""
    sess = backend.open_session("bench", "host", 0)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jobs = backend.claim_jobs(sess.id, request)
        times.append(time.perf_counter() - t0)
        assert len(jobs) == 256, len(jobs)
        backend.release_jobs(sess.id, [j.job_id for j in jobs])
    backend.close_session(sess.id)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL (empty db)")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    url = args.db
    if url == "sqlite":
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    else:
        url = fresh_pg_database(url)
    engine = make_engine(url)
    upgrade(engine)
    backend = LocalBackend(engine)
    backend.create_app(AppCreate(name="T", executable="true"))
    print(f"db={engine.dialect.name} rounds={args.rounds} claim limit=256 (median / p90 ms)")
    print(f"{'runnable jobs':>14} {'total rows':>11} {'serial mode':>16} {'mpi mode':>16}")
    have = 0
    for size in (int(s) for s in args.sizes.split(",")):
        fill(backend, size, have)
        have = size
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE jobs"))
        cells = []
        for request in CLAIMS.values():
            times = sorted(time_claims(backend, args.rounds, request))
            med = statistics.median(times) * 1000
            p90 = times[int(0.9 * (len(times) - 1))] * 1000
            cells.append(f"{med:>7.2f} / {p90:>6.2f}")
        print(f"{size:>14,} {2 * size:>11,} {cells[0]:>16} {cells[1]:>16}", flush=True)
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

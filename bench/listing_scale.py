"""How fast the terminal views answer on a big database: ``balsam ls --by-states``, the first
page of ``balsam ls``, ``balsam status``, at 1,000,000 jobs.

Makes a workflow database with ``balsam init`` (SQLite, or ``--db-url`` for PostgreSQL), fills
it with N jobs spread over states as a campaign half done has them, then times each command as
a user runs it: the whole process, start-up included, median of ``--rounds`` runs. Start-up
alone is timed too (``balsam ls apps`` on the same database: the CLI, the settings, one
connection and one tiny query).

    python bench/listing_scale.py --jobs 1000000
    python bench/listing_scale.py --jobs 1000000 --db postgresql://postgres@127.0.0.1:5432/bench
    python bench/listing_scale.py --jobs 1000000 --without-index
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchlib import CHUNK, job_row, make_site
from sqlalchemy import insert, text

from balsam.backends.factory import open_backend
from balsam.config import load_site
from balsam.schemas import AppCreate
from balsam.store.tables import JobRow

BALSAM = Path(sys.executable).parent / "balsam"
#: How the jobs are spread over states (a campaign about half done), per 20 jobs.
STATE_MIX = (
    ["JOB_FINISHED"] * 10
    + ["PREPROCESSED"] * 5
    + ["RUNNING"] * 2
    + ["AWAITING_PARENTS", "FAILED", "RUN_ERROR"]
)
COMMANDS: list[tuple[str, list[str], dict[str, str]]] = [
    ("start-up (ls apps)", ["ls", "apps"], {}),
    ("ls --by-states", ["ls", "--by-states"], {}),
    ("ls --by-states --wf bench", ["ls", "--by-states", "--wf", "bench"], {}),
    ("ls, first 50 (BALSAM_LS_LIMIT)", ["ls"], {"BALSAM_LS_LIMIT": "50"}),
    ("ls --state FAILED, first 50", ["ls", "--state", "FAILED"], {"BALSAM_LS_LIMIT": "50"}),
    ("status", ["status"], {}),
]


def fill(site: Path, jobs: int) -> float:
    """Insert ``jobs`` rows in the states of STATE_MIX; returns the seconds it took."""
    backend = open_backend(load_site(site), retry=False)
    backend.create_app(AppCreate(name="T", executable="true"))
    engine = backend.engine  # type: ignore[attr-defined]
    first = datetime.now(UTC)
    states = itertools.cycle(STATE_MIX)
    started = time.perf_counter()
    with engine.begin() as conn:
        for start in range(0, jobs, CHUNK):
            n = min(CHUNK, jobs - start)
            # One created_at per chunk, later for each: as a campaign made by bulk creates
            # of CHUNK jobs each (one call's jobs share their creation time).
            now = first + timedelta(seconds=start // CHUNK)
            conn.execute(insert(JobRow), [job_row(next(states), now) for _ in range(n)])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))
    backend.close()
    return time.perf_counter() - started


def time_command(site: Path, argv: list[str], extra: dict[str, str], rounds: int) -> float:
    """Median wall seconds of ``balsam ARGV`` (whole process) over ``rounds`` runs."""
    env = {**os.environ, "BALSAM_DB_PATH": str(site), **extra}
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        done = subprocess.run([str(BALSAM), *argv], env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"balsam {' '.join(argv)} failed: {done.stderr.strip()}")
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--without-index",
        action="store_true",
        help="then drop the listing index and time the pages again (an A/B on one database)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = make_site(Path(tmp), args.db)
        seconds = fill(site, args.jobs)
        kind = "sqlite" if args.db == "sqlite" else "postgresql"
        print(f"{args.jobs} jobs, db={kind}, filled in {seconds:.1f} s; median of {args.rounds}")
        commands = [*COMMANDS, ("ls, a page half way (--after)", _half_way(site), {})]
        for label, argv, extra in commands:
            took = time_command(site, argv, extra, args.rounds)
            print(f"  {label:<34} {took * 1000:>8.0f} ms")
        if args.without_index:
            _drop_listing_index(site)
            print("without the listing index (ix_jobs_created_at), same database:")
            for label, argv, extra in commands[3:5] + commands[-1:]:
                took = time_command(site, argv, extra, args.rounds)
                print(f"  {label:<34} {took * 1000:>8.0f} ms")
    return 0


def _half_way(site: Path) -> list[str]:
    """``balsam ls --limit 50 --after CURSOR`` for the page after the middle job."""
    from balsam.schemas.queries import JobQuery, cursor_after

    backend = open_backend(load_site(site), retry=False)
    count = backend.count_jobs(JobQuery())
    (middle,) = backend.query_jobs(JobQuery(offset=count // 2, limit=1))
    backend.close()
    return ["ls", "--limit", "50", "--after", cursor_after(JobQuery(), middle)]


def _drop_listing_index(site: Path) -> None:
    backend = open_backend(load_site(site), retry=False)
    with backend.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("DROP INDEX ix_jobs_created_at"))
    backend.close()


if __name__ == "__main__":
    raise SystemExit(main())

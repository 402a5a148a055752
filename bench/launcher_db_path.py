"""The launcher's database path alone, in one process: CPU per claimed job and per state change.

Fills a workflow database with N runnable jobs, then does what a launcher does with them,
without running anything: claim 256 at a time (serial mode), record each batch RUNNING, then
RUN_DONE (which the service fast-forwards through POSTPROCESSED to JOB_FINISHED), 128 updates
per transaction. Prints the CPU time (this process: Python, SQLAlchemy and the driver; not the
PostgreSQL server) per claimed job and per state update. To compare two versions in one
sitting, run it once more with ``PYTHONPATH`` naming the other source tree.

    python bench/launcher_db_path.py --jobs 8000
    PYTHONPATH=/tmp/before/src python bench/launcher_db_path.py --jobs 8000
    python bench/launcher_db_path.py --jobs 8000 --db postgresql+psycopg://postgres@127.0.0.1:PORT/bench
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchlib import fresh_pg_database
from launcher_throughput import add_jobs, make_site

import balsam
from balsam.backends.factory import open_backend
from balsam.domain.states import JobState
from balsam.schemas.jobs import StateUpdate
from balsam.schemas.sessions import ClaimRequest

CLAIM = 256
PER_FLUSH = 128


def update(job_id: str, state: JobState) -> StateUpdate:
    """A launcher's update, built the way its buffer builds them."""
    code = 0 if state is JobState.RUN_DONE else None
    return StateUpdate.model_construct(
        job_id=job_id,
        state=state,
        message="",
        return_code=code,
        timestamp=datetime.now(UTC),
        release=state is JobState.RUN_DONE,
        lost=False,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8000)
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    args = parser.parse_args()
    db = args.db if args.db == "sqlite" else fresh_pg_database(args.db)
    site = make_site(Path(tempfile.mkdtemp(prefix="balsam-dbpath-")), db, 2)
    add_jobs(site, ["/bin/true"], args.jobs, 2)
    backend = open_backend(site)
    session = backend.open_session("bench", "localhost", 1)
    claim_cpu = record_cpu = 0.0
    claimed = refused = 0
    request = ClaimRequest(limit=CLAIM, max_nodes=1, serial_only=True)
    while True:
        t0 = time.process_time()
        jobs = backend.claim_jobs(session.id, request)
        claim_cpu += time.process_time() - t0
        if not jobs:
            break
        ids = [job.job_id for job in jobs]
        t0 = time.process_time()
        for state in (JobState.RUNNING, JobState.RUN_DONE):
            for start in range(0, len(ids), PER_FLUSH):
                batch = [update(i, state) for i in ids[start : start + PER_FLUSH]]
                refused += len(backend.record_updates(session.id, batch))
        record_cpu += time.process_time() - t0
        claimed += len(ids)
    backend.close()
    kind = "sqlite" if args.db == "sqlite" else "postgresql"
    print(f"db={kind} jobs={claimed} source={Path(balsam.__file__).parent.parent}")
    print(f"  claim  : {claim_cpu / claimed * 1e6:6.0f} us CPU per job (claims of {CLAIM})")
    print(f"  record : {record_cpu / claimed / 2 * 1e6:6.0f} us CPU per state update")
    return 0 if claimed == args.jobs and refused == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

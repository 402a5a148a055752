"""Helpers the benchmarks share: bulk job rows and a fresh PostgreSQL database per run."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, text

#: Rows per bulk insert when filling a database.
CHUNK = 20_000


def job_row(state: str, now: datetime) -> dict[str, object]:
    """A job row as create_jobs would write it (bulk path for filling fast)."""
    jid = str(uuid.uuid4())
    return {
        "job_id": jid,
        "name": "b",
        "workflow": "bench",
        "description": "",
        "application": "T",
        "args": "",
        "num_nodes": 1,
        "ranks_per_node": 1,
        "threads_per_rank": 1,
        "threads_per_core": 1,
        "gpus_per_rank": 0,
        "cpu_affinity": "none",
        "node_packing_count": 1,
        "wall_time_minutes": 1,
        "environ_vars": {},
        "mpi_flags": "",
        "input_files": "*",
        "stage_in_url": "",
        "stage_out_files": "",
        "stage_out_url": "",
        "post_error_handler": False,
        "post_timeout_handler": False,
        "auto_timeout_retry": True,
        "wait_for_parents": True,
        "max_error_retries": 0,
        "max_timeout_retries": 3,
        "data": {},
        "tags": {},
        "state": state,
        "state_timestamp": now,
        "created_at": now,
        "working_directory": f"data/bench/b_{jid[:8]}",
        "error_count": 0,
        "timeout_count": 0,
        "lost_count": 0,
        "return_code": None,
        "session_id": None,
    }


def fresh_pg_database(url: str) -> str:
    """Recreate the database named in ``url`` (so each run starts empty); returns ``url``."""
    base, _, name = url.rpartition("/")
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url


def make_site(root: Path, db: str) -> Path:
    """A workflow database made as a user makes one (``balsam init``, SQLite or a fresh
    PostgreSQL database at ``db``) under ``root``; returns its directory."""
    site = root / "wf"
    argv = [str(Path(sys.executable).parent / "balsam"), "init", str(site)]
    if db != "sqlite":
        argv += ["--db-url", fresh_pg_database(db)]
    subprocess.run(argv, check=True, capture_output=True)
    return site

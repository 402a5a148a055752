"""docs/examples/driver_wait.py runs as written, against a real launcher (SQLite, PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from balsam.backends.base import Backend
from balsam.config import Site
from launchkit import S, all_jobs, start_launcher, stop

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "driver_wait.py"


def test_the_driver_script_waits_for_both_rounds(site: Site, backend_of: Backend) -> None:
    # As docs/examples/driver_wait.py says: a launcher on its workflow, then the script.
    launcher = start_launcher("--wf-filter", "driver-demo", "--job-mode", "serial", quiet=True)
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300
        )
    finally:
        stop(launcher)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(lines[:4]) == ["square1 -> 1", "square2 -> 4", "square3 -> 9", "square4 -> 16"]
    assert lines[4:] == ["sum of squares: 30"]
    jobs = all_jobs(backend_of)
    assert len(jobs) == 5 and all(j.state is S.JOB_FINISHED for j in jobs)

"""docs/examples/function_app.py runs as written, against a real launcher (SQLite, PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from balsam.backends.base import Backend
from balsam.config import Site
from launchkit import S, all_jobs, start_launcher, stop

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "function_app.py"


def test_the_function_example_gathers_results_and_a_remote_error(
    site: Site, backend_of: Backend
) -> None:
    # As docs/examples/function_app.py says: a launcher on its workflow, then the script.
    launcher = start_launcher("--wf-filter", "functions-demo", "--job-mode", "serial", quiet=True)
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300
        )
    finally:
        stop(launcher)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "sim1 -> 10",
        "sim2 -> 40",
        "sim3 -> 90",
        "sim4 -> 160",
        "total energy: 300",
        "bad raised ValueError: n must be positive, got -1",
        'raise ValueError(f"n must be positive, got {n}")',
    ]
    states = {job.name: job.state for job in all_jobs(backend_of)}
    assert states == {
        **{f"sim{n}": S.JOB_FINISHED for n in range(1, 5)},
        "summary": S.JOB_FINISHED,
        "bad": S.FAILED,
    }
    apps = {app.name: app.function for app in backend_of.list_apps()}
    assert apps == {
        "function_tasks.simulate": "function_tasks:simulate",
        "function_tasks.summarize": "function_tasks:summarize",
    }

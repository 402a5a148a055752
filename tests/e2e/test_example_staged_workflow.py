"""docs/examples/staged_workflow.sh runs as written against a local HTTP server and rsync daemon."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from transferkit import FileServer, RsyncDaemon

SCRIPT = Path(__file__).parents[2] / "docs" / "examples" / "staged_workflow.sh"


def test_the_staged_workflow_example_runs_as_written(
    tmp_path: Path, file_server: FileServer, rsync_daemon: RsyncDaemon
) -> None:
    data = b"name,value\na,1\nb,2\nc,3\n"
    (file_server.root / "table.csv").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    (rsync_daemon.root / "results").mkdir()
    done = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            file_server.url(f"table.csv#sha256={sha}"),
            rsync_daemon.url("results/demo"),
            str(tmp_path / "staged-demo"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (rsync_daemon.root / "results" / "demo" / "summary.out").read_text() == "rows: 3\n"
    listing = done.stdout.splitlines()
    assert sum("JOB_FINISHED" in line for line in listing) == 2, done.stdout

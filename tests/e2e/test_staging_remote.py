"""Remote staging through a real launcher: HTTP in, rsync out, Globus batched, failures.

Real servers on loopback (tests/transferkit.py): a threaded HTTP server with Range support,
an rsync daemon; the Globus Transfer API is the request-checking stand-in
(tests/globus_standin.py), reached by the launcher's globus-sdk through
GLOBUS_SDK_SERVICE_URL_TRANSFER.
"""

from __future__ import annotations

import hashlib
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.platform.transfer import globus_auth
from globus_standin import GlobusStandIn
from launchkit import (
    BALSAM,
    S,
    add_app,
    add_jobs,
    balsam,
    entered,
    job_dir,
    launch,
    settings,
    state_of,
)
from transferkit import FileServer, RsyncDaemon, free_port

FAST = {"max_retries": 1, "retry_backoff_seconds": 0.05, "connect_timeout_seconds": 2.0}


def test_a_job_pulls_over_http_and_pushes_with_rsync(
    site: Site, backend_of: Backend, file_server: FileServer, rsync_daemon: RsyncDaemon
) -> None:
    """SQLite and PostgreSQL: the input arrives checked, the output lands in the daemon."""
    data = b"x,y\n1,2\n3,4\n"
    (file_server.root / "input.csv").write_bytes(data)
    (rsync_daemon.root / "results").mkdir()
    settings(site, transfer=FAST)
    add_app(backend_of, "Count", "sh -c 'wc -l < input.csv > lines.out'")
    sha = hashlib.sha256(data).hexdigest()
    (job,) = add_jobs(
        backend_of,
        "Count",
        {
            "name": "count",
            "stage_in_url": file_server.url(f"input.csv#sha256={sha}"),
            "stage_out_files": "*.out",
            "stage_out_url": rsync_daemon.url("results/count"),
        },
    )
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    assert (job_dir(site, job) / "input.csv").read_bytes() == data
    assert (rsync_daemon.root / "results" / "count" / "lines.out").read_text().strip() == "3"
    assert "staged in 1 item(s)" in entered(backend_of, job.job_id, S.STAGED_IN).message


def test_failed_transfers_fail_their_jobs_with_the_reason(
    site: Site, backend_of: Backend, file_server: FileServer, tmp_path: Path
) -> None:
    """A 404, a checksum mismatch and an unreachable rsync daemon: each job FAILED, saying why;
    a 503 that clears within the retries does not fail its job; nothing is left held."""
    settings(site, transfer=FAST)
    (file_server.root / "data.txt").write_text("real")
    (file_server.root / "busy.txt").write_text("after a 503")
    file_server.fail_first["busy.txt"] = 1
    add_app(backend_of, "Cat", "sh -c 'cat *.txt'")
    wrong = hashlib.sha256(b"other").hexdigest()
    specs = [
        {"name": "missing", "stage_in_url": file_server.url("nothing.txt")},
        {"name": "corrupt", "stage_in_url": file_server.url(f"data.txt#sha256={wrong}")},
        {"name": "busy", "stage_in_url": file_server.url("busy.txt")},
        {
            "name": "unreachable",
            "stage_in_url": file_server.url("data.txt"),
            "stage_out_files": "*.txt",
            "stage_out_url": f"rsync://127.0.0.1:{free_port()}/data/out",
        },
    ]
    jobs = {j.name: j for j in add_jobs(backend_of, "Cat", *specs)}
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    states = {name: state_of(backend_of, j.job_id) for name, j in jobs.items()}
    assert states == {
        "missing": S.FAILED, "corrupt": S.FAILED, "busy": S.JOB_FINISHED, "unreachable": S.FAILED,
    }  # fmt: skip

    def why(name: str) -> str:
        return entered(backend_of, jobs[name].job_id, S.FAILED).message

    assert "HTTP 404" in why("missing") and "gave up" not in why("missing")
    assert "failed its sha256 check" in why("corrupt")
    assert "rsync failed (10)" in why("unreachable") and "gave up after 2 tries" in why(
        "unreachable"
    )


def test_globus_stage_ins_of_two_jobs_share_one_task(
    site: Site, backend_of: Backend, globus_standin: GlobusStandIn, tmp_path: Path
) -> None:
    """Through the launcher's stager threads: one Transfer task for both jobs' items."""
    here, there = str(uuid.uuid4()), str(uuid.uuid4())
    tokens = tmp_path / "globus-tokens.json"
    settings(
        site,
        transfer={
            **FAST,
            "globus_endpoint_id": here,
            "globus_client_id": globus_standin.client_id,
            "globus_tokens_file": str(tokens),
            "batch_window_seconds": 1.0,
            "globus_poll_seconds": 0.1,
        },
    )
    globus_auth.save_tokens(
        tokens,
        {
            globus_auth.TRANSFER_SERVER: {
                "access_token": globus_standin.token,
                "refresh_token": globus_standin.refresh_token,
                "expires_at_seconds": int(time.time()) + 3600,
            }
        },
    )
    remote = tmp_path / "remote"
    remote.mkdir()
    for name in ("a", "b"):
        (remote / f"{name}.txt").write_text(name)
    add_app(backend_of, "Cat", "sh -c 'cat *.txt'")
    jobs = add_jobs(
        backend_of,
        "Cat",
        *[{"name": n, "stage_in_url": f"globus://{there}{remote}/{n}.txt"} for n in ("a", "b")],
    )
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    assert [state_of(backend_of, j.job_id) for j in jobs] == [S.JOB_FINISHED] * 2
    assert (job_dir(site, jobs[1]) / "b.txt").read_text() == "b"
    assert globus_standin.problems == []
    [task] = globus_standin.tasks.values()
    assert (task["source_endpoint"], task["destination_endpoint"]) == (there, here)
    assert len(task["DATA"]) == 2


def test_balsam_transfer_login_saves_the_tokens(
    site: Site, globus_standin: GlobusStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command as a user runs it: one line without a client id; with one, the URL, the
    pasted code, and a 0600 token file."""
    monkeypatch.setenv("BALSAM_DB_PATH", str(site.path))
    refused = balsam("transfer", "login")
    assert refused.returncode != 0
    assert (
        refused.stderr
        == "balsam: error: Globus needs a native app: set transfer.globus_client_id\n"
    )
    tokens = tmp_path / "tokens.json"
    settings(
        site,
        transfer={"globus_client_id": globus_standin.client_id, "globus_tokens_file": str(tokens)},
    )
    done = subprocess.run(
        [BALSAM, "transfer", "login"], input=globus_standin.login_code + "\n",
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "oauth2/authorize" in done.stdout and f"saved in {tokens}" in done.stdout
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert globus_standin.problems == []

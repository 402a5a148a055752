"""A real launcher that reaches its workflow database only through a real `balsam server`.

The launcher runs in a site directory of its own that holds settings and job directories but
no database file (opening it locally would fail: "workflow database file ... is missing"), with
BALSAM_URL and BALSAM_TOKEN naming the served database and a token of a submitter. Every job
must end JOB_FINISHED, exactly once in its history.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from balsam.backends.factory import init_site
from balsam.backends.remote import RemoteBackend
from balsam.config import SQLITE_FILE
from balsam.server.auth import AuthStore, Role
from launchkit import S, add_app, add_jobs, all_jobs, launch
from serverkit import uvicorn_server

JOBS = 12


def _compute_dir(served: Path, where: Path) -> Path:
    """A site directory like ``served`` without its database (what a compute node sees)."""
    shutil.copytree(served, where)
    for file in where.glob(f"{SQLITE_FILE}*"):
        file.unlink()
    return where


def test_a_launcher_runs_jobs_through_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = init_site(tmp_path / "campaign").path
    compute = _compute_dir(served, tmp_path / "node" / "campaign")
    state = tmp_path / "state"
    auth = AuthStore.open(state)
    owner = auth.add_user("alice")
    auth.grant("alice", Role.OWNER, "campaign")
    runner = auth.add_user("launcher")
    auth.grant("launcher", Role.SUBMITTER, "campaign")
    with uvicorn_server([served], state) as base:
        url = f"{base}/db/campaign"
        be = RemoteBackend(url, owner)
        try:
            add_app(be, "SayHello", "echo hello,")
            jobs = add_jobs(
                be, "SayHello", *({"name": f"hi{i}", "args": f"world {i}"} for i in range(JOBS))
            )
            monkeypatch.setenv("BALSAM_DB_PATH", str(compute))
            monkeypatch.setenv("BALSAM_URL", url)
            monkeypatch.setenv("BALSAM_TOKEN", runner)
            done = launch("--consume-all", "--job-mode", "serial", timeout=120)
            assert done.returncode == 0, done.stderr
            finished = all_jobs(be)
            assert [j.state for j in finished] == [S.JOB_FINISHED] * JOBS
            for job in jobs:
                ends = [e for e in be.history(job.job_id) if e.to_state == S.JOB_FINISHED]
                assert len(ends) == 1, be.history(job.job_id)
            for job in finished:
                out = compute / job.working_directory / f"{job.name}.out"
                assert out.read_text() == f"hello, world {job.name[2:]}\n"
            assert not (compute / SQLITE_FILE).exists(), "the launcher made a database"
        finally:
            be.close()

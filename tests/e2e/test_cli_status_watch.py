"""``balsam status`` (the campaign on one screen) and ``balsam ls --watch`` (live listing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import open_backend
from balsam.config import Site
from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate, JobOut, StateUpdate
from balsam.schemas.sessions import ClaimRequest
from launchkit import cli as run
from waiting import wait_until

BALSAM = Path(sys.executable).parent / "balsam"
S = JobState


@pytest.fixture
def db(site: Site) -> Iterator[Backend]:
    backend = open_backend(site)
    backend.create_app(AppCreate(name="sim", executable="/bin/false"))
    yield backend
    backend.close()


def add(db: Backend, name: str, workflow: str = "w") -> JobOut:
    (job,) = db.create_jobs([JobCreate(name=name, workflow=workflow, application="sim")])
    return job


def fail(db: Backend, session_id: int, job: JobOut, tail: str) -> None:
    """Play a launcher whose run of ``job`` failed with ``tail`` as its output's end."""
    assert [j.job_id for j in db.claim_jobs(session_id, ClaimRequest(job_ids=[job.job_id]))]
    updates = [
        StateUpdate(job_id=job.job_id, state=S.RUNNING),
        StateUpdate(job_id=job.job_id, state=S.RUN_ERROR, message=tail, return_code=2),
    ]
    assert all(r.ok for r in db.record_updates(session_id, updates))


def test_status_shows_states_launchers_and_the_last_errors(
    capsys: pytest.CaptureFixture[str], db: Backend
) -> None:
    for i in range(3):
        add(db, f"ok{i}")
    broken = add(db, "broken")
    session = db.open_session("test", "node07", 4242)
    fail(db, session.id, broken, "step 1\nstep 2\nstep 3\nValueError: mesh size -3")
    code, out, err = run(capsys, "status")
    assert (code, err) == (0, "")
    assert "4 job(s)" in out.splitlines()[0]
    states = out[out.index("Jobs per state") : out.index("Launchers running")]
    # No error retries by default: the run error failed the job.
    assert "PREPROCESSED   3" in states and "FAILED         1" in states
    launchers = out[out.index("Launchers running") : out.index("Batch jobs")]
    assert "node07" in launchers and "4242" in launchers
    errors = out[out.index("Last errors") :]
    assert f"{broken.job_id[:8]}  broken  (w)  FAILED" in errors
    # The tail of the error: its last three lines, not the first.
    assert "ValueError: mesh size -3" in errors and "step 2" in errors
    assert "step 1" not in errors

    db.close_session(session.id)
    code, out, _err = run(capsys, "status", "--errors", "0")
    assert code == 0 and "Last errors" not in out
    assert out[out.index("Launchers running") :].splitlines()[1] == "none"


def test_status_on_an_empty_database_and_bad_input(
    capsys: pytest.CaptureFixture[str], db: Backend
) -> None:
    code, out, _err = run(capsys, "status")
    assert code == 0 and "0 job(s)" in out and "no jobs" in out
    code, out, err = run(capsys, "status", "--errors", "-1")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_ls_watch_redraws_when_jobs_change_and_stops_cleanly_on_ctrl_c(
    site: Site, db: Backend
) -> None:
    add(db, "first")
    # A long interval: a second frame can only come from the change below.
    with subprocess.Popen(
        [str(BALSAM), "ls", "--watch", "--interval", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BALSAM_DB_PATH": str(site.path)},
    ) as watcher:  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(watcher.stdout or []), daemon=True)
        reader.start()
        try:
            wait_until(lambda: any("first" in line for line in lines), timeout=30)
            assert sum(line.startswith("── balsam ls at") for line in lines) == 1
            add(db, "second")
            wait_until(lambda: any("second" in line for line in lines), timeout=30)
            assert sum(line.startswith("── balsam ls at") for line in lines) >= 2
            watcher.send_signal(signal.SIGINT)
            assert watcher.wait(timeout=30) == 0
        finally:
            if watcher.poll() is None:
                watcher.kill()
        reader.join(timeout=10)
        stderr = watcher.stderr.read() if watcher.stderr else ""
    assert stderr == "", "Ctrl-C is the way to stop: no traceback"
    last = "".join(lines).split("── balsam ls at")[-1]
    assert "first" in last and "second" in last


def test_ls_watch_refuses_what_it_cannot_watch(
    capsys: pytest.CaptureFixture[str], db: Backend
) -> None:
    for argv in (("ls", "apps", "--watch"), ("ls", "--interval", "5")):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "", argv
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

"""One bad job never stops a workflow, and a job's processes end with it (real launchers).

* A job whose command cannot be started (a NUL byte in its arguments or environment, as a
  database written by an older Balsam or by hand may hold) fails with the reason in its
  history; the worker and the launcher carry on and every other job finishes. SQLite is the
  database here: PostgreSQL cannot store a NUL byte at all.
* ``kill -9`` of a job's main process takes the processes it started with it: the retry never
  runs beside them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from balsam.backends.factory import init_site, open_backend
from balsam.config import Site
from launchkit import (
    S,
    add_app,
    add_jobs,
    all_jobs,
    entered,
    gone,
    job_dir,
    launch,
    run_pid,
    start_launcher,
    state_of,
    stop,
    wait_for,
)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    """An active SQLite workflow database (the launchers started here use it)."""
    made = init_site(tmp_path / "wf")
    monkeypatch.setenv("BALSAM_DB_PATH", str(made.path))
    return made


def test_jobs_whose_commands_cannot_start_fail_alone_and_the_rest_finish(site: Site) -> None:
    be = open_backend(site)
    try:
        add_app(be, "Echo", "echo")
        jobs = add_jobs(be, "Echo", *({"name": f"ok{i}", "args": str(i)} for i in range(6)))
        bad_args, bad_env = add_jobs(be, "Echo", {"name": "badargs"}, {"name": "badenv"})
        # What validation now refuses at the door, written straight to the database.
        engine = create_engine(f"sqlite:///{site.path / 'balsam.db'}")
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE jobs SET args = :a WHERE job_id = :j"),
                {"a": "a\x00b", "j": bad_args.job_id},
            )
            conn.execute(
                text("UPDATE jobs SET environ_vars = :e WHERE job_id = :j"),
                {"e": '{"X": "a\\u0000b"}', "j": bad_env.job_id},
            )
        engine.dispose()

        done = launch("--consume-all", "--job-mode", "serial", timeout=120)
        assert done.returncode == 0, done.stderr
        states = {job.name: job.state for job in all_jobs(be)}
        finished = {f"ok{i}": S.JOB_FINISHED for i in range(6)}
        assert states == {**finished, "badargs": S.FAILED, "badenv": S.FAILED}
        for bad in (bad_args, bad_env):
            reasons = " ".join(e.message for e in be.history(bad.job_id))
            assert "embedded null byte" in reasons, reasons
        for job in jobs:
            out = job_dir(site, job) / f"{job.name}.out"
            assert out.read_text() == f"{job.args}\n"
    finally:
        be.close()


#: Reports a leftover of an earlier attempt; the first attempt leaves a background process
#: and waits, the second ends at once.
LEAVES_A_CHILD = """\
# A leftover is a process still alive: a zombie waiting for init to reap it is gone.
if [ -f bg.pid ] && [ -e "/proc/$(cat bg.pid)" ]; then
    state=$(cut -d' ' -f3 "/proc/$(cat bg.pid)/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] && echo "LEFTOVER $state" >> report
fi
if [ -f first ]; then echo second >> report; exit 0; fi
touch first
sleep 600 &
echo $! > bg.pid
wait
"""


def test_kill_9_of_a_job_s_main_process_ends_its_children_before_the_retry(
    site: Site, tmp_path: Path
) -> None:
    script = tmp_path / "leaves_a_child.sh"
    script.write_text(LEAVES_A_CHILD)
    launcher = None
    be = open_backend(site)
    try:
        add_app(be, "Leaves", f"bash {script}")
        (job,) = add_jobs(be, "Leaves", {"name": "leaves", "max_error_retries": 1})
        launcher = start_launcher("--consume-all", "--job-mode", "serial", quiet=True)
        workdir = job_dir(site, job)
        wait_for("the background process", lambda: (workdir / "bg.pid").exists(), timeout=60)
        wait_for("its pid", lambda: (workdir / "bg.pid").read_text().strip() != "")
        child = int((workdir / "bg.pid").read_text())
        wait_for("RUNNING", lambda: state_of(be, job.job_id) is S.RUNNING)
        os.kill(run_pid(be, job.job_id), signal.SIGKILL)
        wait_for("the retry", lambda: state_of(be, job.job_id) is S.JOB_FINISHED, timeout=60)
        assert gone(child)
        assert (workdir / "report").read_text() == "second\n"
        assert "killed by signal 9" in entered(be, job.job_id, S.RUN_ERROR).message
        assert launcher.wait(timeout=60) == 0
    finally:
        if launcher is not None:
            stop(launcher)
        be.close()

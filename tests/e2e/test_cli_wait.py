"""``balsam wait`` through the real CLI, on SQLite and PostgreSQL, with real launchers."""

from __future__ import annotations

import subprocess
import time

from balsam.backends.base import Backend
from balsam.config import Site
from launchkit import BALSAM, S, add_app, add_jobs, balsam, start_launcher, stop


def _jobs(be: Backend, *scripts: str, **fields: object) -> list[str]:
    if not be.list_apps():
        add_app(be, "Sh", "/bin/sh")
    specs = [
        {"name": f"j{i}", "args": f"-c '{s}'", "max_error_retries": 0, "node_packing_count": 4}
        | fields
        for i, s in enumerate(scripts)
    ]
    return [job.job_id for job in add_jobs(be, "Sh", *specs)]


def _wait_while_a_launcher_runs(*args: str) -> subprocess.CompletedProcess[str]:
    """Start ``balsam wait ARGS`` first, then a launcher; the wait's result."""
    waiter = subprocess.Popen(
        [BALSAM, "wait", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    launcher = start_launcher("--consume-all", "--job-mode", "serial", quiet=True)
    try:
        out, err = waiter.communicate(timeout=120)
    finally:
        stop(launcher)
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    return subprocess.CompletedProcess(waiter.args, waiter.returncode, out, err)


def test_exit_0_when_every_job_finished(site: Site, backend_of: Backend) -> None:
    ids = _jobs(backend_of, "exit 0", "sleep 1")
    done = _wait_while_a_launcher_runs("--wf", "test", "--timeout", "120")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "balsam wait: all 2 jobs JOB_FINISHED"
    assert done.stdout == ""
    assert all(backend_of.get_job(i).state is S.JOB_FINISHED for i in ids)


def test_exit_8_when_a_job_failed(site: Site, backend_of: Backend) -> None:
    _jobs(backend_of, "exit 0", "exit 3")
    done = _wait_while_a_launcher_runs("--wf", "test")
    assert done.returncode == 8, done.stderr
    assert done.stderr.splitlines()[-1] == "balsam wait: 2 jobs ended, 1 FAILED"


def test_exit_124_at_the_timeout_with_nothing_changed(site: Site, backend_of: Backend) -> None:
    (job_id,) = _jobs(backend_of, "exit 0")  # no launcher runs it
    marker = backend_of.change_marker()
    started = time.monotonic()
    done = balsam("wait", "--wf", "test", "--timeout", "1")
    assert time.monotonic() - started >= 1
    assert done.returncode == 124, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last == "balsam wait: timed out after 1 s: 1 of 1 jobs have not ended"
    assert backend_of.get_job(job_id).state is S.PREPROCESSED
    assert backend_of.change_marker() == marker


def test_tags_and_state_filter_choose_the_jobs(site: Site, backend_of: Backend) -> None:
    first = _jobs(backend_of, "exit 0", "exit 0", tags={"stage": "1"})
    _jobs(backend_of, "exit 0", tags={"stage": "2"})  # never ends: no launcher
    for job_id in first:
        backend_of.kill_jobs(job_id)
    done = balsam("wait", "--tag", "stage=1", "--timeout", "60")
    assert done.returncode == 8, done.stderr
    assert done.stderr.splitlines()[-1] == "balsam wait: 2 jobs ended, 2 USER_KILLED"
    # The stage-1 jobs are no longer PREPROCESSED: the filter now picks the stage-2 job alone.
    done = balsam("wait", "--state-filter", "PREPROCESSED", "--timeout", "0.5")
    assert done.returncode == 124
    assert "1 of 1 jobs have not ended" in done.stderr


def test_bad_input_is_one_line_and_changes_nothing(site: Site, backend_of: Backend) -> None:
    _jobs(backend_of, "exit 0")
    marker = backend_of.change_marker()
    cases = {
        ("--tag", "novalue"): (2, "--tag takes KEY=VALUE"),
        ("--state-filter", "BOGUS"): (2, "unknown job state 'BOGUS'"),
        ("--timeout", "soon"): (2, "--timeout"),
        ("--timeout", "-1"): (2, "--timeout"),
        ("--wf", "no-such-workflow"): (3, "no job matches"),
        ("--bogus",): (2, "No such option"),
    }
    for args, (code, text) in cases.items():
        done = balsam("wait", *args)
        assert done.returncode == code, (args, done.stderr)
        assert len(done.stderr.splitlines()) == 1, (args, done.stderr)
        assert text in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert backend_of.change_marker() == marker


def test_a_terminal_gets_a_progress_bar(site: Site, backend_of: Backend) -> None:
    """stderr on a pseudo-terminal: Rich draws the bar (N/M done); stdout stays empty."""
    import os
    import pty

    _jobs(backend_of, "exit 0", "exit 0")
    backend_of.kill_jobs(_jobs(backend_of, "exit 0")[0])
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [BALSAM, "wait", "--wf", "test", "--timeout", "0.5"],
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert done.returncode == 124 and done.stdout == ""
    screen = shown.decode()
    assert "1/3" in screen and "USER_KILLED" in screen and "━" in screen
    assert "timed out after 0.5 s: 2 of 3 jobs have not ended (1 USER_KILLED)" in screen

"""``balsam events`` on a local site: the recorded events, a filter, ``--follow`` as jobs change
(a subprocess, stopped with Ctrl-C), and bad input. Over a server:
tests/e2e/test_event_stream_remote.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.domain.states import JobState
from balsam.schemas import AppCreate, JobCreate
from launchkit import cli as run
from waiting import wait_until

BALSAM = Path(sys.executable).parent / "balsam"


def _jobs(be: Backend, *workflows: str) -> list[str]:
    be.create_app(AppCreate(name="A", executable="true"))
    made = be.create_jobs(
        [JobCreate(name=f"j{i}", workflow=w, application="A") for i, w in enumerate(workflows)]
    )
    return [j.job_id for j in made]


def test_events_prints_the_log_in_order_filtered_and_resumable(
    capsys: pytest.CaptureFixture[str], backend_of: Backend
) -> None:
    a, b = _jobs(backend_of, "x", "y")
    backend_of.set_state(a, JobState.USER_KILLED, "stopped")
    code, out, err = run(capsys, "events")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 9 and [int(line.split()[0]) for line in lines] == list(range(1, 10))
    assert lines[0].split()[3:] == [a[:8], "x", "-", "->", "CREATED", "created"]
    assert lines[-1].endswith("PREPROCESSED -> USER_KILLED  stopped")
    code, out, _ = run(capsys, "events", "--wf", "y", "--json")
    assert code == 0 and {json.loads(line)["job_id"] for line in out.splitlines()} == {b}
    code, out, _ = run(capsys, "events", "--after", "8")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["9"]


@pytest.mark.parametrize("argv", [("--after", "-1"), ("--after", "x"), ("--bogus",)])
def test_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], backend_of: Backend, argv: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, "events", *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_events_follow_prints_changes_as_they_happen(site: Site, backend_of: Backend) -> None:
    (a,) = _jobs(backend_of, "x")
    after = str(backend_of.change_marker())
    with subprocess.Popen(
        [str(BALSAM), "events", "--follow", "--after", after],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BALSAM_DB_PATH": str(site.path)},
    ) as proc:  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        try:
            backend_of.set_state(a, JobState.USER_KILLED, "by hand")
            wait_until(lambda: any("by hand" in line for line in lines), what="the event")
            backend_of.note_jobs([a], "a note")
            wait_until(lambda: any("a note" in line for line in lines), what="the note")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(timeout=10)
        assert proc.stderr is not None and proc.stderr.read() == ""
    printed = [line for line in lines if line.strip()]
    assert len(printed) == 2 and "USER_KILLED (note)  a note" in printed[1]


def test_a_reader_that_leaves_early_is_no_error(site: Site, backend_of: Backend) -> None:
    """``balsam events | head -1``: more output than a pipe holds, the reader gone after a line."""
    _jobs(backend_of, *["x"] * 600)  # 2,400 events: far more than a pipe's 64 KiB
    with subprocess.Popen(
        [str(BALSAM), "events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BALSAM_DB_PATH": str(site.path)},
    ) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().startswith("1  ")
        proc.stdout.close()
        assert proc.wait(timeout=60) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""

"""``balsam ls queues`` and ``balsam queue rm`` with the ``local`` scheduler: the launcher's
process is the batch job (running while it lives, gone after; rm stops its process group)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import init_site, open_backend
from balsam.config import Site
from balsam.schemas import AppCreate, JobCreate, JobQuery
from launchkit import BALSAM, gone
from waiting import wait_until

SUBMIT = ["submit-launch", "-A", "p", "-q", "q", "-t", "5", "-n", "1", "--job-mode", "serial"]


@pytest.fixture
def wf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Site, Backend]]:
    site = init_site(tmp_path / "wf")
    monkeypatch.setenv("BALSAM_DB_PATH", str(site.path))
    backend = open_backend(site)
    backend.create_app(AppCreate(name="Nap", executable="sleep 60"))
    backend.create_jobs([JobCreate(name="nap", application="Nap")])
    yield site, backend
    backend.close()


def balsam(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BALSAM, *args], capture_output=True, text=True, timeout=60, check=False)


def state_in_listing(row_id: int) -> str:
    done = balsam("ls", "queues")
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines()[1:]:
        cells = line.split()
        if cells and cells[0] == str(row_id):
            return cells[8]
    raise AssertionError(done.stdout)


def test_a_local_launcher_is_running_then_cancelled_by_queue_rm(wf: tuple[Site, Backend]) -> None:
    _site, backend = wf
    done = balsam(*SUBMIT)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[2])
    try:
        (row,) = backend.list_batch_jobs()
        assert (row.scheduler, row.scheduler_id, row.state) == ("local", str(pid), "queued")
        assert state_in_listing(row.id) == "running"
        rm = balsam("queue", "rm", str(row.id))
        assert rm.returncode == 0, rm.stderr
        wait_until(lambda: gone(pid), timeout=30, what="the launcher to stop")
        assert state_in_listing(row.id) == "cancelled"
        assert backend.get_batch_job(row.id).state == "cancelled"
    finally:
        if not gone(pid):
            os.killpg(pid, signal.SIGKILL)


def test_a_local_launcher_that_exited_is_gone(wf: tuple[Site, Backend]) -> None:
    _site, backend = wf
    backend.delete_jobs(JobQuery())
    done = balsam(*SUBMIT)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[2])
    wait_until(lambda: gone(pid), timeout=60, what="the launcher to exit (nothing to run)")
    (row,) = backend.list_batch_jobs()
    assert state_in_listing(row.id) == "gone"


def test_queue_rm_of_a_non_number_is_one_line_naming_the_command(
    wf: tuple[Site, Backend],
) -> None:
    done = balsam("queue", "rm", "abc")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("balsam: error: Invalid value for 'ID'")
    assert line.endswith("see 'balsam queue rm --help'")

"""Helpers for end-to-end launcher tests: run ``balsam`` as a user would, inspect jobs.

Shared by the launcher tests on this machine, under real Slurm, and the fault tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from balsam.backends.base import Backend
from balsam.config import Site, load_settings, save_settings
from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import EventOut, JobCreate, JobOut
from balsam.schemas.queries import JobQuery

BALSAM = str(Path(sys.executable).parent / "balsam")
S = JobState


def balsam(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the ``balsam`` command and wait for it."""
    return subprocess.run(
        [BALSAM, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def launch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``balsam launcher`` in the foreground until it exits."""
    return balsam("launcher", *args, timeout=timeout)


def start_launcher(*args: str, quiet: bool = False) -> subprocess.Popen[str]:
    """Start ``balsam launcher`` in the background (``quiet``: its output is discarded, for
    launchers a test does not read, which must not block on a full pipe)."""
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen([BALSAM, "launcher", *args], stdout=out, stderr=out, text=True)


def stop(proc: subprocess.Popen[str]) -> None:
    """Make sure a background launcher is gone (a failed test must not leave it behind)."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def settings(site: Site, **sections: dict[str, Any]) -> None:
    """Change the site's settings.yml, e.g. ``launcher={"heartbeat_seconds": 0.5}``."""
    current = load_settings(site.path)
    for section, values in sections.items():
        part = getattr(current, section)
        setattr(current, section, part.model_copy(update=values))
    save_settings(site.path, current)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``check`` until it is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def add_app(be: Backend, name: str, executable: str, **fields: str) -> None:
    """Register an app."""
    be.create_app(AppCreate(name=name, executable=executable, **fields))


def add_jobs(be: Backend, app: str, *specs: dict[str, Any]) -> list[JobOut]:
    """Add jobs of ``app`` (in workflow ``test`` unless a spec says otherwise)."""
    defaults = {"workflow": "test", "application": app}
    return be.create_jobs([JobCreate(**{**defaults, **spec}) for spec in specs])


def all_jobs(be: Backend) -> list[JobOut]:
    """Every job, oldest first."""
    return be.query_jobs(JobQuery())


def job_dir(site: Site, job: JobOut) -> Path:
    """The job's working directory."""
    return site.job_dir(job.working_directory)


def entered(be: Backend, job_id: str, state: JobState) -> EventOut:
    """The (last) history event that moved the job into ``state``."""
    events = [e for e in be.history(job_id) if e.to_state == state]
    assert events, f"job never entered {state}: {[e.to_state for e in be.history(job_id)]}"
    return events[-1]


def run_pid(be: Backend, job_id: str) -> int:
    """The process id the launcher recorded when it started the job."""
    match = re.search(r"pid (\d+)", entered(be, job_id, S.RUNNING).message)
    assert match, "RUNNING event names the pid"
    return int(match.group(1))


def gone(pid: int) -> bool:
    """True when no process ``pid`` exists (or only its zombie, already dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def state_of(be: Backend, job_id: str) -> JobState:
    """A job's current state."""
    return be.get_job(job_id).state


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``balsam ARGV`` in this process; returns (exit code, stdout, stderr)."""
    from balsam.cli.main import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def slurm_scheduled_site(
    path: Path, slurm_conf: Path, monkeypatch: pytest.MonkeyPatch, **platform: Any
) -> Site:
    """A new active site at ``path`` whose launchers go to the Slurm cluster of ``slurm_conf``
    (``platform.scheduler: slurm``; ``platform`` adds settings)."""
    from balsam.backends.factory import init_site

    site = init_site(path)
    monkeypatch.setenv("BALSAM_DB_PATH", str(site.path))
    monkeypatch.setenv("SLURM_CONF", str(slurm_conf))
    settings(site, platform={"scheduler": "slurm", "mpi_launcher": "auto", **platform})
    return site

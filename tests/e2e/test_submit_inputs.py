"""What ``balsam launcher`` and ``balsam submit-launch`` accept, through the real command.

A number that is not finite (``nan``, ``inf``) and text that would add a line to a batch
script are refused with one line before anything is written, submitted or run. A normal
submission still works, its script quoted and created with the mode the umask allows.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import init_site, open_backend
from balsam.config import Site
from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import JobQuery
from launchkit import gone
from waiting import wait_until

BALSAM = str(Path(sys.executable).parent / "balsam")
SUBMIT = ["submit-launch", "-t", "5", "-n", "1", "--job-mode", "serial"]
QUEUE = "debug'q"
UNUSED_FLAGS = "the local scheduler has no batch system: --sched-flags are not used"


@pytest.fixture
def wf(tmp_path: Path) -> Iterator[tuple[Site, Backend]]:
    """A workflow database with two runnable jobs, and a Backend on it."""
    site = init_site(tmp_path / "wf")
    backend = open_backend(site)
    backend.create_app(AppCreate(name="SayHello", executable="echo hello"))
    backend.create_jobs([JobCreate(name=f"j{i}", application="SayHello") for i in range(2)])
    yield site, backend
    backend.close()


def run(site: Site, argv: list[str], umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """``balsam ARGV`` on ``site`` from a shell, as a user runs it (after ``umask`` if given)."""
    command = shlex.join([BALSAM, *argv])
    if umask is not None:
        command = f"umask {umask:03o} && exec {command}"
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_CLI_TRACEBACK"}
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env=env | {"BALSAM_DB_PATH": str(site.path)},
        cwd=site.path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def observable(site: Site, backend: Backend) -> Any:
    """What a refused command must not change: the jobs, batch scripts, launcher logs."""
    jobs = [(j.job_id, j.state) for j in backend.query_jobs(JobQuery())]
    return jobs, sorted(os.listdir(site.scripts_dir)), sorted(os.listdir(site.log_dir))


def assert_refused(done: subprocess.CompletedProcess[str], words: str) -> None:
    """Non-zero exit and exactly one line on stderr, holding ``words``."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("balsam: error: ")
    assert words in lines[0]
    assert done.stdout == ""


# 0 is not among them: it means the default (the allocation's end), as in Balsam 0.5.
@pytest.mark.parametrize("minutes", ["nan", "NaN", "inf", "-inf", "1e400", "-1", "1e12"])
def test_a_launcher_time_limit_must_be_a_finite_number_in_range(
    wf: tuple[Site, Backend], minutes: str
) -> None:
    site, backend = wf
    before = observable(site, backend)
    done = run(site, ["launcher", "--consume-all", "--time-limit-minutes", minutes])
    assert_refused(done, "Invalid value for '--time-limit-minutes'")
    assert observable(site, backend) == before


BAD_SUBMISSIONS = [
    ("newline in project", ["-A", "p\nrm -rf x", "-q", "q"], "'p\\nrm -rf x' holds the control"),
    ("carriage return in queue", ["-A", "p", "-q", "q\r"], "'q\\r' holds the control"),
    ("NUL-free control in project", ["-A", "p\x1b[2J", "-q", "q"], "holds the control"),
    ("newline in scheduler flags", ["-A", "p", "-q", "q", "--sched-flags", "--x\ntouch y"],
     "'--sched-flags'"),
    ("unbalanced scheduler flags", ["-A", "p", "-q", "q", "--sched-flags", "'--x"],
     "No closing quotation"),
    ("empty project", ["-A", "", "-q", "q"], "is empty"),
    ("nan wall time", ["-A", "p", "-q", "q", "-t", "nan"], "'nan' is not a finite number"),
    ("inf wall time", ["-A", "p", "-q", "q", "-t", "inf"], "'inf' is not a finite number"),
    ("too many nodes", ["-A", "p", "-q", "q", "-n", "99999999999"], "is not in the range"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"), [c[1:] for c in BAD_SUBMISSIONS], ids=[c[0] for c in BAD_SUBMISSIONS]
)
def test_a_bad_submission_is_one_line_and_submits_nothing(
    wf: tuple[Site, Backend], args: list[str], words: str
) -> None:
    site, backend = wf
    before = observable(site, backend)
    done = run(site, [*SUBMIT, *args])
    assert_refused(done, words)
    assert os.listdir(site.scripts_dir) == []
    assert observable(site, backend) == before


@pytest.mark.parametrize(("umask", "mode"), [(0o077, 0o700), (0o022, 0o744), (0o000, 0o744)])
def test_a_submission_runs_its_jobs_from_a_script_the_umask_shapes(
    wf: tuple[Site, Backend], umask: int, mode: int
) -> None:
    site, backend = wf
    # Printable but hostile text: quoted in the script, it runs nothing.
    project = "my proj; touch pwned; $(touch pwned2)"
    done = run(site, [*SUBMIT, "-A", project, "-q", QUEUE, "--sched-flags", "--a 'b c'"], umask)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"balsam: warning: {UNUSED_FLAGS}\n"
    launch_id = int(re.search(r"launch (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    try:
        wait_until(
            lambda: {j.state for j in backend.query_jobs(JobQuery())} == {JobState.JOB_FINISHED},
            timeout=60,
            what="both jobs to finish",
        )
        wait_until(lambda: gone(launch_id), timeout=60, what="the launcher to exit")
    finally:
        if not gone(launch_id):
            os.killpg(launch_id, signal.SIGKILL)
    (script,) = site.scripts_dir.glob("*.sh")
    assert stat.S_IMODE(script.stat().st_mode) == mode
    assert not script.stat().st_mode & stat.S_IWOTH
    text = script.read_text()
    assert f"project {shlex.quote(project)}, queue {shlex.quote(QUEUE)}," in text
    assert "# scheduler flags (unused here): --a 'b c'" in text
    for root in (site.path, site.path.parent):
        assert not (root / "pwned").exists() and not (root / "pwned2").exists()

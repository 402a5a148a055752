"""``balsam submit-launch`` within the site's queue policy, and the site's own script template.

A site lists its projects and queues (with node and wall-time limits) in ``settings.yml``; a
launch outside them is refused with one line before anything is recorded, written or
submitted. A site's batch-script template is what the submitted script is made from.
Run through the real command on the ``local`` scheduler (the Slurm runs are in
tests/e2e/test_slurm_submit.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import init_site, open_backend
from balsam.batch_settings import QueueSettings
from balsam.config import Site, load_settings, save_settings
from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import JobQuery
from launchkit import settings
from waiting import wait_until

BALSAM = str(Path(sys.executable).parent / "balsam")
QUEUES = {
    "debug": {"max_nodes": 2, "max_wall_time_minutes": 30},
    "prod": {"min_nodes": 4, "max_nodes": 64},
}


@pytest.fixture
def wf(tmp_path: Path) -> Iterator[tuple[Site, Backend]]:
    """A workflow database whose settings list one project and two queues, with a job."""
    site = init_site(tmp_path / "wf")
    backend = open_backend(site)
    backend.create_app(AppCreate(name="SayHello", executable="echo hello"))
    backend.create_jobs([JobCreate(name="hi", application="SayHello")])
    current = load_settings(site.path)
    current.projects = ["Proj"]
    current.queues = {name: QueueSettings(**limits) for name, limits in QUEUES.items()}
    save_settings(site.path, current)
    yield site, backend
    backend.close()


def submit(site: Site, *argv: str) -> subprocess.CompletedProcess[str]:
    """``balsam submit-launch ARGV`` on ``site``, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_CLI_TRACEBACK"}
    return subprocess.run(
        [BALSAM, "submit-launch", "--job-mode", "serial", *argv],
        env=env | {"BALSAM_DB_PATH": str(site.path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def observable(site: Site, backend: Backend) -> Any:
    """What a refused submission must not change: jobs, batch jobs, scripts."""
    jobs = [(j.job_id, j.state) for j in backend.query_jobs(JobQuery())]
    scripts = sorted(os.listdir(site.scripts_dir)) if site.scripts_dir.exists() else []
    return jobs, backend.list_batch_jobs(), scripts


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-A", "Other", "-q", "debug", "-t", "5", "-n", "1"], "project 'Other' is not one of"),
        (["-A", "Proj", "-q", "big", "-t", "5", "-n", "1"], "queue 'big' is not one of"),
        (["-A", "Proj", "-q", "debug", "-t", "5", "-n", "3"], "takes 1 to 2 nodes (asked for 3)"),
        (["-A", "Proj", "-q", "prod", "-t", "5", "-n", "2"], "takes 4 to 64 nodes (asked for 2)"),
        (["-A", "Proj", "-q", "debug", "-t", "45", "-n", "1"], "at most 30 minutes (asked for 45)"),
        (["-A", "Proj", "-q", "debug", "-t", "5", "-n", "0"], "0 is not in the range"),
    ],
)
def test_a_launch_outside_the_site_policy_is_one_line_and_changes_nothing(
    wf: tuple[Site, Backend], argv: list[str], words: str
) -> None:
    site, backend = wf
    before = observable(site, backend)
    done = submit(site, *argv)
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr
    assert observable(site, backend) == before


def test_a_launch_within_the_policy_runs(wf: tuple[Site, Backend]) -> None:
    site, backend = wf
    done = submit(site, "-A", "Proj", "-q", "debug", "-t", "5", "-n", "1")
    assert done.returncode == 0, done.stderr
    (job,) = backend.query_jobs(JobQuery())
    wait_until(lambda: backend.get_job(job.job_id).state is JobState.JOB_FINISHED, timeout=60)
    (row,) = backend.list_batch_jobs()
    assert (row.project, row.queue, row.num_nodes) == ("Proj", "debug", 1)


def test_the_sites_template_makes_the_script_and_runs_the_launcher(
    wf: tuple[Site, Backend],
) -> None:
    site, backend = wf
    template = site.path / "job-template.sh"
    template.write_text(
        "#!/bin/bash\n${directives}\n# site prologue for ${queue}, ${num_nodes} node(s)\n"
        'export SITE_MARK=templated\n${environment}\necho "launch of $${SITE_MARK}"\n'
        "${launcher}\n"
    )
    settings(site, platform={"batch_script_template": "job-template.sh"})
    done = submit(site, "-A", "Proj", "-q", "debug", "-t", "5", "-n", "1")
    assert done.returncode == 0, done.stderr
    (job,) = backend.query_jobs(JobQuery())
    wait_until(lambda: backend.get_job(job.job_id).state is JobState.JOB_FINISHED, timeout=60)
    (row,) = backend.list_batch_jobs()
    assert row.script is not None
    text = Path(row.script).read_text()
    assert "# site prologue for debug, 1 node(s)\n" in text
    assert 'echo "launch of ${SITE_MARK}"\n' in text
    assert "launcher --consume-all --job-mode serial" in text
    log = Path(row.script).with_suffix(".log").read_text()
    assert "launch of templated" in log


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("#!/bin/bash\n${environment}\n", "has no ${launcher} line"),
        ("#!/bin/bash\n${launcher} ${nodes}\n", "names ${nodes}, which is not one of"),
        ("#!/bin/bash\ncost $5\n${launcher}\n", "write '$$' for a dollar sign"),
    ],
)
def test_a_template_that_cannot_make_a_launcher_script_is_refused_before_submission(
    wf: tuple[Site, Backend], template: str, words: str
) -> None:
    site, backend = wf
    (site.path / "job-template.sh").write_text(template)
    settings(site, platform={"batch_script_template": "job-template.sh"})
    before = observable(site, backend)
    done = submit(site, "-A", "Proj", "-q", "debug", "-t", "5", "-n", "1")
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr
    assert observable(site, backend) == before


def test_a_template_that_is_missing_is_one_line(wf: tuple[Site, Backend]) -> None:
    site, backend = wf
    settings(site, platform={"batch_script_template": "nowhere.sh"})
    done = submit(site, "-A", "Proj", "-q", "debug", "-t", "5", "-n", "1")
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "cannot read" in lines[0] and "nowhere.sh" in lines[0]
    assert backend.list_batch_jobs() == []

"""A broken ``settings.yml`` through the real ``balsam`` command: one line, no change.

Every command that loads the settings (listing, adding a job, running a launcher, submitting
one) must answer a broken file with one line on stderr naming the file, the line and the key,
and a non-zero exit; and must change nothing: the jobs keep their states, no batch script is
written, no launcher log is started.
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
from balsam.config import Site
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import JobQuery

#: (case, file content, the line and key named, words of the problem)
BROKEN = [
    ("syntax error", b"launcher:\n  heartbeat_seconds: [1\n", "line 3: launcher.heartbeat_seconds",
     "invalid YAML"),
    ("binary junk", b"\x89PNG\r\n\x1a\n\x00\x00\xff", "line 1", "not UTF-8 text"),
    ("top level not a mapping", b"- launcher\n- platform\n", "line 1",
     "the top level is a list"),
    ("unknown key", b"launcher:\n  heartbeat_secs: 5\n", "line 2: launcher.heartbeat_secs",
     "unknown setting"),
    ("wrong type", b"launcher:\n  claim_batch: lots\n", "line 2: launcher.claim_batch",
     "valid integer"),
    (".inf", b"launcher:\n  heartbeat_seconds: .inf\n", "line 2: launcher.heartbeat_seconds",
     "finite number"),
    (".nan", b"launcher:\n  lease_seconds: .nan\n", "line 2: launcher.lease_seconds",
     "finite number"),
    ("out of range", b"platform:\n  cpus_per_node: 99999999999999999999\n",
     "line 2: platform.cpus_per_node", "less than or equal to"),
    ("empty database URL", b"database:\n  kind: url\n  url: ''\n", "line 3: database.url",
     "the database URL is empty"),
    ("unknown database scheme", b"database:\n  kind: url\n  url: mysql://me:pw@h/db\n",
     "line 3: database.url", "supported: postgresql, postgresql+psycopg, sqlite"),
]  # fmt: skip

#: The installed console script, as a user runs it.
BALSAM = str(Path(sys.executable).parent / "balsam")
#: Commands that load the settings, as a user types them.
COMMANDS = {
    "ls": ["ls"],
    "job": ["job", "--name", "new", "--workflow", "w", "--application", "SayHello", "--yes"],
    "launcher": ["launcher", "--consume-all", "--job-mode", "serial"],
    "submit-launch": ["submit-launch", "-A", "P", "-q", "Q", "-t", "5", "-n", "1"],
}


@pytest.fixture
def wf(tmp_path: Path) -> Iterator[tuple[Site, Backend]]:
    """A workflow database with three runnable jobs, and a Backend opened on it while its
    settings were still intact (to see what a refused command changed)."""
    site = init_site(tmp_path / "wf")
    backend = open_backend(site)
    backend.create_app(AppCreate(name="SayHello", executable="echo hello"))
    backend.create_jobs([JobCreate(name=f"j{i}", application="SayHello") for i in range(3)])
    yield site, backend
    backend.close()


def run(site: Site, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The installed ``balsam`` command on ``site``, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_CLI_TRACEBACK"}
    env["BALSAM_DB_PATH"] = str(site.path)
    return subprocess.run(
        [BALSAM, *argv],
        env=env,
        cwd=site.path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def observable(site: Site, backend: Backend) -> Any:
    """What a refused command must not change: the jobs, batch scripts, launcher logs."""
    jobs = [(j.job_id, j.name, j.state) for j in backend.query_jobs(JobQuery())]
    return jobs, sorted(os.listdir(site.scripts_dir)), sorted(os.listdir(site.log_dir))


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("content", "where", "words"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN]
)
def test_a_broken_settings_file_is_one_line_and_changes_nothing(
    wf: tuple[Site, Backend], command: str, content: bytes, where: str, words: str
) -> None:
    site, backend = wf
    before = observable(site, backend)
    (site.path / "settings.yml").write_bytes(content)
    done = run(site, COMMANDS[command])
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"balsam: error: {site.path / 'settings.yml'}, {where}: ")
    assert words in lines[0]
    assert "pw@" not in lines[0]
    assert done.stdout == ""
    assert observable(site, backend) == before
    assert backend.count_jobs(JobQuery()) == 3


def test_the_same_commands_work_once_the_file_is_repaired(wf: tuple[Site, Backend]) -> None:
    site, backend = wf
    settings = site.path / "settings.yml"
    intact = settings.read_bytes()
    settings.write_bytes(BROKEN[0][1])
    assert run(site, ["ls"]).returncode != 0
    settings.write_bytes(intact)
    listed = run(site, ["ls"])
    assert listed.returncode == 0, listed.stderr
    assert all(f"j{i}" in listed.stdout for i in range(3))
    added = run(site, COMMANDS["job"])
    assert added.returncode == 0, added.stderr
    assert backend.count_jobs(JobQuery()) == 4

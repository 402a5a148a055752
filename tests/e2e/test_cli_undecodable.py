"""Bytes that are not UTF-8 on the command line: one line for every command, nothing changed.

The arguments are passed to a real ``balsam`` process as raw bytes (b'\\xff'), as a shell does
with a file name in Latin-1 or a mistyped escape; Python decodes them to lone surrogates, which
no database driver, file or terminal accepts.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from balsam.backends.factory import init_site, open_backend
from balsam.errors import ValidationError
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import JobQuery, clause_from_kwargs
from launchkit import BALSAM

BAD = b"\xff\xfe"
COMMANDS = [
    [b"ls", b"--wf", BAD],
    [b"ls", b"--name", BAD],
    [b"ls", b"apps", b"--name", BAD],
    [b"kill", b"--id", BAD],
    [b"modify", BAD, b"args", b"x"],
    [b"rm", b"jobs", b"--name", BAD],
    [b"dep", BAD, BAD],
    [b"job", b"--name", b"x", b"--workflow", b"w", b"--application", b"A", b"--args", BAD, b"-y"],
    [b"app", b"--name", b"B", b"--executable", b"echo " + BAD],
    [b"init", b"new-" + BAD],
    [b"which", b"--name", BAD],
]


def _id(argv: list[bytes]) -> str:
    return b" ".join(argv[:2]).decode("utf-8", "replace")


@pytest.mark.parametrize("argv", COMMANDS, ids=_id)
def test_undecodable_arguments_are_one_line_and_change_nothing(
    tmp_path: Path, argv: list[bytes]
) -> None:
    site = init_site(tmp_path / "wf")
    be = open_backend(site)
    be.create_app(AppCreate(name="A", executable="echo"))
    be.create_jobs([JobCreate(name="j", workflow="w", application="A")])
    before = [job.model_dump() for job in be.query_jobs(JobQuery())], len(be.list_apps())
    env = {**os.environ, "BALSAM_DB_PATH": str(site.path), "BALSAM_HOME": str(tmp_path / "h")}
    done = subprocess.run(
        [BALSAM.encode(), *argv], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2
    (line,) = err.splitlines()
    assert line.startswith("balsam: error: argument '") and "\\udcff\\udcfe" in line, line
    assert line.endswith("' is not valid UTF-8 text"), line
    after = [job.model_dump() for job in be.query_jobs(JobQuery())], len(be.list_apps())
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("new-")], "init made it"
    be.close()


def test_a_query_for_text_no_job_can_hold_is_refused_naming_the_condition() -> None:
    with pytest.raises(ValidationError, match=r"name__icontains: '\\udcff' is not valid UTF-8"):
        clause_from_kwargs({"name__icontains": "\udcff"})
    with pytest.raises(ValidationError, match="workflow__in: 'a\\\\x00' contains a NUL byte"):
        clause_from_kwargs({"workflow__in": ["ok", "a\x00"]})

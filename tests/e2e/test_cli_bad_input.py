"""Bad input (issue 2, part 7): one line on stderr, a non-zero exit, no traceback, no change."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from balsam.backends.base import Backend
from balsam.cli.common import job_query
from balsam.cli.main import main
from balsam.config import Site
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import INT_MAX, INT_MINIMUMS, JobCreate
from balsam.schemas.queries import JobQuery

NEW_JOB = "job --name x --workflow w --application SayHello"
#: Bigger than any integer column of SQLite or PostgreSQL.
HUGE = "99999999999999999999999"

BAD_INPUT = [
    ("unknown app", "job --name x --workflow w --application NoSuchApp --yes",
     "no application named 'NoSuchApp'"),
    ("negative nodes", f"{NEW_JOB} --num-nodes -1 --yes", "num_nodes must be at least 1 (got -1)"),
    ("zero ranks", f"{NEW_JOB} --ranks-per-node 0 --yes",
     "ranks_per_node must be at least 1 (got 0)"),
    ("text for a number", f"{NEW_JOB} --num-nodes two --yes",
     "Invalid value for '--num-nodes': 'two' is not a valid integer"),
    ("text for a number in modify", "modify {parent} num_nodes two",
     "num_nodes must be an integer (got 'two')"),
    ("negative wall time", f"{NEW_JOB} --wall-time-minutes -5 --yes",
     "wall_time_minutes must be at least 0 (got -5)"),
    ("negative gpus", f"{NEW_JOB} --gpus-per-rank -1 --yes",
     "gpus_per_rank must be at least 0 (got -1)"),
    ("node count too big for the database", f"{NEW_JOB} --num-nodes {HUGE} --yes",
     f"num_nodes must be at most 2147483647 (got {HUGE})"),
    ("wall time too big for the database", f"{NEW_JOB} --wall-time-minutes 2147483648 --yes",
     "wall_time_minutes must be at most 2147483647 (got 2147483648)"),
    ("too big for the database in modify", f"modify {{parent}} num_nodes {HUGE}",
     f"num_nodes must be at most 2147483647 (got {HUGE})"),
    ("malformed env", f"{NEW_JOB} --env NOVALUE --yes", "--env: "),
    ("malformed tag", f"{NEW_JOB} --tag novalue --yes", "--tag takes KEY=VALUE"),
    ("unbalanced quote in args", f"{NEW_JOB} --args \"'oops\" --yes", "cannot parse args"),
    ("unknown cpu affinity", f"{NEW_JOB} --cpu-affinity sideways --yes", "'sideways' is not one"),
    ("missing option", "job --name x --workflow w", "Missing option '--application'"),
    ("unknown parent", f"{NEW_JOB} --parent ffffffff --yes", "no job with id 'ffffffff'"),
    ("unknown id", "kill --id ffffffff", "no job with id 'ffffffff'"),
    ("ambiguous prefix", "kill --id {ambiguous}", "matches more than one job"),
    ("ambiguous prefix in modify", "modify {ambiguous} num_nodes 2", "matches more than one job"),
    ("self-dependency", "dep {parent} {parent}", "a job cannot depend on itself"),
    ("dependency cycle", "dep {child} {parent}", "that makes a cycle"),
    ("duplicate app name", "app --name SayHello --executable /bin/true",
     "an app named 'SayHello' exists already"),
    ("malformed app name", "app --name 'two words' --executable /bin/true", "name: "),
    ("invalid state in modify", "modify {parent} state DONE", "unknown job state 'DONE'"),
    ("state a user may not set", "modify {parent} state RUNNING", "cannot move a job to RUNNING"),
    ("unknown attribute in modify", "modify {parent} colour red", "unknown job attribute"),
    ("invalid state in ls", "ls --state DONE", "unknown job state 'DONE'"),
    ("rm without a target", "rm jobs --yes", "say what to remove"),
    ("rm matching nothing", "rm jobs --name nosuchjob --yes", "no jobs match"),
    ("kill a killed job", "kill --id {killed}", "is already USER_KILLED"),
]  # fmt: skip


def snapshot(backend_of: Backend) -> Any:
    """Everything a bad command could have changed: jobs (state, fields, parents) and apps."""
    jobs = [j.model_dump() for j in backend_of.query_jobs(JobQuery())]
    return jobs, [a.model_dump() for a in backend_of.list_apps()]


@pytest.fixture
def ids(backend_of: Backend) -> dict[str, str]:
    """An app, a parent and child, a killed job, and enough jobs for an ambiguous id prefix."""
    backend_of.create_app(AppCreate(name="SayHello", executable="echo hello,"))
    (parent,) = backend_of.create_jobs([JobCreate(name="parent", application="SayHello")])
    (child,) = backend_of.create_jobs(
        [JobCreate(name="child", application="SayHello", parents=[parent.job_id])]
    )
    (killed,) = backend_of.create_jobs([JobCreate(name="killed", application="SayHello")])
    backend_of.kill_jobs(killed.job_id)
    # 16 hex digits: among 19 ids at least two share their first character.
    more = backend_of.create_jobs(
        [JobCreate(name=f"m{i}", application="SayHello") for i in range(16)]
    )
    firsts = Counter(j.job_id[0] for j in [parent, child, killed, *more])
    ambiguous = next(c for c, n in firsts.items() if n > 1)
    return {
        "parent": parent.job_id[:8],
        "child": child.job_id[:8],
        "killed": killed.job_id[:8],
        "ambiguous": ambiguous,
    }


@pytest.mark.parametrize(
    ("command", "message"), [(c, m) for _, c, m in BAD_INPUT], ids=[i for i, _, _ in BAD_INPUT]
)
def test_bad_input_is_one_line_and_changes_nothing(
    capsys: pytest.CaptureFixture[str],
    backend_of: Backend,
    ids: dict[str, str],
    command: str,
    message: str,
) -> None:
    before = snapshot(backend_of)
    code = main(shlex.split(command.format(**ids)))
    out, err = capsys.readouterr()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert err.startswith("balsam: error: ")
    assert message in err
    assert "Traceback" not in err + out
    assert snapshot(backend_of) == before


@pytest.mark.parametrize(("field", "low"), sorted(INT_MINIMUMS.items()))
def test_every_integer_field_has_both_bounds_in_balsams_words(
    capsys: pytest.CaptureFixture[str],
    backend_of: Backend,
    ids: dict[str, str],
    field: str,
    low: int,
) -> None:
    before = snapshot(backend_of)
    flag = "--" + field.replace("_", "-")
    too_big = str(INT_MAX + 1)
    attempts = [
        ([*NEW_JOB.split(), flag, str(low - 1), "--yes"], f"at least {low} (got {low - 1})"),
        ([*NEW_JOB.split(), flag, too_big, "--yes"], f"at most {INT_MAX} (got {too_big})"),
        (["modify", ids["parent"], field, too_big], f"at most {INT_MAX} (got {too_big})"),
    ]
    for argv, bound in attempts:
        code = main(argv)
        _out, err = capsys.readouterr()
        assert (code, err) == (2, f"balsam: error: {field} must be {bound}\n")
    assert snapshot(backend_of) == before


def test_the_largest_values_fit_the_database(backend_of: Backend, ids: dict[str, str]) -> None:
    flags = [("--" + f.replace("_", "-"), str(INT_MAX)) for f in INT_MINIMUMS]
    assert main([*NEW_JOB.split(), *(x for pair in flags for x in pair), "--yes"]) == 0
    (job,) = backend_of.query_jobs(job_query(name="x"))
    assert {f: getattr(job, f) for f in INT_MINIMUMS} == dict.fromkeys(INT_MINIMUMS, INT_MAX)


@pytest.mark.parametrize("command", ["ls", "app --name a --executable /bin/true", NEW_JOB, "log"])
def test_no_active_database(capsys: pytest.CaptureFixture[str], command: str) -> None:
    assert "BALSAM_DB_PATH" not in os.environ
    code = main(shlex.split(command))
    _out, err = capsys.readouterr()
    assert code != 0
    # Commands a client of a server can run name 'balsam login' too; 'log' reads the site.
    hint = "" if command == "log" else " (or 'balsam login URL' to use a Balsam server)"
    assert err == (
        "balsam: error: no active workflow database: "
        f"run 'source balsamactivate NAME' or set BALSAM_DB_PATH{hint}\n"
    )


@pytest.mark.parametrize("command", ["ls", "modify abc state READY", "kill --id abc", "log"])
def test_missing_database_dir(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    gone = tmp_path / "gone"
    monkeypatch.setenv("BALSAM_DB_PATH", str(gone))
    code = main(shlex.split(command))
    _out, err = capsys.readouterr()
    assert code != 0
    assert err == f"balsam: error: workflow database {gone} does not exist\n"
    assert not gone.exists()


def test_bad_input_from_a_real_process(site: Site, balsam_bin: str, backend_of: Backend) -> None:
    backend_of.create_app(AppCreate(name="SayHello", executable="echo hello,"))
    env = {**os.environ, "BALSAM_DB_PATH": str(site.path)}
    for argv, message in [
        ([*NEW_JOB.split(), "--num-nodes", "abc", "--yes"], "'abc' is not a valid integer"),
        ([*NEW_JOB.split(), "--num-nodes", "-1", "--yes"], "num_nodes must be at least 1"),
        ([*NEW_JOB.split(), "--num-nodes", HUGE, "--yes"], "num_nodes must be at most 2147483647"),
        (["modify", "abc", "state", "DONE"], "unknown job state 'DONE'"),
    ]:
        done = subprocess.run(
            [balsam_bin, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 2
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert message in done.stderr
        assert done.stdout == ""
    unset = {k: v for k, v in env.items() if k != "BALSAM_DB_PATH"}
    done = subprocess.run(
        [balsam_bin, "ls"], env=unset, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stderr.startswith("balsam: error: no active workflow database")
    assert len(done.stderr.splitlines()) == 1
    assert backend_of.count_jobs(JobQuery()) == 0

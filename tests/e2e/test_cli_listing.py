"""``balsam ls`` (jobs, apps, wf; filters, by states, history, verbose, tree) and ``balsam log``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import open_backend
from balsam.cli.listing import tail_lines
from balsam.config import Site
from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate, JobOut, StateUpdate
from balsam.schemas.sessions import ClaimRequest
from launchkit import cli as run

ERROR_TAIL = "reading input.dat\nValueError: bad mesh size -3"


def rows(out: str) -> list[list[str]]:
    """Table rows (below the header rule) split into cells on runs of spaces."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"}) + 1
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in lines[start:]]


@pytest.fixture
def db(site: Site) -> Iterator[Backend]:
    backend = open_backend(site)
    backend.create_app(AppCreate(name="SayHello", executable="echo hello,", description="greets"))
    backend.create_app(AppCreate(name="sim", executable="/bin/false", postprocess="post.sh"))
    yield backend
    backend.close()


def add(db: Backend, name: str, workflow: str = "test", **extra: Any) -> JobOut:
    (job,) = db.create_jobs(
        [JobCreate(name=name, workflow=workflow, application="SayHello", **extra)]
    )
    return job


def fail_run(db: Backend, job: JobOut) -> None:
    """Play a launcher whose run of ``job`` exits 3, recording the output's last lines."""
    session = db.open_session("test", "localhost", os.getpid())
    claimed = db.claim_jobs(session.id, ClaimRequest(job_ids=[job.job_id]))
    assert [j.job_id for j in claimed] == [job.job_id]
    rejected = db.record_updates(
        session.id,
        [
            StateUpdate(job_id=job.job_id, state=JobState.RUNNING),
            StateUpdate(
                job_id=job.job_id,
                state=JobState.RUN_ERROR,
                message=ERROR_TAIL,
                return_code=3,
                release=True,
            ),
        ],
    )
    assert [r for r in rejected if not r.ok] == []
    db.close_session(session.id)


def test_ls_lists_jobs_with_short_ids(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    a, b = add(db, "hi"), add(db, "bye", workflow="other")
    code, out, err = run(capsys, "ls")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split() == ["ID", "NAME", "WORKFLOW", "APPLICATION", "STATE"]
    assert rows(out) == [
        [a.job_id[:8], "hi", "test", "SayHello", "PREPROCESSED"],
        [b.job_id[:8], "bye", "other", "SayHello", "PREPROCESSED"],
    ]
    assert "\x1b[" not in out


def test_ls_filters(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    hi, hello, other = add(db, "hi"), add(db, "Hello2"), add(db, "zzz", workflow="w2")
    db.kill_jobs(other.job_id)

    def names(*argv: str) -> list[str]:
        code, out, err = run(capsys, "ls", *argv)
        assert (code, err) == (0, "")
        return [r[1] for r in rows(out)]

    assert names("--name", "h") == ["hi", "Hello2"]  # substring, case-insensitive
    assert names("--id", hello.job_id[:6]) == ["Hello2"]
    assert names("--state", "USER_KILLED") == ["zzz"]
    assert names("--state", "preprocessed,user_killed") == ["hi", "Hello2", "zzz"]
    assert names("--wf", "test") == ["hi", "Hello2"]
    assert names("--wf", "test", "--name", "hi") == ["hi"]
    assert names("--wf", "nothing") == []
    assert hi.job_id  # listed above by name


def test_ls_by_states_counts(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    jobs = [add(db, f"j{i}") for i in range(3)]
    add(db, "elsewhere", workflow="w2")
    db.kill_jobs(jobs[0].job_id)
    code, out, _err = run(capsys, "ls", "--by-states")
    assert code == 0
    assert out.splitlines()[0].split() == ["STATE", "COUNT"]
    counted = [line.split() for line in out.splitlines() if line.strip() and "─" not in line]
    assert counted[1:] == [["PREPROCESSED", "3"], ["USER_KILLED", "1"], ["total", "4"]]
    _code, out, _err = run(capsys, "ls", "--by-states", "--wf", "w2")
    assert ["PREPROCESSED", "1"] in [line.split() for line in out.splitlines()]
    assert "USER_KILLED" not in out


def test_ls_history_shows_the_error_tail(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    job = add(db, "crash")
    add(db, "fine")
    fail_run(db, job)
    code, out, err = run(capsys, "ls", "--history", "--name", "crash")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split() == [job.job_id[:8], "crash", "(test)"]
    table = rows(out)
    moves = [(r[1], r[2]) for r in table if len(r) >= 3 and r[1] in set(JobState) | {"-"}]
    assert moves[:2] == [("-", "CREATED"), ("CREATED", "READY")]
    assert ("RUNNING", "RUN_ERROR") in moves
    assert ("RUN_ERROR", "FAILED") in moves  # no retries left
    for line in ERROR_TAIL.splitlines():
        assert line in out
    assert "fine" not in out


def test_ls_verbose_shows_every_field_and_full_ids(
    capsys: pytest.CaptureFixture[str], db: Backend
) -> None:
    job = add(db, "hi", environ_vars={"A": "1"}, num_nodes=2)
    code, out, _err = run(capsys, "ls", "--verbose")
    assert code == 0
    assert out.splitlines()[0].split() == [job.job_id, "hi"]
    fields = {r[0]: (r[1] if len(r) > 1 else "") for r in rows(out)}
    assert set(JobOut.model_fields) <= set(fields)
    assert fields["job_id"] == job.job_id
    assert (fields["num_nodes"], fields["environ_vars"]) == ("2", "A=1")
    assert fields["working_directory"] == job.working_directory


def tree_lines(out: str) -> list[tuple[int, str, str, str]]:
    """(indent, id, name, state-or-note) of each line of a ``ls --tree`` drawing."""
    parsed = []
    for line in out.splitlines():
        match = re.search(r"([0-9a-f-]{8,36})  (\S+)  (.+?)\s*$", line)
        assert match, line
        parsed.append((match.start(), match[1], match[2], match[3]))
    return parsed


def test_ls_tree_nests_children(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    root = add(db, "root")
    left = add(db, "left", parents=[root.job_id])
    right = add(db, "right", parents=[root.job_id])
    join = add(db, "join", parents=[left.job_id, right.job_id])
    alone = add(db, "alone")
    code, out, _err = run(capsys, "ls", "--tree")
    assert code == 0
    waiting = "AWAITING_PARENTS"
    assert [line[1:] for line in tree_lines(out)] == [
        (root.job_id[:8], "root", "PREPROCESSED"),
        (left.job_id[:8], "left", waiting),
        (join.job_id[:8], "join", waiting),
        (right.job_id[:8], "right", waiting),
        (join.job_id[:8], "join", "(shown above)"),
        (alone.job_id[:8], "alone", "PREPROCESSED"),
    ]
    indents = [line[0] for line in tree_lines(out)]
    assert indents[0] == indents[5] == 0
    assert indents[1] == indents[3] > 0
    assert indents[2] == indents[4] > indents[1]

    _code, out, _err = run(capsys, "ls", "--tree", "--verbose", "--id", left.job_id[:8])
    assert [line[1:3] for line in tree_lines(out)] == [(left.job_id, "left"), (join.job_id, "join")]


def test_ls_apps(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    code, out, _err = run(capsys, "ls", "apps")
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "NAME", "EXECUTABLE", "DESCRIPTION"]
    assert [r[1:] for r in rows(out)] == [
        ["SayHello", "echo hello,", "greets"],
        ["sim", "/bin/false"],
    ]
    _code, out, _err = run(capsys, "ls", "apps", "--verbose", "--name", "si")
    assert "POSTPROCESS" in out.splitlines()[0]
    assert [r[1:] for r in rows(out)] == [["sim", "/bin/false", "post.sh"]]


def test_ls_wf_counts_jobs_per_state(capsys: pytest.CaptureFixture[str], db: Backend) -> None:
    for i in range(3):
        add(db, f"a{i}", workflow="alpha")
    killed = add(db, "b0", workflow="beta")
    db.kill_jobs(killed.job_id)
    add(db, "b1", workflow="beta")
    code, out, _err = run(capsys, "ls", "wf")
    assert code == 0
    assert out.splitlines()[0].split() == ["WORKFLOW", "JOBS", "PREPROCESSED", "USER_KILLED"]
    assert rows(out) == [["alpha", "3", "3"], ["beta", "2", "1", "1"]]
    _code, out, _err = run(capsys, "ls", "wf", "--name", "BET")
    assert [r[0] for r in rows(out)] == ["beta"]


def test_log_shows_the_newest_file(capsys: pytest.CaptureFixture[str], site: Site) -> None:
    code, _out, err = run(capsys, "log")
    assert code != 0
    assert err == f"balsam: error: no log files in {site.log_dir} yet\n"
    old = site.log_dir / "launcher_1.log"
    old.write_text("old\n")
    os.utime(old, (1_000_000, 1_000_000))
    new = site.log_dir / "launcher_2.log"
    new.write_text("".join(f"line {i}\n" for i in range(100)))
    code, out, _err = run(capsys, "log", "--lines", "3")
    assert code == 0
    assert out.splitlines() == [f"==> {new} <==", "line 97", "line 98", "line 99"]
    code, out, _err = run(capsys, "log", "--list")
    assert code == 0
    assert [r[-1] for r in rows(out)] == ["launcher_2.log", "launcher_1.log"]


def test_tail_reads_across_blocks(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"{i:05d} {'x' * 50}\n" for i in range(2000)))
    assert [x[:5] for x in tail_lines(path, 3, block=100)] == ["01997", "01998", "01999"]
    assert len(tail_lines(path, 5000, block=4096)) == 2000
    path.write_text("no newline at end")
    assert tail_lines(path, 2) == ["no newline at end"]


def test_ls_of_an_id_prefix_matching_no_job_is_not_found(
    capsys: pytest.CaptureFixture[str], db: Backend
) -> None:
    job = add(db, "hi")
    for view in ([], ["--by-states"], ["--history"], ["--tree"], ["--verbose"]):
        code, out, err = run(capsys, "ls", "--id", "zzzz", *view)
        assert (code, out, err) == (3, "", "balsam: error: no job with id 'zzzz'\n")
    # A real prefix that other filters rule out is an empty listing, not an error.
    code, out, err = run(capsys, "ls", "--id", job.job_id[:4], "--state", "FAILED")
    assert (code, err, rows(out)) == (0, "", [])


LISTINGS = [
    ["ls"],
    ["ls", "--verbose"],
    ["ls", "--by-states"],
    ["ls", "--history"],
    ["ls", "--tree"],
    ["ls", "apps"],
    ["ls", "apps", "--verbose"],
    ["ls", "wf"],
    ["log", "--list"],
]


@pytest.mark.parametrize("argv", LISTINGS, ids=[" ".join(a) for a in LISTINGS])
def test_listings_have_no_trailing_blanks(
    capsys: pytest.CaptureFixture[str], db: Backend, site: Site, argv: list[str]
) -> None:
    parent = add(db, "a-rather-long-job-name", description="")
    add(db, "b", workflow="other", parents=[parent.job_id])
    fail_run(db, add(db, "crash"))
    (site.log_dir / "launcher.log").write_text("started\n")
    code, out, _err = run(capsys, *argv)
    assert code == 0
    assert len(out.splitlines()) > 2
    assert [line for line in out.splitlines() if line != line.rstrip()] == []


def test_ls_pages_with_a_cursor_cover_every_job_once(
    db: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """`balsam ls --limit 3` then `--after CURSOR` until no cursor: every job, once, in the
    order of the whole listing; a cursor made up or of another order is one line."""
    for i in range(8):
        add(db, f"p{i}")
    whole = [r[1] for r in rows(run(capsys, "ls")[1])]
    seen: list[str] = []
    args = ["ls", "--limit", "3"]
    for _ in range(5):
        code, out, err = run(capsys, *args)
        assert code == 0, err
        lines = out.splitlines()
        cursor = re.search(r"the next page: --after (\S+)\)$", lines[-1]) if lines else None
        table = "\n".join(lines[:-1]) if cursor else out
        seen += [r[1] for r in rows(table)]
        if cursor is None:
            break
        assert ("more job(s) not shown" in lines[-1]) == (args == ["ls", "--limit", "3"])
        args = ["ls", "--limit", "3", "--after", cursor.group(1)]
    assert seen == whole and len(whole) == 8
    code, _out, err = run(capsys, "ls", "--after", "nonsense")
    assert code == 2 and err.startswith("balsam: error: not a job cursor")

"""``balsam app``, ``balsam job``, ``balsam dep`` and ``balsam kill`` on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import JobQuery
from launchkit import cli as run


@pytest.fixture
def say_hello(backend_of: Backend) -> str:
    backend_of.create_app(AppCreate(name="SayHello", executable="echo hello,"))
    return "SayHello"


def test_quick_start_commands_add_the_app_and_the_job(
    capsys: pytest.CaptureFixture[str], backend_of: Backend
) -> None:
    code, out, err = run(capsys, "app", "--name", "SayHello", "--executable", "echo hello,")
    assert (code, err) == (0, "")
    assert "SayHello" in out
    assert backend_of.get_app("SayHello").executable == "echo hello,"

    argv = ["job", "--name", "hi", "--workflow", "test", "--application", "SayHello"]
    code, out, err = run(capsys, *argv, "--args", "world!", "--yes")
    assert (code, err) == (0, "")
    job = backend_of.get_job(out.strip())
    assert (job.name, job.workflow, job.application, job.args) == (
        "hi",
        "test",
        "SayHello",
        "world!",
    )
    assert job.state == JobState.PREPROCESSED


def test_app_flags_are_stored(
    capsys: pytest.CaptureFixture[str],
    backend_of: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = run(
        capsys, "app", "--name", "sim", "--executable", "/bin/true --fast",
        "--preprocess", "prep.sh", "--postprocess", "post.sh",
        "--envscript", "env.sh", "--description", "a simulation",
    )  # fmt: skip
    assert (code, err) == (0, "")
    app = backend_of.get_app("sim")
    assert (app.executable, app.preprocess, app.postprocess) == (
        "/bin/true --fast",
        "prep.sh",
        "post.sh",
    )
    assert app.description == "a simulation"
    # Jobs run in their own directories, so a relative envscript is stored as an absolute path.
    assert app.envscript == str(tmp_path / "env.sh")


def test_every_job_flag_reaches_the_job(
    capsys: pytest.CaptureFixture[str], backend_of: Backend, say_hello: str
) -> None:
    (parent,) = backend_of.create_jobs([JobCreate(name="p", workflow="w", application=say_hello)])
    code, out, err = run(
        capsys, "job", "--name", "big", "--workflow", "w", "--application", say_hello,
        "--args", "-n 3", "--description", "d", "--num-nodes", "2", "--ranks-per-node", "4",
        "--threads-per-rank", "2", "--threads-per-core", "2", "--gpus-per-rank", "1",
        "--cpu-affinity", "depth", "--node-packing-count", "1", "--wall-time-minutes", "30",
        "--env", "A=1", "--env", "B=2", "--mpi-flags", "--bind-to core", "--input-files", "*.dat",
        "--url-in", "local:/in", "--url-out", "local:/out", "--stage-out-files", "*.h5",
        "--post_handle_error", "--post_handle_timeout", "--disable_auto_timeout_retry",
        "--max-error-retries", "2", "--tag", "size=big", "--tag", "kind=test",
        "--parent", parent.job_id[:10], "--yes",
    )  # fmt: skip
    assert (code, err) == (0, "")
    job = backend_of.get_job(out.strip())
    assert (job.args, job.description, job.num_nodes, job.ranks_per_node) == ("-n 3", "d", 2, 4)
    assert (job.threads_per_rank, job.threads_per_core, job.gpus_per_rank) == (2, 2, 1)
    assert (job.cpu_affinity, job.wall_time_minutes) == ("depth", 30)
    assert job.environ_vars == {"A": "1", "B": "2"}
    assert (job.mpi_flags, job.input_files) == ("--bind-to core", "*.dat")
    assert (job.stage_in_url, job.stage_out_url, job.stage_out_files) == (
        "local:/in",
        "local:/out",
        "*.h5",
    )
    assert (job.post_error_handler, job.post_timeout_handler, job.auto_timeout_retry) == (
        True,
        True,
        False,
    )
    assert job.max_error_retries == 2
    assert job.tags == {"size": "big", "kind": "test"}
    assert job.parents == [parent.job_id]
    assert job.state == JobState.AWAITING_PARENTS


@pytest.mark.parametrize(("answer", "added"), [("y\n", 1), ("n\n", 0), ("", 0)])
def test_job_asks_for_confirmation(
    capsys: pytest.CaptureFixture[str],
    backend_of: Backend,
    say_hello: str,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    added: int,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    argv = ["job", "--name", "hi", "--workflow", "test", "--application", say_hello]
    code, out, err = run(capsys, *argv, "--args", "world!", "--num-nodes", "1")
    assert "Confirm adding job to DB [y/N]:" in out
    assert "echo hello, 'world!'" in out  # the summary shows the command the job will run
    assert backend_of.count_jobs(JobQuery()) == added
    if added:
        assert code == 0
        assert out.strip().endswith(backend_of.query_jobs(JobQuery())[0].job_id)
    else:
        assert (code, err) == (1, "balsam: aborted\n")


def test_dep_links_jobs_by_unique_prefix(
    capsys: pytest.CaptureFixture[str], backend_of: Backend, say_hello: str
) -> None:
    parent, child = backend_of.create_jobs(
        [JobCreate(name=n, workflow="w", application=say_hello) for n in ("parent", "child")]
    )
    code, out, err = run(capsys, "dep", parent.job_id[:8], child.job_id[:9])
    assert (code, err) == (0, "")
    assert f"{child.job_id[:8]} (child) now depends on {parent.job_id[:8]} (parent)" in out
    after = backend_of.get_job(child.job_id)
    assert after.parents == [parent.job_id]
    assert after.state == JobState.AWAITING_PARENTS


def test_kill_recursive_reaches_descendants(
    capsys: pytest.CaptureFixture[str], backend_of: Backend, say_hello: str
) -> None:
    (root,) = backend_of.create_jobs([JobCreate(name="root", workflow="w", application=say_hello)])
    (mid,) = backend_of.create_jobs(
        [JobCreate(name="mid", workflow="w", application=say_hello, parents=[root.job_id])]
    )
    (leaf,) = backend_of.create_jobs(
        [JobCreate(name="leaf", workflow="w", application=say_hello, parents=[mid.job_id])]
    )
    (other,) = backend_of.create_jobs(
        [JobCreate(name="other", workflow="w", application=say_hello)]
    )
    code, out, err = run(capsys, "kill", "--id", root.job_id[:8], "--recursive")
    assert (code, err) == (0, "")
    assert out.startswith("Killed 3 job(s): ")
    killed = set(out.strip().split(": ")[1].split(", "))
    assert killed == {root.job_id[:8], mid.job_id[:8], leaf.job_id[:8]}
    assert other.job_id[:8] not in killed
    states = {j.name: j.state for j in backend_of.query_jobs(JobQuery())}
    assert states == {
        "root": JobState.USER_KILLED,
        "mid": JobState.USER_KILLED,
        "leaf": JobState.USER_KILLED,
        "other": JobState.PREPROCESSED,
    }


def test_kill_without_recursive_kills_one_and_children_follow(
    capsys: pytest.CaptureFixture[str], backend_of: Backend, say_hello: str
) -> None:
    (root,) = backend_of.create_jobs([JobCreate(name="root", workflow="w", application=say_hello)])
    (kid,) = backend_of.create_jobs(
        [JobCreate(name="kid", workflow="w", application=say_hello, parents=[root.job_id])]
    )
    code, out, _err = run(capsys, "kill", "--id", root.job_id)
    assert code == 0
    assert out.strip() == f"Killed 1 job(s): {root.job_id[:8]}"
    assert backend_of.get_job(root.job_id).state == JobState.USER_KILLED
    assert (
        backend_of.get_job(kid.job_id).state == JobState.FAILED
    )  # it would wait forever otherwise


def test_quick_start_as_real_processes(site: Site, balsam_bin: str) -> None:
    env = {**os.environ, "BALSAM_DB_PATH": str(site.path)}

    def balsam(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [balsam_bin, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    made = balsam("app", "--name", "SayHello", "--executable", "echo hello,")
    assert (made.returncode, made.stderr) == (0, "")
    added = balsam(
        "job", "--name", "hi", "--workflow", "test", "--application", "SayHello",
        "--args", "world!", "--yes",
    )  # fmt: skip
    assert (added.returncode, added.stderr) == (0, "")
    listing = balsam("ls")
    assert listing.returncode == 0
    assert "\x1b[" not in listing.stdout  # no colour codes when stdout is not a terminal
    header, _rule, row = listing.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "WORKFLOW", "APPLICATION", "STATE"]
    assert row.split() == [added.stdout.strip()[:8], "hi", "test", "SayHello", "PREPROCESSED"]

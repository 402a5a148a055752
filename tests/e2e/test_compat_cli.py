"""Balsam 0.5's command line, typed as a 0.5 user types it, through the installed ``balsam``.

Each test runs real ``balsam`` processes (and ``bash`` for the sourced scripts) on a real
workflow database (SQLite and PostgreSQL, the ``site`` fixture) and checks what the user sees:
the exit code, stdout and stderr, and the jobs afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.domain.states import JobState
from launchkit import BALSAM, add_app, add_jobs, all_jobs, job_dir, launch

BIN = Path(sys.executable).parent
S = JobState


def run(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """``balsam ARGS`` with ``stdin`` as its input and ``env`` added to its environment."""
    return subprocess.run(
        [BALSAM, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


def shell(script: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``script`` in a non-interactive bash with the venv's bin first on PATH."""
    env = {**os.environ, "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin"}
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def refused(done: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    """One error line holding ``message``, exit ``code``, nothing on stdout, no traceback."""
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("balsam: error: ")
    assert message in done.stderr, done.stderr


@pytest.fixture
def hello(backend_of: Backend) -> str:
    add_app(backend_of, "SayHello", "echo hello,")
    return "SayHello"


def test_dash_capital_v_prints_the_version() -> None:
    done = run("-V")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"balsam {version('balsam')}\n"


def test_a_05_tutorial_typed_with_prefixes_and_unquoted_words(
    site: Site, backend_of: Backend
) -> None:
    done = run("app", "--name", "SayHello", "--exec", "echo hello,", "--desc", "says", "hello")
    assert (done.returncode, done.stderr) == (0, "")
    assert backend_of.get_app("SayHello").description == "says hello"
    done = run(
        "job", "--name", "hi", "--work", "test", "--app", "SayHello",
        "--args", "-n", "10", "--verbose", "--desc", "a", "first", "job",
        "--mpi-flags", "--bind-to", "core", "--input-files", "*.dat", "geom???.xyz",
        "--stage-out-files", "*.h5", "*.log", "--wall", "5", "--yes",
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    job = backend_of.get_job(done.stdout.strip())
    assert (job.args, job.description, job.mpi_flags) == (
        "-n 10 --verbose",
        "a first job",
        "--bind-to core",
    )
    assert (job.input_files, job.stage_out_files) == ("*.dat geom???.xyz", "*.h5 *.log")
    assert job.wall_time_minutes == 5
    listed = run("ls", "--hist")
    assert listed.returncode == 0, listed.stderr
    assert f"{job.job_id[:8]}  hi  (test)" in listed.stdout
    verbose = run("ls", "--v")
    assert "mpi_flags              --bind-to core" in verbose.stdout


def test_an_ambiguous_prefix_is_one_line_naming_the_options(
    site: Site, backend_of: Backend, hello: str
) -> None:
    done = run("job", "--n", "hi", "--workflow", "test", "--application", hello, "--yes")
    refused(
        done, 2, "option --n is ambiguous: it could be --name, --node-packing-count, --num-nodes"
    )
    assert all_jobs(backend_of) == []
    refused(run("ls", "--h"), 2, "option --h is ambiguous: it could be --help, --history")


def test_job_prompt_shows_the_command_line_and_working_directory(
    site: Site, backend_of: Backend, hello: str
) -> None:
    done = run(
        "job", "--name", "hi", "--workflow", "test", "--application", hello,
        "--args", "big", "world", stdin="y\n", COLUMNS="300",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[-1].split()[-1]
    job = backend_of.get_job(job_id)
    assert "command             echo hello, big world" in done.stdout
    assert f"working directory   {job_dir(site, job)}" in done.stdout
    assert "The workflow 'test' has 0 job(s) in the database now" in done.stdout
    assert "Confirm adding job to DB [y/N]:" in done.stdout


def test_coschedule_num_nodes_is_kept_in_the_jobs_data(
    site: Site, backend_of: Backend, hello: str
) -> None:
    base = ("job", "--name", "co", "--workflow", "test", "--application", hello, "--yes")
    done = run(*base, "--coschedule-num-nodes", "3")
    assert done.returncode == 0, done.stderr
    assert backend_of.get_job(done.stdout.strip()).data == {"coschedule_num_nodes": 3}
    refused(run(*base, "--coschedule-num-nodes", "-1"), 2, "--coschedule-num-nodes")
    assert len(all_jobs(backend_of)) == 1


def test_ls_fields_and_limit_from_the_environment(
    site: Site, backend_of: Backend, hello: str
) -> None:
    add_jobs(backend_of, hello, *({"name": f"j{i}", "num_nodes": i + 1} for i in range(3)))
    done = run("ls", BALSAM_LS_FIELDS="num_nodes:args", BALSAM_LS_LIMIT="2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "WORKFLOW",
        "APPLICATION",
        "STATE",
        "NUM_NODES",
        "ARGS",
    ]
    rows = {(line.split()[1], line.split()[5]) for line in lines[2:4]}
    assert len(rows) == 2 and rows <= {("j0", "1"), ("j1", "2"), ("j2", "3")}
    (more,) = lines[4:]
    assert more.startswith("(1 more job(s) not shown: BALSAM_LS_LIMIT is 2; the next page: ")
    commas = run("ls", BALSAM_LS_FIELDS="num_nodes,wall_time_minutes")
    assert commas.stdout.splitlines()[0].split()[-2:] == ["NUM_NODES", "WALL_TIME_MINUTES"]
    refused(run("ls", BALSAM_LS_FIELDS="nodes"), 2, "BALSAM_LS_FIELDS names no job field 'nodes'")
    refused(run("ls", BALSAM_LS_LIMIT="lots"), 2, "BALSAM_LS_LIMIT must be a whole number above 0")


def test_ls_id_matches_any_part_of_the_id(site: Site, backend_of: Backend, hello: str) -> None:
    (job, _other) = add_jobs(backend_of, hello, {"name": "one"}, {"name": "two"})
    done = run("ls", "--id", job.job_id[9:18])
    assert done.returncode == 0, done.stderr
    assert [line.split()[1] for line in done.stdout.splitlines()[2:]] == ["one"]
    refused(run("ls", "--id", "zzzz"), 3, "no job with id 'zzzz'")


def test_wf_is_exact_when_the_workflow_exists_else_a_substring(
    site: Site, backend_of: Backend, hello: str
) -> None:
    add_jobs(
        backend_of, hello,
        {"name": "a", "workflow": "sim"}, {"name": "b", "workflow": "sim_big"},
        {"name": "c", "workflow": "other"},
    )  # fmt: skip

    def names(wf: str) -> list[str]:
        done = run("ls", "--wf", wf)
        assert done.returncode == 0, done.stderr
        return [line.split()[1] for line in done.stdout.splitlines()[2:]]

    assert names("sim") == ["a"]
    assert sorted(names("si")) == ["a", "b"]
    assert sorted(names("SI")) == ["a", "b"], "ls matches the part regardless of case, as 0.5"
    assert names("nothing") == []


def test_launcher_wf_filter_falls_back_to_workflows_containing_it(
    site: Site, backend_of: Backend, hello: str
) -> None:
    add_jobs(
        backend_of, hello, {"name": "a", "workflow": "sim_a"}, {"name": "b", "workflow": "sim_b"},
        {"name": "c", "workflow": "other"},
    )  # fmt: skip
    done = launch("--consume-all", "--wf-filter", "sim", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    assert (
        "balsam: warning: no job is in workflow 'sim'; running the workflows whose names "
        "contain it, as Balsam 0.5 did: sim_a, sim_b"
    ) in done.stderr
    states = {j.name: j.state for j in all_jobs(backend_of)}
    assert states == {"a": S.JOB_FINISHED, "b": S.JOB_FINISHED, "c": S.PREPROCESSED}


def test_launcher_takes_05_flags(site: Site, backend_of: Backend, hello: str) -> None:
    add_jobs(backend_of, hello, {"name": "a"})
    done = launch(
        "--consume", "--job-mode", "serial", "--num-transition-threads", "4",
        "--gpus-per-node", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [j.state for j in all_jobs(backend_of)] == [S.JOB_FINISHED]
    refused(launch("--consume-all", "--gpus-per-node", "-1"), 2, "--gpus-per-node")


def test_launcher_persistent_keeps_running_with_nothing_to_do(site: Site) -> None:
    started = time.monotonic()
    done = launch(
        "--consume-all", "--persistent", "--job-mode", "serial", "--time-limit-minutes", "0.05"
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 2.5, "--persistent ignored: exited with nothing to do"


def test_modify_type_apps_changes_an_app(site: Site, backend_of: Backend, hello: str) -> None:
    done = run("modify", "--type", "apps", hello, "executable", "echo goodbye,")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "App SayHello: executable = 'echo goodbye,'\n"
    assert backend_of.get_app(hello).executable == "echo goodbye,"
    app_id = str(backend_of.get_app(hello).id)
    assert run("modify", "--ty", "apps", app_id, "description", "greets").returncode == 0
    assert backend_of.get_app(hello).description == "greets"
    refused(
        run("modify", "--type", "apps", "Nope", "description", "x"),
        3,
        "no application named 'Nope'",
    )
    refused(run("modify", "--type", "apps", hello, "name", "x"), 2, "unknown app attribute 'name'")
    assert backend_of.get_app(hello).description == "greets"


def test_killjob_is_kill(site: Site, backend_of: Backend, hello: str) -> None:
    (job,) = add_jobs(backend_of, hello, {"name": "doomed"})
    done = run("killjob", "--id", job.job_id[:8])
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"Killed 1 job(s): {job.job_id[:8]}\n"
    assert backend_of.get_job(job.job_id).state is S.USER_KILLED
    refused(run("killjob", "--id", "zzzz"), 3, "zzzz")


def test_mkchild_from_inside_a_running_job(site: Site, backend_of: Backend, hello: str) -> None:
    add_app(backend_of, "Spawner", f"{BALSAM} mkchild --workflow test --application {hello} --yes")
    (parent,) = add_jobs(
        backend_of, "Spawner", {"name": "parent", "args": "--name kid --args big world"}
    )
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    jobs = {j.name: j for j in all_jobs(backend_of)}
    assert jobs["parent"].state is S.JOB_FINISHED
    kid = jobs["kid"]
    assert (kid.parents, kid.args, kid.state) == ([parent.job_id], "big world", S.JOB_FINISHED)
    out = (job_dir(site, kid) / f"{kid.name}.out").read_text()
    assert out == "hello, big world\n"


def test_mkchild_outside_a_job_is_one_line(site: Site, backend_of: Backend, hello: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_JOB_ID"}
    done = subprocess.run(
        [BALSAM, "mkchild", "--name", "kid", "--workflow", "test", "--application", hello],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    refused(done, 2, "mkchild adds a child of the running job, but BALSAM_JOB_ID is not set")
    assert all_jobs(backend_of) == []


def test_rm_takes_force_wf_filter_and_singular_objects(
    site: Site, backend_of: Backend, hello: str
) -> None:
    add_jobs(
        backend_of, hello,
        {"name": "hi1", "workflow": "keep"}, {"name": "hi2", "workflow": "drop"},
        {"name": "hi3", "workflow": "drop"}, {"name": "other", "workflow": "drop"},
    )  # fmt: skip
    done = run("rm", "job", "--name", "hi", "--wf-filter", "drop", "--force")
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "Removed 2 job(s)\n")
    assert sorted(j.name for j in all_jobs(backend_of)) == ["hi1", "other"]
    # Exactly the workflow named, never one containing it: a removal cannot be undone.
    refused(run("rm", "jobs", "--wf-filter", "dro", "--force"), 3, "no jobs match; nothing removed")
    done = run("rm", "jobs", "--wf-filter", "drop", "--force")
    assert done.stdout == "Removed 1 job(s)\n"
    refused(run("rm", "app", "--name", hello, "--wf-filter", "keep"), 2, "--wf-filter selects jobs")
    run("rm", "job", "--all", "--force")
    done = run("rm", "app", "--name", hello, "--force")
    assert done.stdout == "Removed 1 app(s): SayHello\n"


def test_make_dummies_adds_quick_jobs(site: Site, backend_of: Backend) -> None:
    done = run("make_dummies", "5")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "Added 5 dummy job(s) to workflow 'dummy'\n"
    jobs = all_jobs(backend_of)
    assert sorted(j.name for j in jobs) == [f"dummy{i}" for i in range(5)]
    assert {(j.application, j.args, j.node_packing_count) for j in jobs} == {("dummy", "hello", 64)}
    assert run("make_dummies", "2").returncode == 0, "the dummy app is reused"
    refused(run("make_dummies", "0"), 2, "0")
    assert len(all_jobs(backend_of)) == 7


def test_which_name_and_balsamactivate_take_a_unique_part(tmp_path: Path) -> None:
    for name in ("myWorkflow", "other_wf", "other_db"):
        assert run("init", str(tmp_path / name)).returncode == 0
    done = run("which", "--na", "myW")
    assert (done.returncode, done.stdout) == (0, f"{tmp_path / 'myWorkflow'}\n")
    refused(
        run("which", "--name", "other"), 3, "'other' is part of several workflow databases' paths"
    )
    refused(run("which", "--name", "nowhere"), 3, "no workflow database named 'nowhere'")
    done = shell("PS1='$ '; source balsamactivate myW && echo \"$BALSAM_DB_PATH|$PS1\"")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"{tmp_path / 'myWorkflow'}|[myWorkflow] $ \n"
    done = shell('source balsamactivate other; echo "rc=$? ${BALSAM_DB_PATH:-unset}"')
    assert done.stdout == "rc=3 unset\n"
    assert len(done.stderr.splitlines()) == 1
    assert "other_db" in done.stderr and "other_wf" in done.stderr


def test_bcd_changes_into_a_jobs_directory(
    site: Site, backend_of: Backend, hello: str, tmp_path: Path
) -> None:
    assert (BIN / "bcd").read_text() == (
        Path(__file__).parents[2] / "src/balsam/shell/bcd"
    ).read_text()
    (job, other) = add_jobs(backend_of, hello, {"name": "one"}, {"name": "two"})
    workdir = job_dir(site, job)
    workdir.mkdir(parents=True)
    done = shell(f"source bcd {job.job_id[:6]} && pwd", cwd=tmp_path)
    assert (done.returncode, done.stderr, done.stdout) == (0, "", f"{workdir}\n")
    done = shell(f"source bcd {job.job_id[10:20]} && pwd", cwd=tmp_path)
    assert done.stdout == f"{workdir}\n", "any unique part of the id"
    done = shell(f'source bcd {other.job_id[:8]}; echo "rc=$? $PWD"', cwd=tmp_path)
    assert done.stdout == f"rc=1 {tmp_path}\n"
    assert (
        done.stderr
        == f"bcd: the job's working directory does not exist yet: {job_dir(site, other)}\n"
    )
    done = shell('source bcd zzzz; echo "rc=$? $PWD"', cwd=tmp_path)
    assert done.stdout == f"rc=3 {tmp_path}\n"
    assert done.stderr == "balsam: error: no job with id 'zzzz'\n"
    done = shell(f"bcd {job.job_id[:8]}")
    assert (done.returncode, done.stderr) == (2, "bcd must be sourced: source bcd ID\n")


def test_launcher_time_limit_zero_means_the_default(
    site: Site, backend_of: Backend, hello: str
) -> None:
    (job,) = add_jobs(backend_of, hello, {"name": "z"})
    done = launch("--consume-all", "--job-mode", "serial", "--time-limit-minutes", "0")
    assert done.returncode == 0, done.stderr
    assert backend_of.get_job(job.job_id).state is S.JOB_FINISHED
    refused(run("launcher", "--consume-all", "--time-limit-minutes", "-1"), 2, "-1")


def test_a_bare_balsam_service_starts_it(site: Site) -> None:
    from balsam.batch_settings import QueueSettings
    from balsam.config import load_settings, save_settings

    current = load_settings(site.path)
    current.queues = {"local": QueueSettings(max_nodes=1, max_wall_time_minutes=10)}
    save_settings(site.path, current)
    started = run("service")
    assert started.returncode == 0, started.stderr
    try:
        status = run("service", "status")
        assert "service: running" in status.stdout, status.stdout
    finally:
        assert run("service", "stop").returncode == 0
    assert "not running" in run("service", "status").stdout

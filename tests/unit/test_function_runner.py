"""The process of a function job (balsam.launcher.funcrun) and the launcher's side of it
(balsam.launcher.calls): the call file in, the outcome file out, ranks, and what is refused.

The runner is called in this process (its ``main``, in a temporary working directory), and
once in a real interpreter that has no Balsam (``/usr/bin/python3 -I``), as a launcher runs
it for an app that names its own interpreter.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from balsam.domain import functions
from balsam.launcher import calls, commands, funcrun
from balsam.launcher.worker import write_files
from balsam.platform.containers import ApptainerRuntime
from balsam.platform.mpi import MpichLauncher
from balsam.schemas.apps import AppOut
from balsam.schemas.jobs import JobOut

MODULE = textwrap.dedent(
    """
    import os

    def add(a, b, scale=1):
        return (a + b) * scale

    def boom(x):
        raise ValueError(f"bad {x}")

    def a_set():
        return {1, 2}

    def nan():
        return float("nan")

    def huge():
        return "x" * (1024 * 1024 + 10)

    def wander(where):
        os.chdir(where)
        return "moved"

    def leave():
        raise SystemExit(3)

    class Model:
        @staticmethod
        def run(n):
            return [n, n]
    """
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A job's working directory holding the user's module ``tasks``, as the cwd."""
    (tmp_path / "tasks.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in funcrun.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield tmp_path
    sys.modules.pop("tasks", None)


def run_call(workdir: Path, function: str, *args: Any, mpi: bool = False, **kwargs: Any) -> int:
    call = {"function": function, "args": list(args), "kwargs": kwargs, "token": "t1", "mpi": mpi}
    (workdir / funcrun.CALL_FILE).write_text(json.dumps(call))
    return funcrun.main([])


def written(workdir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((workdir / funcrun.RESULT_FILE).read_text())
    assert data["token"] == "t1"
    outcome: dict[str, Any] = data["outcome"]
    assert functions.outcome_problem(outcome) is None
    return outcome


def test_a_returned_value_is_written_and_the_exit_is_0(workdir: Path) -> None:
    assert run_call(workdir, "tasks:add", 1, 2, scale=10) == 0
    assert written(workdir) == {"value": 30}
    assert run_call(workdir, "tasks:Model.run", 4) == 0
    assert written(workdir) == {"value": [4, 4]}


def test_an_exception_is_written_with_its_traceback_and_the_exit_is_1(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_call(workdir, "tasks:boom", 7) == 1
    error = written(workdir)["exception"]
    assert (error["type"], error["message"]) == ("ValueError", "bad 7")
    assert 'tasks.py", line 8, in boom' in error["traceback"]
    assert error["traceback"].rstrip().endswith("ValueError: bad 7")
    # The runner's own frame is no help to the user: the traceback starts in their code.
    assert "funcrun" not in error["traceback"]
    assert error["traceback"] in capsys.readouterr().err


def test_a_call_that_does_not_fit_the_signature_is_the_functions_error(workdir: Path) -> None:
    assert run_call(workdir, "tasks:add", 1) == 1
    error = written(workdir)["exception"]
    assert error["type"] == "TypeError" and "missing 1 required positional" in error["message"]


def test_a_value_json_cannot_hold_is_an_error_naming_its_type(workdir: Path) -> None:
    assert run_call(workdir, "tasks:a_set") == 1
    error = written(workdir)["exception"]
    assert error["type"] == "TypeError"
    assert error["message"].startswith("the function returned a set, which cannot be stored")
    assert run_call(workdir, "tasks:nan") == 1
    assert written(workdir)["exception"]["type"] == "ValueError"


def test_a_value_too_big_for_the_database_is_an_error(workdir: Path) -> None:
    assert run_call(workdir, "tasks:huge") == 1
    message = written(workdir)["exception"]["message"]
    assert "more than the 1,048,576 a job's result may hold" in message


def test_an_import_that_fails_is_the_outcome(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_call(workdir, "no_such_module:f") == 1
    error = written(workdir)["exception"]
    assert (error["type"], error["message"]) == (
        "ModuleNotFoundError",
        "No module named 'no_such_module'",
    )
    assert "balsam: cannot import 'no_such_module:f'; sys.path is [" in capsys.readouterr().err
    assert run_call(workdir, "tasks:missing") == 1
    assert written(workdir)["exception"]["type"] == "AttributeError"


def test_system_exit_in_the_function_is_its_outcome(workdir: Path) -> None:
    assert run_call(workdir, "tasks:leave") == 1
    assert written(workdir)["exception"]["type"] == "SystemExit"


def test_the_outcome_goes_to_the_jobs_directory_even_if_the_function_moves(
    workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert run_call(workdir, "tasks:wander", str(elsewhere)) == 0
    assert written(workdir) == {"value": "moved"}
    assert not (elsewhere / funcrun.RESULT_FILE).exists()


def test_a_missing_or_bad_call_file_is_exit_2(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert funcrun.main([]) == 2
    assert "cannot read the call" in capsys.readouterr().err
    (workdir / funcrun.CALL_FILE).write_text('{"function": "tasks:add", "args": {}}')
    assert funcrun.main([]) == 2
    assert not (workdir / funcrun.RESULT_FILE).exists()


@pytest.mark.parametrize(
    "variable", ["PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"]
)
def test_under_mpi_only_rank_0_writes(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "1")
    assert run_call(workdir, "tasks:add", 1, 2, mpi=True) == 0
    assert not (workdir / funcrun.RESULT_FILE).exists()
    monkeypatch.setenv(variable, "0")
    assert run_call(workdir, "tasks:add", 1, 2, mpi=True) == 0
    assert written(workdir) == {"value": 3}


def test_outside_mpi_an_inherited_rank_variable_is_ignored(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A serial-mode worker started by mpiexec -ppn 1 passes its own PMI_RANK to every job.
    monkeypatch.setenv("PMI_RANK", "3")
    assert run_call(workdir, "tasks:add", 1, 2, mpi=False) == 0
    assert written(workdir) == {"value": 3}
    # The most specific variable wins: a batch script's SLURM_PROCID=0 under mpiexec.
    assert funcrun.rank({"SLURM_PROCID": "0", "PMI_RANK": "1"}, mpi=True) == 1


def test_the_runner_uses_only_the_standard_library() -> None:
    """It runs in interpreters without Balsam (an app's own, a container's)."""
    tree = ast.parse(Path(funcrun.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
    # Its limits are the domain's (it cannot import them).
    assert funcrun.VALUE_LIMIT == functions.VALUE_LIMIT
    assert funcrun.MESSAGE_LIMIT == functions.MESSAGE_LIMIT
    assert funcrun.TRACEBACK_LIMIT == functions.TRACEBACK_LIMIT


def test_an_interpreter_without_balsam_runs_the_call(tmp_path: Path) -> None:
    """As the launcher runs an app that names its interpreter: PYTHON -c <runner source>."""
    (tmp_path / "tasks.py").write_text(MODULE)
    call = {"function": "tasks:add", "args": [2, 3], "kwargs": {}, "token": "t1", "mpi": False}
    (tmp_path / funcrun.CALL_FILE).write_text(json.dumps(call))
    env = {"PATH": os.defpath}
    done = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", "import balsam"], env=env, capture_output=True, check=False
    )
    assert done.returncode != 0, "the system Python must not see Balsam for this test"
    argv = calls.function_argv(app(python="/usr/bin/python3"))
    # -I would drop the working directory from sys.path; the launcher does not pass it.
    ran = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    assert json.loads((tmp_path / funcrun.RESULT_FILE).read_text())["outcome"] == {"value": 5}


def app(**fields: str) -> AppOut:
    return AppOut(id=1, name="Add", function=fields.pop("function", "tasks:add"), **fields)


def job(**fields: Any) -> JobOut:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    values = {
        "job_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        "application": "Add",
        "state": "RUNNING",
        "state_timestamp": now,
        "created_at": now,
        "working_directory": "data/fn/a",
        **fields,
    }
    return JobOut.model_validate(values)


def test_the_interpreter_is_the_apps_else_the_workflows_or_the_containers() -> None:
    assert calls.function_argv(app())[:2] == [sys.executable, "-c"]
    assert calls.function_argv(app(python="/env/bin/python"))[0] == "/env/bin/python"
    assert calls.function_argv(app(), in_container=True)[0] == "python3"
    assert calls.function_argv(app())[2] == Path(funcrun.__file__).read_text()


def test_each_call_has_its_own_token() -> None:
    one = calls.make_call(job(function_args=[1], function_kwargs={"b": 2}), app(), mpi=True)
    two = calls.make_call(job(), app(), mpi=False)
    assert one.token != two.token
    assert json.loads(one.text) == {
        "function": "tasks:add",
        "args": [1],
        "kwargs": {"b": 2},
        "token": one.token,
        "mpi": True,
        "job_id": job().job_id,
    }
    assert json.loads(two.text)["args"] == [] and json.loads(two.text)["kwargs"] == {}


def write_result(where: Path, content: object) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    (where / calls.RESULT_FILE).write_text(text)


def test_the_launcher_reads_only_this_runs_outcome(tmp_path: Path) -> None:
    assert (
        calls.read_outcome(tmp_path, "t1").problem
        == "the function's process left no balsam_result.json"
    )
    write_result(tmp_path, {"token": "earlier", "outcome": {"value": 1}})
    found = calls.read_outcome(tmp_path, "t1")
    assert found.outcome is None and "of this run" in found.problem
    write_result(tmp_path, {"token": "t1", "outcome": {"value": 1}})
    found = calls.read_outcome(tmp_path, "t1")
    assert found.returned and found.summary() == "the function returned 1"
    write_result(tmp_path, {"token": "t1", "outcome": {"exception": {"type": "E"}}})
    assert "holds no outcome" in calls.read_outcome(tmp_path, "t1").problem
    write_result(tmp_path, "{not json")
    assert calls.read_outcome(tmp_path, "t1").problem == "balsam_result.json is not JSON"
    write_result(tmp_path, " " * (calls.RESULT_FILE_LIMIT + 1))
    assert "is larger than" in calls.read_outcome(tmp_path, "t1").problem


def test_the_worker_writes_a_runs_files_whole_and_only_in_its_directory(tmp_path: Path) -> None:
    write_files(tmp_path, {calls.CALL_FILE: '{"x": 1}'})
    assert (tmp_path / calls.CALL_FILE).read_text() == '{"x": 1}'
    assert [p.name for p in tmp_path.iterdir()] == [calls.CALL_FILE]
    for bad in ("../escape", "", "."):
        with pytest.raises(ValueError, match="not a file name"):
            write_files(tmp_path, {bad: "x"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("mypkg.sim:run", None),
        ("tasks:Model.run", None),
        ("", None),
        ("tasks", "must be MODULE:FUNCTION"),
        ("tasks:", "must be MODULE:FUNCTION"),
        (":run", "must be MODULE:FUNCTION"),
        ("a:b:c", "must be MODULE:FUNCTION"),
        ("my-pkg:run", "no valid module name"),
        ("pkg:1run", "no valid function name"),
        ("class:run", "no valid module name"),
        ("pkg.sim:run ", "no valid function name"),
        ("path/to/file.py:run", "no valid module name"),
    ],
)
def test_the_function_of_an_app_is_module_colon_name(text: str, problem: str | None) -> None:
    found = functions.function_problem(text)
    assert (found is None) if problem is None else (problem in str(found))


def test_a_call_reads_as_python() -> None:
    assert functions.call_text("m:f", [1, "a"], {"x": None}) == 'm:f(1, "a", x=null)'
    assert functions.call_text("m:f", None, None) == "m:f()"


def test_json_arguments_say_what_is_wrong() -> None:
    assert functions.parse_json_argument("[1, 2]", "--function-args", list) == [1, 2]
    with pytest.raises(ValueError, match=r"--function-args must be a JSON list such as"):
        functions.parse_json_argument("1, 2", "--function-args", list)
    with pytest.raises(ValueError, match=r"must be a JSON object .* \(got '\[1\]'\)"):
        functions.parse_json_argument("[1]", "--function-kwargs", dict)


def test_outcome_summaries_are_one_line() -> None:
    assert functions.outcome_summary({"value": {"a": 1}}) == 'returned {"a": 1}'
    raised = {"exception": {"type": "KeyError", "message": "'k'\nmore", "traceback": "..."}}
    assert functions.outcome_summary(raised) == "raised KeyError: 'k'"
    assert functions.outcome_summary({"value": "x" * 500}, width=20) == 'returned "xxxxxxx...'


# ---- the run command of a function job --------------------------------------------------------


def _command(
    tmp_path: Path, the_app: AppOut, the_job: JobOut, mpi_mode: bool = False
) -> commands.RunCommand:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    runtime = ApptainerRuntime()
    if the_app.container:
        bindir = tmp_path / "bin"
        bindir.mkdir(exist_ok=True)
        (bindir / "apptainer").write_text("#!/bin/sh\n")
        (bindir / "apptainer").chmod(0o755)
        env["PATH"] = f"{bindir}:{env['PATH']}"
    mpi = MpichLauncher("mpiexec")
    return commands.run_command(
        the_job, the_app, ["h1"], mpi, mpi_mode, {"A": "1"}, env, tmp_path, container=runtime
    )


def test_a_function_job_runs_the_runner_with_its_call_beside_it(tmp_path: Path) -> None:
    run = _command(tmp_path, app(), job(function_args=[1], args=""))
    assert run.argv == [sys.executable, "-c", calls.runner_source()]
    assert not run.through_mpi and run.variables == {"A": "1"}
    call = json.loads(run.files[calls.CALL_FILE])
    assert (call["function"], call["args"], call["token"], call["mpi"]) == (
        "tasks:add",
        [1],
        run.token,
        False,
    )


def test_under_mpi_every_rank_runs_the_runner_and_the_call_says_so(tmp_path: Path) -> None:
    run = _command(tmp_path, app(), job(ranks_per_node=2), mpi_mode=False)
    assert run.through_mpi
    assert run.argv[:7] == ["mpiexec", "-n", "2", "-ppn", "2", "-hosts", "h1"]
    assert run.argv[-3:] == [sys.executable, "-c", calls.runner_source()]
    assert json.loads(run.files[calls.CALL_FILE])["mpi"] is True


def test_in_a_container_the_images_python_runs_the_runner(tmp_path: Path) -> None:
    run = _command(tmp_path, app(container="docker://python:3.12"), job())
    here = str(tmp_path)
    assert run.argv == [
        "apptainer", "exec", "--bind", here, "--pwd", here, "docker://python:3.12",
        "python3", "-c", calls.runner_source(),
    ]  # fmt: skip


def test_an_envscript_is_sourced_before_the_call_which_stays_quoted(tmp_path: Path) -> None:
    run = _command(tmp_path, app(envscript="/opt/env.sh", python="/env/bin/python"), job())
    assert run.argv[:2] == ["/bin/sh", "-c"]
    script = run.argv[2]
    assert script.startswith(". /opt/env.sh && /env/bin/python -c ")
    # The shell hands the runner's source over as one word, unchanged.
    assert shlex.split(script.removeprefix(". /opt/env.sh && "))[2] == calls.runner_source()

"""Python function apps end to end: real launchers, real databases, real MPI.

Every test runs on SQLite and on PostgreSQL (the ``site`` fixture). Launchers are ``balsam``
subprocesses; the test is the user's driver script, calling the Python API in this process
(``job.result()`` waits on the database's change signal). The user's functions live in a
module outside the workflow directory that jobs find through ``PYTHONPATH`` in their
environment, as docs/functions.md tells users to do.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.api import App, Job, close_default_backend
from balsam.backends.base import Backend
from balsam.config import Site
from balsam.errors import JobError, RemoteError
from launchkit import (
    S,
    balsam,
    entered,
    job_dir,
    launch,
    start_launcher,
    state_of,
    stop,
    wait_for,
)

TASKS = textwrap.dedent(
    """
    import os
    import sys
    import time


    def add(a, b, scale=1):
        return (a + b) * scale


    def boom(x):
        raise ValueError(f"bad input {x}")


    def vanish():
        os._exit(0)


    def produce(n):
        with open("out.txt", "w") as fh:
            fh.write(str(n))
        return n


    def double_input():
        with open("out.txt") as fh:
            return 2 * int(fh.read())


    def ranks(tag):
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        print(f"rank {comm.Get_rank()} of {comm.Get_size()}", flush=True)
        return {"tag": tag, "rank": comm.Get_rank(), "size": comm.Get_size()}


    def interpreter():
        import importlib.util

        return [sys.executable, importlib.util.find_spec("balsam") is not None]


    def flaky():
        if not os.path.exists("tried"):
            open("tried", "w").close()
            raise RuntimeError("first attempt fails")
        return "second attempt"


    def nap(seconds):
        time.sleep(seconds)
        return "woke"


    def greeting():
        return os.environ["GREETING"]
    """
)


@pytest.fixture
def tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The user's module ``fntasks``, importable here and by the jobs (their environment)."""
    where = tmp_path / "usercode"
    where.mkdir()
    (where / "fntasks.py").write_text(TASKS)
    monkeypatch.syspath_prepend(str(where))
    yield {"PYTHONPATH": str(where)}
    sys.modules.pop("fntasks", None)
    close_default_backend()


def function_app(name: str, function: str, **fields: str) -> App:
    app = App(name=name, function=f"fntasks:{function}", **fields)
    app.save()
    return app


def test_results_and_remote_tracebacks_through_a_real_launcher(
    site: Site, backend_of: Backend, tasks: dict[str, str]
) -> None:
    import fntasks

    adder = Job.calling(
        fntasks.add,
        args=[1, 2],
        kwargs={"scale": 10},
        name="add",
        workflow="fn",
        environ_vars=tasks,
    )
    function_app("Boom", "boom")
    function_app("Vanish", "vanish")
    boom = Job(
        name="boom", workflow="fn", application="Boom", function_args=[7], environ_vars=tasks
    )
    gone = Job(name="gone", workflow="fn", application="Vanish", environ_vars=tasks)
    Job.objects.bulk_create([adder, boom, gone])
    assert App.objects.get(name="fntasks.add").function == "fntasks:add"
    with pytest.raises(TimeoutError, match=r"has not ended within 0\.2 s"):
        adder.result(timeout=0.2)
    launcher = start_launcher("--consume-all", "--job-mode", "serial", quiet=True)
    try:
        assert adder.result(timeout=120) == 30
        with pytest.raises(RemoteError) as raised:
            boom.result(timeout=120)
        with pytest.raises(JobError, match="ended FAILED without a result") as lost:
            gone.result(timeout=120)
        assert launcher.wait(timeout=60) == 0
    finally:
        stop(launcher)
    error = raised.value
    assert (error.remote_type, error.remote_message) == ("ValueError", "bad input 7")
    assert str(error) == f"job {boom.cute_id}: its function raised ValueError: bad input 7"
    assert 'fntasks.py", line 12, in boom' in error.remote_traceback
    assert error.remote_traceback in str(error.__cause__)
    assert "left no balsam_result.json" in str(lost.value)
    assert adder.function_outcome == {"value": 30} and adder.state is S.JOB_FINISHED
    assert entered(backend_of, adder.job_id, S.RUN_DONE).message == "the function returned 30"
    failed = entered(backend_of, boom.job_id, S.RUN_ERROR).message
    assert failed.startswith("run failed: exit code 1: the function raised ValueError: bad input 7")
    assert "Traceback (most recent call last)" in failed
    assert state_of(backend_of, gone.job_id) is S.FAILED
    assert (
        "exit code 0: the function's process left no"
        in entered(backend_of, gone.job_id, S.RUN_ERROR).message
    )


def test_a_function_job_waits_for_its_function_parent(
    site: Site, backend_of: Backend, tasks: dict[str, str]
) -> None:
    function_app("Produce", "produce")
    function_app("Double", "double_input")
    parent = Job(name="p", workflow="dag", application="Produce", function_args=[21])
    parent.environ_vars = tasks
    parent.save()
    child = Job(
        name="c", workflow="dag", application="Double", input_files="out.txt", environ_vars=tasks
    )
    child.set_parents([parent])
    child.save()
    assert child.state is S.AWAITING_PARENTS
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    assert parent.result(timeout=5) == 21
    assert child.result(timeout=5) == 42
    parent_end = entered(backend_of, parent.job_id, S.JOB_FINISHED).timestamp
    assert entered(backend_of, child.job_id, S.RUNNING).timestamp >= parent_end


def test_every_mpi_rank_calls_and_rank_0_answers(
    site: Site, backend_of: Backend, tasks: dict[str, str]
) -> None:
    function_app("Ranks", "ranks")
    # The jobs' PYTHONPATH replaces the launcher's: mpi4py is in the venv's site-packages.
    job = Job(
        name="mpi2",
        workflow="fn",
        application="Ranks",
        function_args=["x"],
        ranks_per_node=2,
        environ_vars=tasks,
    )
    job.save()
    done = launch("--consume-all", "--job-mode", "mpi")
    assert done.returncode == 0, done.stderr
    assert job.result(timeout=5) == {"tag": "x", "rank": 0, "size": 2}
    output = (job_dir(site, backend_of.get_job(job.job_id)) / "mpi2.out").read_text()
    assert sorted(re.findall(r"rank \d of \d", output)) == ["rank 0 of 2", "rank 1 of 2"]


def test_an_app_may_name_an_interpreter_without_balsam_and_an_envscript(
    site: Site, backend_of: Backend, tasks: dict[str, str], tmp_path: Path
) -> None:
    function_app("Which", "interpreter", python="/usr/bin/python3")
    envscript = tmp_path / "env.sh"
    envscript.write_text("export GREETING='hello from the envscript'\n")
    function_app("Greet", "greeting", envscript=str(envscript))
    which = Job(name="which", workflow="fn", application="Which", environ_vars=tasks)
    greet = Job(name="greet", workflow="fn", application="Greet", environ_vars=tasks)
    Job.objects.bulk_create([which, greet])
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    assert which.result(timeout=5) == ["/usr/bin/python3", False]
    assert greet.result(timeout=5) == "hello from the envscript"


def test_error_retries_and_the_error_handler_work_for_function_jobs(
    site: Site, backend_of: Backend, tasks: dict[str, str]
) -> None:
    function_app("Flaky", "flaky")
    function_app("Handled", "boom", postprocess="sh -c 'echo $BALSAM_JOB_ERROR > handled'")
    flaky = Job(
        name="flaky", workflow="fn", application="Flaky", max_error_retries=1, environ_vars=tasks
    )
    handled = Job(
        name="handled",
        workflow="fn",
        application="Handled",
        function_args=[3],
        post_error_handler=True,
        environ_vars=tasks,
    )
    Job.objects.bulk_create([flaky, handled])
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    # The second attempt cleared the first one's exception and stored its own value.
    assert flaky.result(timeout=5) == "second attempt"
    assert flaky.error_count == 1
    assert [e.to_state for e in backend_of.history(flaky.job_id)].count(S.RUN_ERROR) == 1
    # The handler ran as the error handler; it left the job RUN_ERROR, so it FAILED (0.5's
    # rule), and the function's exception is still what result() raises.
    with pytest.raises(RemoteError, match="its function raised ValueError: bad input 3"):
        handled.result(timeout=5)
    assert (job_dir(site, backend_of.get_job(handled.job_id)) / "handled").read_text() == "TRUE\n"


def test_a_killed_function_job_has_no_result(
    site: Site, backend_of: Backend, tasks: dict[str, str]
) -> None:
    function_app("Nap", "nap")
    job = Job(name="nap", workflow="fn", application="Nap", function_args=[60], environ_vars=tasks)
    job.save()
    launcher = start_launcher("--consume-all", "--job-mode", "serial", quiet=True)
    try:
        wait_for("RUNNING", lambda: state_of(backend_of, job.job_id) is S.RUNNING)
        assert balsam("kill", "--id", job.job_id[:8]).returncode == 0
        with pytest.raises(JobError, match=r"was killed \(USER_KILLED\): it has no result"):
            job.result(timeout=60)
        assert launcher.wait(timeout=60) == 0
    finally:
        stop(launcher)


def test_the_cli_registers_runs_and_shows_a_function_job(
    site: Site, backend_of: Backend, tasks: dict[str, str]
) -> None:
    made = balsam("app", "--name", "Add", "--function", "fntasks:add")
    assert made.returncode == 0 and made.stdout == "Added app Add: calls fntasks:add\n"
    added = balsam(
        "job", "--name", "a", "--workflow", "cli", "--application", "Add",
        "--call-args", "[4, 5]", "--kwargs", '{"scale": 2}',
        "--env", f"PYTHONPATH={tasks['PYTHONPATH']}", "--yes",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    job_id = added.stdout.strip()
    assert backend_of.get_job(job_id).function_kwargs == {"scale": 2}
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    shown = balsam("ls", "--verbose", "--id", job_id[:8])
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"function_args\s+\[4, 5\]", shown.stdout)
    assert re.search(r"function_outcome\s+returned 18", shown.stdout)
    apps = balsam("ls", "apps")
    assert re.search(r"Add\s+fntasks:add", apps.stdout)
    assert json.loads(json.dumps(backend_of.get_job(job_id).function_outcome)) == {"value": 18}

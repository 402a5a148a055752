"""Processing semantics Balsam 0.5 users rely on, through a real launcher (SQLite and PostgreSQL).

Each test is a 0.5 user's habit, written from 0.5's documented behaviour: a preprocess that
edits its job through ``dag.current_job`` and saves it, a postprocess that handles an error and
decides what comes next, children that gather same-named files from several parents. The
scripts run as the launcher starts them, with the Python of this installation.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from balsam.backends.base import Backend
from balsam.config import Site
from launchkit import S, add_app, add_jobs, job_dir, launch, state_of

PY = sys.executable


def script(tmp_path: Path, name: str, body: str) -> str:
    """Write a Python script; the command line that runs it."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return f"{PY} {path}"


def run_all() -> None:
    done = launch("--consume-all", "--job-mode", "serial", timeout=120)
    assert done.returncode == 0, done.stderr


def test_what_a_preprocess_saves_is_what_the_run_and_postprocess_use(
    site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    pre = script(
        tmp_path,
        "pre.py",
        """
        from balsam.launcher import dag
        job = dag.current_job
        assert dag.current_job is job, "one object per process"
        job.args = "from-the-preprocess"
        job.environ_vars = {"GREETING": "hello"}
        job.data["prepared"] = True
        job.save()
        """,
    )
    post = script(
        tmp_path,
        "post.py",
        """
        import os
        from balsam.launcher import dag
        print("data", dag.current_job.data, "error", dag.ERROR, "timeout", dag.TIMEOUT)
        print("parents", os.environ["BALSAM_PARENT_IDS"], "nodes", dag.LAUNCHER_NODES)
        """,
    )
    add_app(backend_of, "Edited", "sh -c 'echo $0 $GREETING'", preprocess=pre, postprocess=post)
    (job,) = add_jobs(backend_of, "Edited", {"name": "edited", "args": "as-created"})
    run_all()
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    workdir = job_dir(site, job)
    assert (workdir / "edited.out").read_text() == "from-the-preprocess hello\n"
    lines = (workdir / "postprocess.log").read_text().splitlines()
    assert lines[0] == f"# Balsam Postprocessor: {post}"
    assert lines[1] == "data {'prepared': True} error False timeout False"
    assert lines[2] == "parents [] nodes 1"
    assert (workdir / "preprocess.log").read_text().startswith(f"# Balsam Preprocessor: {pre}")


def test_an_error_handler_asks_for_a_rerun_and_the_rerun_finishes(
    site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    handler = script(
        tmp_path,
        "handler.py",
        """
        import os, shutil
        from balsam.launcher import dag
        if dag.ERROR:
            assert os.environ["BALSAM_JOB_ERROR"] == "TRUE"
            shutil.copy("postprocess.log", "handler-invoked.log")
            open("fixed", "w").close()
            dag.current_job.update_state("RESTART_READY", "fixed the input")
        """,
    )
    add_app(
        backend_of,
        "Flaky",
        "sh -c 'test -e fixed || exit 3; echo second try'",
        postprocess=handler,
    )
    (job,) = add_jobs(backend_of, "Flaky", {"name": "flaky", "post_error_handler": True})
    run_all()
    after = backend_of.get_job(job.job_id)
    assert after.state is S.JOB_FINISHED, [e.to_state for e in backend_of.history(job.job_id)]
    workdir = job_dir(site, job)
    assert (workdir / "flaky.out").read_text() == "second try\n"
    invoked = (workdir / "handler-invoked.log").read_text().splitlines()
    assert invoked[:2] == [f"# Balsam Postprocessor: {handler}", "# Invoked to handle RUN_ERROR"]
    states = [e.to_state for e in backend_of.history(job.job_id)]
    assert states.count("RUNNING") == 2 and "RESTART_READY" in states
    assert "fixed the input" in [e.message for e in backend_of.history(job.job_id)]


def test_an_error_handler_may_finish_or_fail_the_job(
    site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    decide = script(
        tmp_path,
        "decide.py",
        """
        from balsam.launcher import dag
        job = dag.current_job
        job.update_state(job.data["verdict"], "decided by the handler")
        """,
    )
    add_app(backend_of, "Fails", "sh -c 'exit 7'", postprocess=decide)
    jobs = add_jobs(
        backend_of,
        "Fails",
        *(
            {"name": verdict.lower(), "post_error_handler": True, "data": {"verdict": verdict}}
            for verdict in ("JOB_FINISHED", "FAILED")
        ),
    )
    run_all()
    assert [state_of(backend_of, j.job_id) for j in jobs] == [S.JOB_FINISHED, S.FAILED]


def test_same_named_files_of_several_parents_are_all_kept(site: Site, backend_of: Backend) -> None:
    add_app(backend_of, "Make", "sh -c 'echo $0 > out.txt'")
    add_app(backend_of, "Gather", "sh -c 'cat out.txt*'")
    parents = add_jobs(backend_of, "Make", *({"name": f"p{i}", "args": f"p{i}"} for i in range(3)))
    (child,) = add_jobs(
        backend_of,
        "Gather",
        {"name": "gather", "parents": [p.job_id for p in parents], "input_files": "out.txt"},
    )
    run_all()
    assert state_of(backend_of, child.job_id) is S.JOB_FINISHED
    workdir = job_dir(site, child)
    names = {p.name for p in workdir.glob("out.txt*")}
    suffixed = {name.removeprefix("out.txt_") for name in names - {"out.txt"}}
    by_id8 = {p.job_id[:8]: p for p in parents}
    # One parent's file keeps its name, the others' are named after their parents.
    assert "out.txt" in names and len(suffixed) == 2 and suffixed <= set(by_id8)
    for id8 in suffixed:
        assert (workdir / f"out.txt_{id8}").read_text() == f"{by_id8[id8].args}\n"
    (first,) = set(by_id8) - suffixed
    assert (workdir / "out.txt").read_text() == f"{by_id8[first].args}\n"
    assert sorted((workdir / "gather.out").read_text().split()) == ["p0", "p1", "p2"]


def test_0_5_data_locations_local_and_scp_through_a_launcher(
    site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("from local:\n")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    add_app(backend_of, "Copy", "sh -c 'cat in.txt > result.txt'")
    (job,) = add_jobs(
        backend_of,
        "Copy",
        {
            "name": "copy",
            "stage_in_url": f"local:{tmp_path / 'in.txt'}",
            "stage_out_files": "result.txt",
            "stage_out_url": f"scp:{outbox}/",
        },
    )
    (refused,) = add_jobs(
        backend_of, "Copy", {"name": "grid", "stage_in_url": "gsiftp://grid.example/in.txt"}
    )
    run_all()
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    assert (outbox / "result.txt").read_text() == "from local:\n"
    assert state_of(backend_of, refused.job_id) is S.FAILED
    reason = [e.message for e in backend_of.history(refused.job_id)][-1]
    assert "GridFTP (gsiftp://) is not supported" in reason

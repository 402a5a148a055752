"""Balsam 0.5's tutorials and recipes, retold in our words and run as a 0.5 user runs them.

Each test types the tutorial's commands (``balsam app``, ``balsam job``, ``balsam launcher``,
``balsam ls``) or runs its Python scripts against a real workflow database (SQLite and
PostgreSQL, the ``site`` fixture) with a real launcher, and checks what the tutorial says the
user sees. The scripts are ours, written from what the 0.5 documentation describes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from balsam.backends.base import Backend
from balsam.config import Site
from launchkit import BALSAM, S, all_jobs, job_dir, launch


def balsam(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [BALSAM, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def run_launcher() -> None:
    done = launch("--consume-all", "--job-mode", "serial", timeout=180)
    assert done.returncode == 0, done.stderr


def test_hello_world(site: Site, backend_of: Backend) -> None:
    """The first tutorial: one app, one job, a launcher, ``balsam ls``."""
    balsam("app", "--name", "SayHello", "--executable", "echo hello,")
    balsam(
        "job",
        "--name",
        "hi",
        "--workflow",
        "test",
        "--app",
        "SayHello",
        "--args",
        "world!",
        "--yes",
    )
    run_launcher()
    listing = balsam("ls").stdout
    assert "hi" in listing and "JOB_FINISHED" in listing
    (job,) = all_jobs(backend_of)
    assert (job_dir(site, job) / "hi.out").read_text() == "hello, world!\n"


def test_the_square_example_with_python_scripts_and_a_spawned_child(
    site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    """Python scripts registered by their .py path; the postprocess spawns a child job."""
    write(
        tmp_path / "square.py",
        """
        import sys
        x = float(open("input.dat").read())
        print(x * x)
        open("square.out.dat", "w").write(f"{x * x}\\n")
        """,
    )
    write(
        tmp_path / "pre.py",
        """
        from balsam.launcher import dag
        job = dag.current_job
        open("input.dat", "w").write(job.args)
        """,
    )
    write(
        tmp_path / "post.py",
        """
        from balsam.launcher import dag
        job = dag.current_job
        result = float(job.read_file_in_workdir("square.out.dat"))
        job.data["result"] = result
        job.save()
        if result < 100:
            dag.spawn_child(
                name=f"{job.name}_again", application="Square", args=str(result),
                state="CREATED",
            )
        """,
    )
    balsam(
        "app", "--name", "Square", "--executable", "square.py",
        "--preprocess", "pre.py", "--postprocess", "post.py",
        cwd=tmp_path,
    )  # fmt: skip
    app = next(a for a in backend_of.list_apps() if a.name == "Square")
    assert app.executable == f"{sys.executable} {tmp_path / 'square.py'}"
    balsam("job", "--name", "sq", "--workflow", "demo", "--app", "Square", "--args", "3", "--yes")
    run_launcher()
    results = {j.name: (j.state, j.data.get("result")) for j in all_jobs(backend_of)}
    # 3 -> 9 -> 81 -> 6561: the third square stops the chain.
    assert results == {
        "sq": (S.JOB_FINISHED, 9.0),
        "sq_again": (S.JOB_FINISHED, 81.0),
        "sq_again_again": (S.JOB_FINISHED, 6561.0),
    }


def test_a_dag_with_fan_out_and_a_reduce_that_gathers_same_named_files(
    site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    """The NWChem-style DAG of the 0.5 user guide, with a shell stand-in for the simulation:
    a driver script builds it with dag.add_job and add_dependency; the reduce step gathers
    every child's ``energy.dat``."""
    driver = write(
        tmp_path / "driver.py",
        """
        from balsam.launcher import dag
        from balsam.core.models import ApplicationDefinition
        app, _ = ApplicationDefinition.objects.get_or_create(name="Sim")
        app.executable = "sh -c 'echo $0 > energy.dat'"
        app.save()
        reduce_app, _ = ApplicationDefinition.objects.get_or_create(name="Reduce")
        reduce_app.executable = "sh -c 'cat energy.dat* | sort -n > all.dat'"
        reduce_app.save()
        setup = dag.add_job(name="setup", workflow="nw", application="Sim", args="0")
        points = [
            dag.add_job(name=f"point{i}", workflow="nw", application="Sim", args=str(i))
            for i in range(1, 4)
        ]
        for point in points:
            dag.add_dependency(setup, point)
        reduce = dag.add_job(name="reduce", workflow="nw", application="Reduce",
                             input_files="energy.dat")
        for point in points:
            dag.add_dependency(point, reduce)
        print("built", len(points) + 2)
        """,
    )
    done = subprocess.run(
        [sys.executable, str(driver)], capture_output=True, text=True, check=False,
        env={**os.environ, "BALSAM_DB_PATH": str(site.path)}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "built 5\n", done.stderr
    run_launcher()
    jobs = {j.name: j for j in all_jobs(backend_of)}
    assert {j.state for j in jobs.values()} == {S.JOB_FINISHED}
    gathered = job_dir(site, jobs["reduce"]) / "all.dat"
    assert gathered.read_text().split() == ["1", "2", "3"]


def test_the_retry_recipe_an_error_handler_gives_the_rerun_more_time(
    site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    """0.5's FAQ recipe: a job that fails is retried by its error handler with a changed
    setting (here, a longer allowance stored in its data and read by the app)."""
    write(
        tmp_path / "handler.py",
        """
        from balsam.launcher import dag
        job = dag.current_job
        if dag.ERROR:
            job.data["allowance"] = job.data.get("allowance", 1) * 10
            job.save()
            job.update_state("RESTART_READY", f"retrying with allowance {job.data['allowance']}")
        """,
    )
    write(
        tmp_path / "work.py",
        """
        import sys
        from balsam.launcher import dag
        allowance = dag.current_job.data.get("allowance", 1)
        sys.exit(0 if allowance >= 100 else 1)
        """,
    )
    balsam(
        "app", "--name", "Retry", "--executable", "work.py", "--postprocess", "handler.py",
        cwd=tmp_path,
    )  # fmt: skip
    balsam(
        "job",
        "--name",
        "tough",
        "--workflow",
        "w",
        "--app",
        "Retry",
        "--post-handle-error",
        "--yes",
    )
    run_launcher()
    (job,) = all_jobs(backend_of)
    assert job.state is S.JOB_FINISHED and job.data["allowance"] == 100
    messages = [e.message for e in backend_of.history(job.job_id)]
    assert "retrying with allowance 10" in messages and "retrying with allowance 100" in messages
    assert job.error_count == 2

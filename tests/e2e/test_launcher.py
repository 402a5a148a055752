"""The launcher on this machine, end to end: real processes, real databases, real MPI.

Every test runs on SQLite and on PostgreSQL (the ``site`` fixture). Launchers run as
``balsam`` subprocesses, as a user would start them, and jobs are checked through what a user
sees: states, the history (``balsam ls --history`` reads the same events) and output files.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.config import Site
from launchkit import (
    S,
    add_app,
    add_jobs,
    all_jobs,
    balsam,
    entered,
    gone,
    job_dir,
    launch,
    run_pid,
    settings,
    start_launcher,
    state_of,
    stop,
    wait_for,
)

# ---- the README's quick start and ensemble ---------------------------------------------------


def test_quick_start_through_the_cli(site: Site, backend_of: Backend) -> None:
    """`balsam app`, `balsam job`, `balsam submit-launch` in mpi mode: hello, world!"""
    assert balsam("app", "--name", "SayHello", "--executable", "echo hello,").returncode == 0
    made = balsam(
        "job", "--name", "hi", "--workflow", "test", "--application", "SayHello",
        "--args", "world!", "--yes",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    submitted = balsam(
        "submit-launch", "-A", "MyProject", "-q", "DebugQueue", "-t", "5", "-n", "1",
        "--job-mode=mpi",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stderr == ""
    launch_id = int(re.search(r"launch (\d+)", submitted.stdout).group(1))  # type: ignore[union-attr]
    try:
        (job,) = all_jobs(backend_of)
        wait_for("JOB_FINISHED", lambda: state_of(backend_of, job.job_id) is S.JOB_FINISHED)
        out = job_dir(site, job) / "hi.out"
        assert job.working_directory.startswith("data/test/hi_")
        assert out.read_text() == "hello, world!\n"
        wait_for("the launcher to exit (--consume-all)", lambda: gone(launch_id))
    finally:
        if not gone(launch_id):
            os.killpg(launch_id, signal.SIGKILL)
    scripts = list(site.scripts_dir.glob("*.sh"))
    assert len(scripts) == 1
    assert "launcher --consume-all --job-mode mpi --time-limit-minutes 5" in scripts[0].read_text()
    log = site.log_dir / f"launcher_{os.uname().nodename}_{launch_id}.log"
    assert f"{os.uname().nodename}:{launch_id}" in log.read_text()
    assert f"[{job.job_id[:8]}]" in log.read_text()


def test_ensemble_in_serial_mode(site: Site, backend_of: Backend) -> None:
    """Ten jobs, `submit-launch -n 2 --job-mode=serial`: each says hello to its own world."""
    add_app(backend_of, "SayHello", "echo hello,")
    jobs = add_jobs(
        backend_of, "SayHello", *({"name": f"hi{i}", "args": f"world {i}"} for i in range(10))
    )
    submitted = balsam(
        "submit-launch", "-A", "Project", "-q", "Queue", "-t", "5", "-n", "2",
        "--job-mode=serial",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    warnings = submitted.stderr.strip().splitlines()
    assert len(warnings) == 1 and "warning" in warnings[0] and "1" in warnings[0]
    launch_id = int(re.search(r"launch (\d+)", submitted.stdout).group(1))  # type: ignore[union-attr]
    try:
        wait_for(
            "ten JOB_FINISHED",
            lambda: all(j.state is S.JOB_FINISHED for j in all_jobs(backend_of)),
        )
        wait_for("the launcher to exit", lambda: gone(launch_id))
    finally:
        if not gone(launch_id):
            os.killpg(launch_id, signal.SIGKILL)
    for i, job in enumerate(jobs):
        assert (job_dir(site, job) / f"hi{i}.out").read_text() == f"hello, world {i}\n"


# ---- modes and placement ------------------------------------------------------------------------


def test_serial_mode_packs_node_packing_count_jobs_per_node(
    site: Site, backend_of: Backend
) -> None:
    """Four quarter-node `sleep` jobs run at once on a 4-core node; a fifth waits for room."""
    settings(site, platform={"cpus_per_node": 4})
    add_app(backend_of, "Nap", "sleep 1")
    jobs = add_jobs(
        backend_of, "Nap", *({"name": f"nap{i}", "node_packing_count": 4} for i in range(5))
    )
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    starts = sorted(entered(backend_of, j.job_id, S.RUNNING).timestamp for j in jobs)
    ends = sorted(entered(backend_of, j.job_id, S.RUN_DONE).timestamp for j in jobs)
    assert starts[3] < ends[0], "the first four overlap"
    assert starts[4] >= ends[0], "the fifth starts when one of them is done"
    assert all(state_of(backend_of, j.job_id) is S.JOB_FINISHED for j in jobs)


MPI_PROGRAM = """\
import sys
from mpi4py import MPI

comm = MPI.COMM_WORLD
size = comm.Get_size()
print(f"rank {comm.Get_rank()} of {size}", flush=True)
sys.exit(0 if size == int(sys.argv[1]) else 1)
"""


def test_mpi_mode_runs_mpi4py_on_two_ranks(site: Site, backend_of: Backend, tmp_path: Path) -> None:
    """Real mpiexec starts both ranks; the program checks the communicator's size."""
    program = tmp_path / "size_check.py"
    program.write_text(MPI_PROGRAM)
    add_app(backend_of, "SizeCheck", f"{sys.executable} {program}")
    (job,) = add_jobs(backend_of, "SizeCheck", {"name": "mpi2", "args": "2", "ranks_per_node": 2})
    done = launch("--consume-all", "--job-mode", "mpi")
    assert done.returncode == 0, done.stderr
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    # mpiexec forwards each rank's output as it comes: lines of two ranks may interleave.
    output = (job_dir(site, job) / "mpi2.out").read_text()
    assert sorted(re.findall(r"rank \d of \d", output)) == ["rank 0 of 2", "rank 1 of 2"]


def test_without_mpi_one_rank_runs_directly_and_more_ranks_wait_with_a_note(
    site: Site, backend_of: Backend
) -> None:
    """No MPI: a one-rank job still runs; a two-rank job is not claimed (another launcher,
    with MPI, may run it) and says why it waits; --consume-all does not wait for it."""
    settings(site, platform={"mpi_launcher": "none"})
    add_app(backend_of, "SayHello", "echo hello,")
    one, two = add_jobs(
        backend_of,
        "SayHello",
        {"name": "one", "args": "one"},
        {"name": "two", "args": "two", "ranks_per_node": 2},
    )
    done = launch("--consume-all", "--job-mode", "mpi")
    assert done.returncode == 0, done.stderr
    assert (job_dir(site, one) / "one.out").read_text() == "hello, one\n"
    assert state_of(backend_of, two.job_id) is S.PREPROCESSED
    assert backend_of.get_job(two.job_id).session_id is None
    notes = [e.message for e in backend_of.history(two.job_id)]
    assert any("waits:" in n and "no MPI launcher" in n for n in notes), notes


# ---- failures ------------------------------------------------------------------------------------


def test_failing_job_records_exit_code_and_output_tail(site: Site, backend_of: Backend) -> None:
    add_app(backend_of, "Shell", "/bin/sh")
    script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo out $i; done; echo boom >&2; exit 3"
    (job,) = add_jobs(backend_of, "Shell", {"name": "bad", "args": f"-c '{script}'"})
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    final = backend_of.get_job(job.job_id)
    assert final.state is S.FAILED
    assert final.return_code == 3
    error = entered(backend_of, job.job_id, S.RUN_ERROR).message
    assert "exit code 3" in error
    assert error.endswith("out 10\nout 11\nout 12\nboom")
    assert "out 2\n" not in error, "only the last error_tail_lines lines"


@pytest.mark.parametrize("mode", ["serial", "mpi"])
def test_missing_executable_is_a_run_error(site: Site, backend_of: Backend, mode: str) -> None:
    add_app(backend_of, "Ghost", "no-such-program-xyz --flag")
    (job,) = add_jobs(backend_of, "Ghost", {"name": "ghost"})
    done = launch("--consume-all", "--job-mode", mode)
    assert done.returncode == 0, done.stderr
    assert state_of(backend_of, job.job_id) is S.FAILED
    error = entered(backend_of, job.job_id, S.RUN_ERROR).message
    assert "No such file or directory" in error and "no-such-program-xyz" in error


def test_a_job_too_big_for_this_launcher_waits_with_a_note_and_does_not_block_consume_all(
    site: Site, backend_of: Backend
) -> None:
    """The machine's node size is not declared: a bigger node may come (another allocation),
    so the job waits, unclaimed, with the reason in its history."""
    add_app(backend_of, "SayHello", "echo hello,")
    (wide,) = add_jobs(backend_of, "SayHello", {"name": "wide", "ranks_per_node": 64})
    done = launch("--consume-all", "--job-mode", "serial", timeout=30)
    assert done.returncode == 0, done.stderr
    assert state_of(backend_of, wide.job_id) is S.PREPROCESSED
    last = backend_of.history(wide.job_id)[-1]
    assert last.to_state == "PREPROCESSED" and last.message.startswith("waits: needs more CPUs")


def test_a_job_bigger_than_the_sites_declared_nodes_fails(site: Site, backend_of: Backend) -> None:
    settings(site, platform={"cpus_per_node": 2})
    add_app(backend_of, "SayHello", "echo hello,")
    (wide,) = add_jobs(backend_of, "SayHello", {"name": "wide", "ranks_per_node": 64})
    done = launch("--consume-all", "--job-mode", "serial", timeout=30)
    assert done.returncode == 0, done.stderr
    assert state_of(backend_of, wide.job_id) is S.FAILED
    message = entered(backend_of, wide.job_id, S.FAILED).message
    assert message == "can never run: needs 64 CPUs per node; this machine's nodes have 2"


# ---- steps: staging, pre/postprocess ----------------------------------------------------------


def test_preprocess_and_postprocess_run_in_the_job_directory(
    site: Site, backend_of: Backend
) -> None:
    add_app(
        backend_of,
        "Steps",
        "cat pre.txt",
        preprocess="sh -c 'echo prepared for $BALSAM_JOB_ID > pre.txt'",
        postprocess="sh -c 'wc -l < steps.out > post.txt'",
    )
    (job,) = add_jobs(backend_of, "Steps", {"name": "steps"})
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    workdir = job_dir(site, job)
    assert (workdir / "steps.out").read_text() == f"prepared for {job.job_id}\n"
    assert (workdir / "post.txt").read_text().strip() == "1"
    path = [e.to_state for e in backend_of.history(job.job_id)]
    steps = ["STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE", "POSTPROCESSED", "JOB_FINISHED"]
    assert path[-6:] == steps
    assert (
        entered(backend_of, job.job_id, S.PREPROCESSED).timestamp
        < entered(backend_of, job.job_id, S.RUNNING).timestamp
    )


def test_staging_from_a_parent_a_url_and_out_to_a_directory(
    site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    """The child waits for its parent, gets its result file and a URL's file, stages out."""
    (tmp_path / "extra.txt").write_text("from a url\n")
    outbox = tmp_path / "outbox"
    add_app(backend_of, "Make", "sh -c 'echo 42 > result.txt; echo junk > junk.txt'")
    add_app(backend_of, "Use", "cat result.txt extra.txt")
    (parent,) = add_jobs(backend_of, "Make", {"name": "parent"})
    (child,) = add_jobs(
        backend_of,
        "Use",
        {
            "name": "child",
            "parents": [parent.job_id],
            "input_files": "result.txt",
            "stage_in_url": f"file://{tmp_path / 'extra.txt'}",
            "stage_out_files": "*.out",
            "stage_out_url": str(outbox),
        },
    )
    assert child.state is S.AWAITING_PARENTS
    done = launch("--consume-all", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    assert state_of(backend_of, child.job_id) is S.JOB_FINISHED
    workdir = job_dir(site, child)
    assert (workdir / "child.out").read_text() == "42\nfrom a url\n"
    assert not (workdir / "junk.txt").exists(), "only input_files are staged in"
    assert (outbox / "child.out").read_text() == "42\nfrom a url\n"
    assert "staged out 1 item(s)" in entered(backend_of, child.job_id, S.JOB_FINISHED).message


# ---- stopping: time limit, kill, signals, consume-all ----------------------------------------


def test_time_limit_stops_running_jobs_as_run_timeout(site: Site, backend_of: Backend) -> None:
    """SIGTERM at the limit, SIGKILL after the grace period for a job that ignores SIGTERM."""
    settings(site, launcher={"kill_grace_seconds": 1.0})
    add_app(backend_of, "Sleep", "sleep 60")
    add_app(backend_of, "Stubborn", "sh -c 'trap \"\" TERM; sleep 60'")
    jobs = add_jobs(
        backend_of,
        "Sleep",
        {"name": "sleeper", "wall_time_minutes": 0, "node_packing_count": 2},
        {
            "name": "stubborn",
            "application": "Stubborn",
            "wall_time_minutes": 0,
            "node_packing_count": 2,
        },
    )
    began = time.monotonic()
    done = launch("--consume-all", "--job-mode", "serial", "--time-limit-minutes", "0.05")
    elapsed = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert elapsed < 15
    for job in jobs:
        timeout = entered(backend_of, job.job_id, S.RUN_TIMEOUT)
        assert "time limit" in timeout.message
        assert gone(run_pid(backend_of, job.job_id))
        assert state_of(backend_of, job.job_id) is S.RESTART_READY
        assert backend_of.get_job(job.job_id).session_id is None


def test_jobs_longer_than_the_time_left_are_not_started(site: Site, backend_of: Backend) -> None:
    add_app(backend_of, "SayHello", "echo hello,")
    short, long = add_jobs(
        backend_of,
        "SayHello",
        {"name": "short", "wall_time_minutes": 0},
        {"name": "long", "wall_time_minutes": 30},
    )
    done = launch("--consume-all", "--job-mode", "serial", "--time-limit-minutes", "1")
    assert done.returncode == 0, done.stderr
    assert state_of(backend_of, short.job_id) is S.JOB_FINISHED
    assert state_of(backend_of, long.job_id) is S.PREPROCESSED
    assert backend_of.get_job(long.job_id).session_id is None


def test_balsam_kill_stops_a_running_job_within_seconds(site: Site, backend_of: Backend) -> None:
    add_app(backend_of, "Sleep", "sleep 60")
    (job,) = add_jobs(backend_of, "Sleep", {"name": "victim"})
    proc = start_launcher("--consume-all", "--job-mode", "serial")
    try:
        wait_for("RUNNING", lambda: state_of(backend_of, job.job_id) is S.RUNNING)
        pid = run_pid(backend_of, job.job_id)
        assert not gone(pid)
        killed = balsam("kill", "--id", job.job_id[:8])
        assert killed.returncode == 0, killed.stderr
        began = time.monotonic()
        wait_for("the job's process to end", lambda: gone(pid), timeout=10)
        assert time.monotonic() - began < 5
        assert proc.wait(timeout=30) == 0
    finally:
        stop(proc)
    final = backend_of.get_job(job.job_id)
    assert final.state is S.USER_KILLED
    assert final.session_id is None
    assert backend_of.history(job.job_id)[-1].to_state == S.USER_KILLED


def test_sigterm_to_the_launcher_times_out_its_jobs_and_closes_the_session(
    site: Site, backend_of: Backend
) -> None:
    settings(site, launcher={"kill_grace_seconds": 2.0})
    add_app(backend_of, "Sleep", "sleep 60")
    (job,) = add_jobs(backend_of, "Sleep", {"name": "sleeper", "max_timeout_retries": 0})
    proc = start_launcher("--wf-filter", "test", "--job-mode", "serial")
    try:
        wait_for("RUNNING", lambda: state_of(backend_of, job.job_id) is S.RUNNING)
        pid = run_pid(backend_of, job.job_id)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        stop(proc)
    assert gone(pid)
    assert "SIGTERM" in entered(backend_of, job.job_id, S.RUN_TIMEOUT).message
    final = backend_of.get_job(job.job_id)
    assert final.state is S.FAILED, "no timeout retries were allowed"
    assert final.session_id is None


def test_consume_all_leaves_other_workflows_alone(site: Site, backend_of: Backend) -> None:
    add_app(backend_of, "SayHello", "echo hello,")
    mine, other = add_jobs(
        backend_of,
        "SayHello",
        {"name": "mine", "workflow": "A"},
        {"name": "other", "workflow": "B"},
    )
    done = launch("--consume-all", "--wf-filter", "A", "--job-mode", "serial")
    assert done.returncode == 0, done.stderr
    assert state_of(backend_of, mine.job_id) is S.JOB_FINISHED
    assert state_of(backend_of, other.job_id) is S.PREPROCESSED


def test_consume_all_waits_for_children_whose_parents_run_elsewhere(
    site: Site, backend_of: Backend
) -> None:
    """A child AWAITING_PARENTS keeps its launcher alive until the parent finishes elsewhere."""
    add_app(backend_of, "SayHello", "echo hello,")
    (parent,) = add_jobs(backend_of, "SayHello", {"name": "parent", "workflow": "up"})
    (child,) = add_jobs(
        backend_of, "SayHello", {"name": "child", "workflow": "down", "parents": [parent.job_id]}
    )
    waiting = start_launcher("--consume-all", "--wf-filter", "down", "--job-mode", "serial")
    try:
        time.sleep(2.0)
        assert waiting.poll() is None, "the child's launcher must wait for the parent"
        assert state_of(backend_of, child.job_id) is S.AWAITING_PARENTS
        other = launch("--consume-all", "--wf-filter", "up", "--job-mode", "serial")
        assert other.returncode == 0, other.stderr
        assert waiting.wait(timeout=30) == 0
    finally:
        stop(waiting)
    assert state_of(backend_of, child.job_id) is S.JOB_FINISHED
    assert (job_dir(site, child) / "child.out").read_text() == "hello,\n"


def test_launcher_needs_a_job_filter(site: Site) -> None:
    done = launch("--job-mode", "serial")
    assert done.returncode != 0
    assert done.stderr.strip() == "balsam: error: give --consume-all, --wf-filter WF, or both"

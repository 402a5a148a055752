"""Every state has an owner: what one launcher leaves behind, another (or the same) finishes.

A launcher that runs out of time during a job's preprocess, postprocess or stage-out, or that
is killed during a stage-out, hands the job back in a state the next launcher resumes from;
a postprocess that handles an error or a timeout decides the job's next state through the API,
and the launcher carries on from it. No service runs in these tests: launchers alone drive
every job to an end state.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.schemas import ClaimRequest, StateUpdate
from launchkit import (
    S,
    add_app,
    add_jobs,
    entered,
    job_dir,
    launch,
    settings,
    start_launcher,
    state_of,
    stop,
    wait_for,
)

#: Sleeps the first time it runs in a job's directory, returns at once after that.
SLOW_ONCE = "sh -c 'test -e {marker} || {{ touch {marker}; exec sleep 60; }}'"
#: A postprocess that handles errors and timeouts by asking for a rerun, through Balsam's API
#: (after a good run it does nothing).
RERUN = (
    'python -c "from balsam.launcher import dag; job = dag.current_job; '
    "job.state in ('RUN_ERROR', 'RUN_TIMEOUT') and "
    "job.update_state('RESTART_READY', 'handler asks for a rerun')\""
)


def hops(backend: Backend, job_id: str) -> list[tuple[str, str]]:
    return [(e.from_state, e.to_state) for e in backend.history(job_id)]


def short_limit(site: Site) -> None:
    settings(site, launcher={"kill_grace_seconds": 1.0})


def run_out_of_time(*args: str) -> None:
    """A launcher with six seconds: it stops what runs after five and exits 0."""
    done = launch("--consume-all", "--job-mode", "serial", "--time-limit-minutes", "0.1", *args)
    assert done.returncode == 0, done.stderr


def run_to_the_end() -> None:
    done = launch("--consume-all", "--job-mode", "serial", timeout=60)
    assert done.returncode == 0, done.stderr


def test_time_limit_during_a_postprocess_then_a_second_launcher_finishes_it(
    site: Site, backend_of: Backend
) -> None:
    short_limit(site)
    add_app(backend_of, "Post", "true", postprocess=SLOW_ONCE.format(marker="post-started"))
    (job,) = add_jobs(backend_of, "Post", {"name": "p", "wall_time_minutes": 0})
    run_out_of_time()
    after = backend_of.get_job(job.job_id)
    assert (after.state, after.session_id) == (S.RUN_DONE, None)
    assert (job_dir(site, job) / "post-started").exists()
    run_to_the_end()
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    assert hops(backend_of, job.job_id)[-3:] == [
        ("RUNNING", "RUN_DONE"),
        ("RUN_DONE", "POSTPROCESSED"),
        ("POSTPROCESSED", "JOB_FINISHED"),
    ]
    assert hops(backend_of, job.job_id).count(("PREPROCESSED", "RUNNING")) == 1


def test_time_limit_during_a_preprocess_then_a_second_launcher_finishes_it(
    site: Site, backend_of: Backend
) -> None:
    short_limit(site)
    add_app(backend_of, "Pre", "true", preprocess=SLOW_ONCE.format(marker="pre-started"))
    (job,) = add_jobs(backend_of, "Pre", {"name": "p", "wall_time_minutes": 0})
    assert job.state is S.STAGED_IN
    run_out_of_time()
    after = backend_of.get_job(job.job_id)
    assert (after.state, after.session_id) == (S.STAGED_IN, None)
    run_to_the_end()
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    assert ("STAGED_IN", "PREPROCESSED") in hops(backend_of, job.job_id)


def test_time_limit_during_a_stage_out_hands_it_to_the_next_launcher(
    site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    """The copy runs in a helper thread: the launcher stops on time whatever it copies, and
    the job is finished by the next launcher (or by this one, if the copy won the race)."""
    short_limit(site)
    outbox = tmp_path / "outbox"
    files = 40000
    make = f"mkdir many && cd many && seq 1 {files} | xargs touch"
    add_app(backend_of, "Make", f"sh -c '{make}'")
    (job,) = add_jobs(
        backend_of,
        "Make",
        {
            "name": "m",
            "stage_out_files": "many",
            "stage_out_url": str(outbox),
            "wall_time_minutes": 0,
        },
    )
    started = time.monotonic()
    done = launch("--consume-all", "--job-mode", "serial", "--time-limit-minutes", "0.15")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert took < 15, f"the launcher waited for the copy ({took:.1f} s)"
    first = backend_of.get_job(job.job_id)
    assert first.session_id is None
    assert first.state in (S.POSTPROCESSED, S.JOB_FINISHED)
    run_to_the_end()
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    assert len(list((outbox / "many").iterdir())) == files


def test_a_launcher_killed_during_a_stage_out_leaves_it_to_the_next(
    site: Site, backend_of: Backend, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    files = 30000
    add_app(backend_of, "Make", f"sh -c 'mkdir many && cd many && seq 1 {files} | xargs touch'")
    (job,) = add_jobs(
        backend_of,
        "Make",
        {"name": "m", "stage_out_files": "many", "stage_out_url": str(outbox)},
    )
    first = start_launcher("--consume-all", "--job-mode", "serial", quiet=True)
    try:
        wait_for("the stage-out to start", lambda: (outbox / "many").is_dir(), timeout=180)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        stop(first)
    copied = len(list((outbox / "many").iterdir()))
    assert copied < files, "the stage-out ended before the kill: make it bigger"
    assert state_of(backend_of, job.job_id) is S.POSTPROCESSED
    # A launcher on the same host sees the first one's process gone and takes its jobs at once.
    run_to_the_end()
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    assert len(list((outbox / "many").iterdir())) == files
    assert "staged out 1 item(s)" in entered(backend_of, job.job_id, S.JOB_FINISHED).message


def test_an_error_handler_that_asks_for_a_rerun_gets_it_from_the_same_launcher(
    site: Site, backend_of: Backend
) -> None:
    # Fails the first time, succeeds the second.
    fails_once = "sh -c 'test -e failed-once || { touch failed-once; exit 3; }'"
    add_app(backend_of, "Flaky", fails_once, postprocess=RERUN)
    (job,) = add_jobs(backend_of, "Flaky", {"name": "f", "post_error_handler": True})
    run_to_the_end()
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    path = hops(backend_of, job.job_id)
    assert ("RUN_ERROR", "RESTART_READY") in path
    assert path.count(("RESTART_READY", "RUNNING")) == 1
    assert entered(backend_of, job.job_id, S.RESTART_READY).message == "handler asks for a rerun"
    assert ("RUN_DONE", "POSTPROCESSED") in path


def test_a_timeout_handler_job_is_handled_and_rerun_by_the_next_launcher(
    site: Site, backend_of: Backend
) -> None:
    short_limit(site)
    add_app(backend_of, "Slow", SLOW_ONCE.format(marker="ran-once"), postprocess=RERUN)
    (job,) = add_jobs(
        backend_of, "Slow", {"name": "s", "post_timeout_handler": True, "wall_time_minutes": 0}
    )
    run_out_of_time()
    after = backend_of.get_job(job.job_id)
    assert (after.state, after.session_id) == (S.RUN_TIMEOUT, None)
    run_to_the_end()
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    path = hops(backend_of, job.job_id)
    assert ("RUN_TIMEOUT", "RESTART_READY") in path
    assert path.count(("RESTART_READY", "RUNNING")) == 1


def test_consume_all_waits_for_nothing_it_cannot_take_on(site: Site, backend_of: Backend) -> None:
    """A launcher exits only when no job in any state needs it: a job parked in a
    processing state is work, so the launcher takes it instead of exiting."""
    add_app(backend_of, "Post", "true", postprocess="true")
    (job,) = add_jobs(backend_of, "Post", {"name": "p", "wall_time_minutes": 0})
    session = backend_of.open_session("gone", "elsewhere", 1)
    backend_of.claim_jobs(session.id, ClaimRequest(job_ids=[job.job_id]))
    backend_of.record_updates(
        session.id,
        [
            StateUpdate(job_id=job.job_id, state=S.RUNNING),
            StateUpdate(job_id=job.job_id, state=S.RUN_DONE),
        ],
    )
    backend_of.close_session(session.id)
    assert state_of(backend_of, job.job_id) is S.RUN_DONE
    run_to_the_end()
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED

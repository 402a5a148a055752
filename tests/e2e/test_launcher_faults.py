"""Launchers that die, hang or lose their database: no job is lost, none runs twice at once.

Jobs run ``guarded.sh``: it takes an exclusive ``flock`` on a per-job lock file for as long as
the run (and anything it started) lives, so a second run of the same job while the first still
runs finds the lock taken and writes ``DOUBLE`` to a violations file. Tests read what users
would: states, histories, output files, and which processes still run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from balsam.backends.base import Backend
from balsam.backends.factory import init_site, open_backend
from balsam.config import Site
from balsam.domain.states import JobState
from balsam.schemas.jobs import JobOut
from launchkit import (
    S,
    add_app,
    add_jobs,
    all_jobs,
    entered,
    gone,
    launch,
    run_pid,
    settings,
    start_launcher,
    state_of,
    stop,
    wait_for,
)
from pgserver import PgServer, start_owned_server

GUARDED = """\
#!/bin/bash
# guarded.sh SECONDS [first-only]: sleep SECONDS holding this job's lock; with first-only,
# later attempts of the job return at once.
exec 9>>"$LOCKS/$BALSAM_JOB_ID.lock"
if ! flock -n 9; then echo "DOUBLE $BALSAM_JOB_ID" >> "$LOCKS/violations"; exit 3; fi
echo "start $$" >> "$LOCKS/$BALSAM_JOB_ID.runs"
if [ "$2" = first-only ] && [ -e "$LOCKS/$BALSAM_JOB_ID.first" ]; then
    echo "end $$" >> "$LOCKS/$BALSAM_JOB_ID.runs"; exit 0
fi
touch "$LOCKS/$BALSAM_JOB_ID.first"
sleep "$1"
echo "end $$" >> "$LOCKS/$BALSAM_JOB_ID.runs"
"""


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory of run locks and traces; launchers pass ``LOCKS`` on to jobs."""
    path = tmp_path / "locks"
    path.mkdir()
    monkeypatch.setenv("LOCKS", str(path))
    return path


def guarded_app(be: Backend, locks: Path, name: str = "Guarded") -> None:
    """Register ``guarded.sh`` as an app."""
    script = locks.parent / "guarded.sh"
    script.write_text(GUARDED)
    script.chmod(0o755)
    add_app(be, name, str(script))


def violations(locks: Path) -> str:
    """What guarded runs reported (empty when no job ever ran twice at once)."""
    path = locks / "violations"
    return path.read_text() if path.exists() else ""


def runs(locks: Path, job_id: str) -> list[str]:
    """The start/end lines of every run of a job."""
    path = locks / f"{job_id}.runs"
    return path.read_text().splitlines() if path.exists() else []


def job_processes(site: Site) -> list[int]:
    """Pids of processes of this site's jobs still running."""
    needle = f"BALSAM_DB_PATH={site.path}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        is_job = needle in env and any(v.startswith(b"BALSAM_JOB_ID=") for v in env)
        if is_job and not gone(int(entry.name)):
            found.append(int(entry.name))
    return found


@contextmanager
def first_attempt_running(
    be: Backend, locks: Path, name: str
) -> Iterator[tuple[subprocess.Popen[str], JobOut, int]]:
    """A launcher running one guarded job whose first attempt sleeps a minute.

    Yields the launcher, the job and the pid of its run; the launcher is gone afterwards.
    """
    guarded_app(be, locks)
    (job,) = add_jobs(be, "Guarded", {"name": name, "args": "60 first-only"})
    proc = start_launcher("--consume-all", "--job-mode", "serial")
    try:
        wait_for("the job to run", lambda: state_of(be, job.job_id) is S.RUNNING)
        yield proc, job, run_pid(be, job.job_id)
    finally:
        stop(proc)  # SIGKILL: it also ends a launcher left stopped with SIGSTOP


# ---- a launcher killed with SIGKILL -----------------------------------------------------------


def test_a_sigkilled_launcher_takes_its_jobs_down_and_a_peer_recovers_them_at_once(
    site: Site, backend_of: Backend, locks: Path
) -> None:
    with first_attempt_running(backend_of, locks, "victim") as (first, job, pid):
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        # Its worker, cut off, kills the run with it: nothing runs on unaccounted.
        wait_for("the orphaned run to be killed", lambda: gone(pid), timeout=10)
        assert state_of(backend_of, job.job_id) is S.RUNNING  # nobody has looked yet
        started = time.monotonic()
        # Well within the 60 s lease: a launcher on the same host sees the pid is gone.
        done = launch("--consume-all", "--job-mode", "serial", timeout=40)
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 30
    after = backend_of.get_job(job.job_id)
    assert after.state is S.JOB_FINISHED and after.lost_count == 1
    assert entered(backend_of, job.job_id, S.RESTART_READY).message == (
        "launcher lost (its process is gone)"
    )
    assert "attempt 2" in entered(backend_of, job.job_id, S.RUNNING).message
    assert violations(locks) == ""
    assert job_processes(site) == []


def test_a_hung_launcher_loses_its_lease_and_its_job_runs_once_elsewhere(
    site: Site, backend_of: Backend, locks: Path
) -> None:
    """SIGSTOP: the process lives but renews nothing; its lease expires, a peer takes over."""
    settings(site, launcher={"lease_seconds": 3.0, "heartbeat_seconds": 1.0})
    with first_attempt_running(backend_of, locks, "hung") as (frozen, job, first_run):
        frozen.send_signal(signal.SIGSTOP)
        # A --consume-all launcher does not wait for jobs others hold: start the peer once
        # the lease (3 s) has run out.
        time.sleep(3.5)
        done = launch("--consume-all", "--job-mode", "serial", timeout=40)
        assert done.returncode == 0, done.stderr
        # The peer killed the hung launcher's run on this host before running the job again.
        assert gone(first_run)
        assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
        frozen.send_signal(signal.SIGCONT)
        # It wakes up, finds its lease gone, carries on in a new session, finds nothing to do.
        _, err = frozen.communicate(timeout=30)
        assert frozen.returncode == 0, err
    after = backend_of.get_job(job.job_id)
    assert after.lost_count == 1
    assert "lease expired" in entered(backend_of, job.job_id, S.RESTART_READY).message
    assert violations(locks) == ""
    logs = "".join(p.read_text() for p in (site.path / "log").glob("launcher_*.log"))
    assert "carrying on in new session" in logs


# ---- the database goes away ----------------------------------------------------------------------


@pytest.fixture
def own_pg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PgServer, Site]]:
    """A PostgreSQL server of the test's own (to crash and restart) and a site on it."""
    server = start_owned_server()
    try:
        admin = create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE wf"))
        admin.dispose()
        site = init_site(tmp_path / "wf", kind="url", url=server.url("wf"))
        monkeypatch.setenv("BALSAM_DB_PATH", str(site.path))
        yield server, site
    finally:
        server.stop()


def test_postgres_restarting_under_two_launchers_loses_nothing(
    own_pg: tuple[PgServer, Site], locks: Path
) -> None:
    server, site = own_pg
    be = open_backend(site)
    try:
        guarded_app(be, locks)
        jobs = add_jobs(
            be, "Guarded", *({"name": f"j{i}", "args": "0.3", "node_packing_count": 2}
                             for i in range(40))
        )  # fmt: skip
        launchers = [start_launcher("--consume-all", "--job-mode", "serial") for _ in range(2)]
        try:
            wait_for("some jobs to finish", lambda: _finished(be) >= 5, timeout=60)
            server.shut_down()
            time.sleep(3)
            server.start()
            for proc in launchers:
                _, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err
        finally:
            for proc in launchers:
                stop(proc)
        assert {state_of(be, j.job_id) for j in jobs} == {S.JOB_FINISHED}
        for j in jobs:
            assert [e.to_state for e in be.history(j.job_id)].count(S.JOB_FINISHED) == 1
            # No lease expired: every job ran exactly once.
            assert [r.split()[0] for r in runs(locks, j.job_id)] == ["start", "end"]
            assert be.get_job(j.job_id).lost_count == 0
        assert violations(locks) == ""
    finally:
        be.close()


def _finished(be: Backend) -> int:
    return sum(1 for j in all_jobs(be) if j.state is JobState.JOB_FINISHED)


def test_a_launcher_cut_off_from_its_database_stops_its_jobs_before_its_lease_ends(
    own_pg: tuple[PgServer, Site], locks: Path
) -> None:
    """It fences itself (stops its runs), then, the database back, runs the job again."""
    server, site = own_pg
    settings(site, launcher={"lease_seconds": 6.0, "heartbeat_seconds": 1.0})
    be = open_backend(site)
    try:
        with first_attempt_running(be, locks, "cut") as (proc, job, first_run):
            server.shut_down()
            # Fencing after lease - 2 x heartbeat = 4 s without a renewal.
            wait_for("the launcher to stop its run", lambda: gone(first_run), timeout=20)
            server.start()
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        after = be.get_job(job.job_id)
        assert after.state is S.JOB_FINISHED and after.lost_count == 1
        message = entered(be, job.job_id, S.RESTART_READY).message
        assert message.startswith("stopped: the workflow database was unreachable for")
        assert len([r for r in runs(locks, job.job_id) if r.startswith("start")]) == 2
        assert violations(locks) == ""
    finally:
        be.close()


# ---- launchers killed at random moments ---------------------------------------------------


def test_launchers_killed_at_random_moments_end_every_job_exactly_once(
    site: Site, backend_of: Backend, locks: Path
) -> None:
    rng = random.Random(int(os.environ.get("BALSAM_CHAOS_SEED", "20261201")))
    guarded_app(backend_of, locks)
    many = {"max_lost_retries": 50}
    specs = ({"name": f"c{i}", "args": "0.4", "node_packing_count": 2, **many} for i in range(40))
    jobs = add_jobs(backend_of, "Guarded", *specs)
    everyone: list[subprocess.Popen[str]] = []

    def another() -> subprocess.Popen[str]:
        everyone.append(start_launcher("--consume-all", "--job-mode", "serial", quiet=True))
        return everyone[-1]

    running = [another(), another()]
    kills = 0
    try:
        while kills < 8 and _finished(backend_of) < len(jobs):
            time.sleep(rng.uniform(0.2, 1.5))
            alive = [p for p in running if p.poll() is None]
            if alive:
                victim = rng.choice(alive)
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=10)
                kills += 1
            running = [p for p in running if p.poll() is None] + [another()]
        another()
        for proc in everyone:
            proc.wait(timeout=120)
    finally:
        for proc in everyone:
            stop(proc)
    assert kills >= 1
    assert violations(locks) == ""
    for j in jobs:
        events = backend_of.history(j.job_id)
        states = [e.to_state for e in events]
        history = "; ".join(f"{e.from_state}->{e.to_state} {e.message}" for e in events)
        assert states.count(S.JOB_FINISHED) == 1, history
        assert state_of(backend_of, j.job_id) is S.JOB_FINISHED
        # Every rerun was a run lost with its launcher: none failed, none timed out.
        assert backend_of.get_job(j.job_id).lost_count == states.count(S.RESTART_READY), history
    assert job_processes(site) == []

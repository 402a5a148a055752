"""Launcher throughput against a plain Popen loop, in the same run.

Workloads (each on one node of ``--slots`` CPUs, ``node_packing_count = slots``, serial mode):

* ``true``:  N x ``/bin/true`` (default 10,000). Figure: jobs per second, with every state
  change committed, against a Popen loop that runs the same commands with the same slots
  (a working directory and an output file per run, its own session, reaped as they exit),
  run before and after the launcher: the mean is the baseline, and both are printed.
* ``sleep``: N x ``sleep 1`` on 2 slots (default 200). Figure: makespan against the ideal
  N / slots seconds.

Prints one line per run. Run from the repository root with the venv active:

    python bench/launcher_throughput.py true --jobs 10000 --slots 2
    python bench/launcher_throughput.py sleep --jobs 200 --slots 2
    python bench/launcher_throughput.py true --db postgresql://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import fresh_pg_database

from balsam.backends.factory import init_site, open_backend
from balsam.config import Site, save_settings
from balsam.domain.states import JobState
from balsam.schemas import AppCreate, JobCreate, JobQuery
from balsam.schemas.queries import clause_from_kwargs

WORKLOADS = {"true": ["/bin/true"], "sleep": ["sleep", "1"]}
CREATE_CHUNK = 5_000


def popen_loop(argv: list[str], jobs: int, slots: int, root: Path) -> float:
    """Seconds to run ``jobs`` x ``argv`` with at most ``slots`` at once (the baseline)."""
    running: dict[int, subprocess.Popen[bytes]] = {}
    started = 0
    t0 = time.perf_counter()
    while started < jobs or running:
        while started < jobs and len(running) < slots:
            workdir = root / f"j{started}"
            workdir.mkdir(parents=True)
            with (workdir / "out").open("wb") as out:
                proc = subprocess.Popen(
                    argv,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            running[proc.pid] = proc
            started += 1
        pid, status = os.wait()
        proc = running.pop(pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0


def make_site(root: Path, db: str, slots: int) -> Site:
    """A workflow database with one node of ``slots`` CPUs."""
    site = init_site(root / "wf") if db == "sqlite" else init_site(root / "wf", kind="url", url=db)
    site.settings.platform.cpus_per_node = slots
    save_settings(site.path, site.settings)
    return site


def add_jobs(site: Site, argv: list[str], jobs: int, slots: int) -> None:
    """Register the app and add ``jobs`` jobs, packed ``slots`` per node."""
    backend = open_backend(site)
    try:
        backend.create_app(AppCreate(name="W", executable=" ".join(argv)))
        for start in range(0, jobs, CREATE_CHUNK):
            specs = [
                JobCreate(name=f"j{i}", workflow="bench", application="W", node_packing_count=slots)
                for i in range(start, min(jobs, start + CREATE_CHUNK))
            ]
            backend.create_jobs(specs)
    finally:
        backend.close()


def run_launcher(site: Site) -> tuple[float, int]:
    """Seconds for ``balsam launcher --consume-all`` to finish everything; its exit code."""
    env = {**os.environ, "BALSAM_DB_PATH": str(site.path)}
    balsam = Path(sys.executable).parent / "balsam"
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(balsam), "launcher", "--consume-all", "--job-mode", "serial"],
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - t0, done.returncode


def count_finished(site: Site) -> int:
    """Jobs that reached JOB_FINISHED."""
    backend = open_backend(site)
    try:
        clause = clause_from_kwargs({"state": JobState.JOB_FINISHED.value})
        return backend.count_jobs(JobQuery(clauses=[clause]))
    finally:
        backend.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--jobs", type=int, default=None, help="10000 for true, 200 for sleep")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    args = parser.parse_args()
    argv = WORKLOADS[args.workload]
    jobs = args.jobs or (10_000 if args.workload == "true" else 200)
    root = Path(tempfile.mkdtemp(prefix="balsam-bench-"))
    try:
        # The baseline runs before and after the launcher: a noisy machine shows as a spread.
        before = popen_loop(argv, jobs, args.slots, root / "popen1")
        db = args.db if args.db == "sqlite" else fresh_pg_database(args.db)
        site = make_site(root, db, args.slots)
        add_jobs(site, argv, jobs, args.slots)
        took, code = run_launcher(site)
        finished = count_finished(site)
        after = popen_loop(argv, jobs, args.slots, root / "popen2")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = (before + after) / 2
    kind = "sqlite" if args.db == "sqlite" else "postgresql"
    ideal = jobs / args.slots * (1.0 if args.workload == "sleep" else 0.0)
    print(f"workload={args.workload} jobs={jobs} slots={args.slots} db={kind}")
    spread = f"(before {jobs / before:.0f}/s, after {jobs / after:.0f}/s)"
    print(f"  popen loop : {base:8.2f} s  {jobs / base:8.1f} jobs/s  {spread}")
    rate = jobs / took
    print(f"  launcher   : {took:8.2f} s  {rate:8.1f} jobs/s  exit={code} finished={finished}")
    print(f"  ratio      : {base / took:8.1%} of the Popen loop's rate")
    if ideal:
        print(f"  makespan   : {took:8.2f} s against the ideal {ideal:.0f} s")
    return 0 if code == 0 and finished == jobs else 1


if __name__ == "__main__":
    sys.exit(main())

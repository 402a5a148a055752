"""Launcher throughput against a plain Popen loop, in the same run.

Workloads (each on one node of ``--slots`` CPUs, ``node_packing_count = slots``, serial mode):

* ``true``:  N x ``/bin/true`` (default 10,000). Figure: jobs per second, with every state
  change committed, against two Popen loops that run the same commands with the same slots,
  run before and after each launcher run (their mean is that run's baseline): the *bare* loop
  (fork, exec, reap: nothing else) and the *full* loop (also a working directory and an output
  file per run, and a session of its own, as any runner needs).
* ``sleep``: N x ``sleep 1`` on 2 slots (default 200). Figure: makespan against the ideal
  N / slots seconds.

Loops and launcher runs alternate (``--rounds``, 3 for ``true``): each launcher run is compared
with the loops just before and after it, and the median ratio is printed. Run from the
repository root with the venv active:

    python bench/launcher_throughput.py true --jobs 10000 --slots 2
    python bench/launcher_throughput.py sleep --jobs 200 --slots 2
    python bench/launcher_throughput.py true --db postgresql://postgres@127.0.0.1:5432/bench
    git worktree add /tmp/before HEAD~1
    python bench/launcher_throughput.py true --compare-src /tmp/before/src
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import fresh_pg_database

from balsam.backends.factory import init_site, open_backend
from balsam.config import Site, load_site, save_settings
from balsam.schemas import AppCreate, JobCreate

WORKLOADS = {"true": ["/bin/true"], "sleep": ["sleep", "1"]}
CREATE_CHUNK = 5_000


def bare_loop(argv: list[str], jobs: int, slots: int) -> float:
    """Seconds to run ``jobs`` x ``argv``, ``slots`` at once: fork, exec, reap, nothing else."""
    running: dict[int, subprocess.Popen[bytes]] = {}
    started = 0
    t0 = time.perf_counter()
    while started < jobs or running:
        while started < jobs and len(running) < slots:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            running[proc.pid] = proc
            started += 1
        pid, status = os.wait()
        running.pop(pid).returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0


def popen_loop(argv: list[str], jobs: int, slots: int, root: Path) -> float:
    """Seconds to run ``jobs`` x ``argv`` with at most ``slots`` at once (the baseline).

    Its CPU (this process's and its children's) is added to :data:`LOOP_CPU`.
    """
    own, kids = _rusage()
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
    took = time.perf_counter() - t0
    own_after, kids_after = _rusage()
    LOOP_CPU["loop process"] += own_after - own
    LOOP_CPU["its children"] += kids_after - kids
    LOOP_CPU["runs"] += jobs
    return took


#: CPU seconds of every Popen loop of this invocation, and how many runs they made.
LOOP_CPU: dict[str, float] = {"loop process": 0.0, "its children": 0.0, "runs": 0.0}


def _rusage() -> tuple[float, float]:
    """CPU seconds of this process and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


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


def run_launcher(
    site: Site, src: Path | None = None, cpu: CpuSplit | None = None
) -> tuple[float, int]:
    """Seconds for ``balsam launcher --consume-all`` to finish everything; its exit code.

    ``src``: run the launcher of that source tree (``.../src``) instead of the installed one.
    ``cpu``: sample where the launcher's CPU goes while it runs.
    """
    env = {**os.environ, "BALSAM_DB_PATH": str(site.path)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    balsam = Path(sys.executable).parent / "balsam"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(balsam), "launcher", "--consume-all", "--job-mode", "serial"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if cpu is None:
        code = proc.wait()
    else:
        while proc.poll() is None:
            cpu.sample(proc.pid)
            time.sleep(0.1)
        code = proc.returncode
    return time.perf_counter() - t0, code


class CpuSplit:
    """CPU seconds of the launcher's threads, its worker and the worker's children (the jobs),
    read from /proc while the launcher runs; the last reading of each is kept."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def sample(self, pid: int) -> None:
        """Read the launcher ``pid``'s threads and its worker's counters."""
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
                name = "launcher main thread" if tid == str(pid) else "launcher other threads"
                self.seconds[name] = (fields[11] + fields[12]) / self.TICK
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except (OSError, IndexError):
            return
        for child in children[:1]:
            try:
                fields = _stat_fields(f"/proc/{child}/stat")
            except (OSError, IndexError):
                continue
            self.seconds["worker"] = (fields[11] + fields[12]) / self.TICK
            self.seconds["jobs (the worker's children)"] = (fields[13] + fields[14]) / self.TICK


def _stat_fields(path: str) -> list[int]:
    """utime, stime, cutime, cstime ... of a /proc stat file, from field 3 on, as integers."""
    rest = Path(path).read_text().rsplit(")", 1)[1].split()
    return [int(x) if x.lstrip("-").isdigit() else 0 for x in rest]


def count_finished(site: Site, src: Path | None = None) -> int:
    """Jobs that reached JOB_FINISHED (read by the tree that made the database)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    code = (
        "import sys; from balsam.backends.factory import open_backend; "
        "from balsam.config import load_site; from balsam.schemas import JobQuery; "
        "from balsam.schemas.queries import clause_from_kwargs; "
        "b = open_backend(load_site(sys.argv[1])); "
        "print(b.count_jobs(JobQuery(clauses=[clause_from_kwargs({'state': 'JOB_FINISHED'})])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(site.path)], env=env, capture_output=True, text=True
    )
    return int(out.stdout.strip() or 0)


@dataclass
class Round:
    """What one launcher run did."""

    label: str
    seconds: float
    exit_code: int
    finished: int
    cpu: CpuSplit | None = None


@dataclass
class Variant:
    """A launcher to measure: this tree's (``src`` None) or another source tree's."""

    label: str
    src: Path | None


def launcher_round(
    root: Path, db_arg: str, argv: list[str], jobs: int, slots: int, variant: Variant, cpu: bool
) -> Round:
    """One launcher run on a fresh database: its seconds, exit code and finished jobs.

    The database is made and filled by the variant's own tree (its migrations, its API), in a
    process of its own, so that each launcher meets the schema it was written for.
    """
    db = db_arg if db_arg == "sqlite" else fresh_pg_database(db_arg)
    env = dict(os.environ)
    if variant.src is not None:
        env["PYTHONPATH"] = str(variant.src)
    prepare = [sys.executable, __file__, "_prepare", " ".join(argv), "--jobs", str(jobs)]
    prepare += ["--slots", str(slots), "--db", db, "--root", str(root)]
    subprocess.run(prepare, env=env, check=True)
    site = load_site(root / "wf")
    split = CpuSplit() if cpu else None
    took, code = run_launcher(site, variant.src, split)
    return Round(variant.label, took, code, count_finished(site, variant.src), split)


def prepare_only(args: argparse.Namespace) -> int:
    """The ``_prepare`` step: make the site and add the jobs (run by the variant's tree)."""
    site = make_site(args.root, args.db, args.slots)
    add_jobs(site, args.workload.split(), args.jobs, args.slots)
    return 0


def main() -> int:
    if sys.argv[1:2] == ["_prepare"]:
        prep = argparse.ArgumentParser()
        prep.add_argument("step")
        prep.add_argument("workload")
        for name in ("--jobs", "--slots"):
            prep.add_argument(name, type=int, required=True)
        prep.add_argument("--db", required=True)
        prep.add_argument("--root", type=Path, required=True)
        return prepare_only(prep.parse_args())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--jobs", type=int, default=None, help="10000 for true, 200 for sleep")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument(
        "--rounds", type=int, default=None, help="launcher runs, each between two loops (3, 1)"
    )
    parser.add_argument(
        "--compare-src",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run the launcher of source tree DIR (e.g. a git worktree's src) each round",
    )
    parser.add_argument(
        "--cpu-split",
        action="store_true",
        help="print the CPU per job of the launcher, its worker and the jobs (from /proc)",
    )
    args = parser.parse_args()
    variants = [Variant("this tree", None)]
    if args.compare_src is not None:
        variants.append(Variant(str(args.compare_src), args.compare_src.resolve()))
    argv = WORKLOADS[args.workload]
    jobs = args.jobs or (10_000 if args.workload == "true" else 200)
    rounds = args.rounds or (3 if args.workload == "true" else 1)
    root = Path(tempfile.mkdtemp(prefix="balsam-bench-"))
    kind = "sqlite" if args.db == "sqlite" else "postgresql"
    print(f"workload={args.workload} jobs={jobs} slots={args.slots} db={kind} rounds={rounds}")
    ok = True
    ratios: dict[str, list[float]] = {v.label: [] for v in variants}
    bare_ratios: dict[str, list[float]] = {v.label: [] for v in variants}
    try:
        # Loops and launcher runs alternate: each run is compared with the loops either side
        # of it, so a machine that gets busier or quieter shows as a spread, not a bias. With
        # two launchers their order flips every round.
        loops = [popen_loop(argv, jobs, args.slots, root / "popen0")]
        bares = [bare_loop(argv, jobs, args.slots)]
        for n in range(1, rounds + 1):
            order = variants if n % 2 else variants[::-1]
            runs = [
                launcher_round(
                    root / f"round{n}-{i}", args.db, argv, jobs, args.slots, variant, args.cpu_split
                )
                for i, variant in enumerate(order)
            ]
            loops.append(popen_loop(argv, jobs, args.slots, root / f"popen{n}"))
            bares.append(bare_loop(argv, jobs, args.slots))
            base = (loops[-2] + loops[-1]) / 2
            bare = (bares[-2] + bares[-1]) / 2
            print(f"  round {n}")
            report_loops(jobs, bares[-2:], "bare loop ")
            report_loops(jobs, loops[-2:], "full loop ")
            for run in runs:
                ratios[run.label].append(base / run.seconds)
                bare_ratios[run.label].append(bare / run.seconds)
                ok = ok and run.exit_code == 0 and run.finished == jobs
                report_run(jobs, base, run, args.workload == "sleep", args.slots)
                print(f"    ratio      : {bare / run.seconds:8.1%} of the bare loop's rate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.cpu_split and LOOP_CPU["runs"]:
        loop_runs = LOOP_CPU["runs"]
        for name in ("loop process", "its children"):
            print(f"  popen loop cpu : {LOOP_CPU[name] / loop_runs * 1e3:8.3f} ms/job  {name}")
    if rounds > 1:
        for which, table in (("full loop", ratios), ("bare loop", bare_ratios)):
            for label, values in table.items():
                print(
                    f"  median ratio to the {which} ({label}): {statistics.median(values):6.1%} "
                    f"(min {min(values):.1%}, max {max(values):.1%})"
                )
    return 0 if ok else 1


def report_loops(jobs: int, loops: list[float], label: str) -> None:
    """Print a round's baseline: the loops either side of its launcher runs."""
    base = sum(loops) / 2
    spread = f"(before {jobs / loops[0]:.0f}/s, after {jobs / loops[1]:.0f}/s)"
    print(f"    {label} : {base:8.2f} s  {jobs / base:8.1f} jobs/s  {spread}")


def report_run(jobs: int, base: float, run: Round, sleep: bool, slots: int) -> None:
    """Print one launcher run, its ratio to the round's baseline (and its makespan)."""
    rate = jobs / run.seconds
    print(
        f"    launcher   : {run.seconds:8.2f} s  {rate:8.1f} jobs/s  "
        f"exit={run.exit_code} finished={run.finished}  [{run.label}]"
    )
    print(f"    ratio      : {base / run.seconds:8.1%} of the full loop's rate")
    if run.cpu is not None:
        for name, seconds in run.cpu.seconds.items():
            print(f"    cpu        : {seconds / jobs * 1e3:8.3f} ms/job  {name}")
    if sleep:
        print(f"    makespan   : {run.seconds:8.2f} s against the ideal {jobs / slots:.0f} s")


if __name__ == "__main__":
    sys.exit(main())

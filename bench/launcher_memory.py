"""Launcher memory against database size: RSS must not grow with the jobs in the database.

Fills a workflow database with N runnable ``/bin/true`` jobs (plus as many finished ones, as a
real campaign has), runs ``balsam launcher --job-mode serial`` on it for a fixed time, and
samples the resident set size of the launcher and of its local worker every 0.2 s, then stops
it with SIGTERM. Each size
is a fresh database in the same run, so the smallest is the baseline.

    python bench/launcher_memory.py --sizes 1000,100000 --seconds 20
    python bench/launcher_memory.py --compare-src /tmp/before/src

With ``--compare-src``, each size is measured for this tree and for that one, alternately, each
in a fresh process on a fresh database built by its own migrations.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchlib import CHUNK, job_row
from sqlalchemy import insert

from balsam.backends.factory import init_site, open_backend
from balsam.backends.local import LocalBackend
from balsam.config import Site, save_settings
from balsam.schemas import AppCreate, JobQuery
from balsam.schemas.queries import clause_from_kwargs
from balsam.store.tables import JobRow

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def make_site(root: Path, size: int) -> Site:
    """A workflow database of ``size`` runnable and ``size`` finished jobs of ``/bin/true``."""
    site = init_site(root / f"wf{size}")
    site.settings.platform.cpus_per_node = 2
    save_settings(site.path, site.settings)
    opened = open_backend(site)
    # The engine underneath (this tree wraps it in the retrying Backend).
    backend = getattr(opened, "inner", opened)
    assert isinstance(backend, LocalBackend)
    backend.create_app(AppCreate(name="T", executable="/bin/true"))
    with backend.engine.begin() as conn:
        now = datetime.now(UTC)
        for start in range(0, size, CHUNK):
            rows = min(CHUNK, size - start)
            conn.execute(insert(JobRow), [job_row("PREPROCESSED", now) for _ in range(rows)])
            conn.execute(insert(JobRow), [job_row("JOB_FINISHED", now) for _ in range(rows)])
    backend.close()
    return site


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def worker_of(pid: int) -> int | None:
    """The local worker's pid: the child of ``pid`` running balsam.launcher.worker."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"balsam.launcher.worker" in cmd:
            return int(entry.name)
    return None


def measure(site: Site, seconds: float) -> tuple[int, int]:
    """Peak RSS (KiB) of the launcher and its worker over ``seconds`` of running."""
    env = {**os.environ, "BALSAM_DB_PATH": str(site.path)}
    balsam = Path(sys.executable).parent / "balsam"
    argv = [str(balsam), "launcher", "--wf-filter", "bench", "--job-mode", "serial"]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_launcher = peak_worker = 0
    worker: int | None = None
    stop_at = time.monotonic() + seconds
    while proc.poll() is None:
        if time.monotonic() > stop_at:
            proc.send_signal(signal.SIGTERM)
            stop_at = float("inf")
        peak_launcher = max(peak_launcher, rss_kb(proc.pid))
        worker = worker or worker_of(proc.pid)
        if worker:
            peak_worker = max(peak_worker, rss_kb(worker))
        time.sleep(0.2)
    return peak_launcher, peak_worker


def finished(site: Site) -> int:
    """Jobs in JOB_FINISHED."""
    backend = open_backend(site)
    try:
        clause = clause_from_kwargs({"state": "JOB_FINISHED"})
        return backend.count_jobs(JobQuery(clauses=[clause]))
    finally:
        backend.close()


def measure_size(root: Path, size: int, seconds: float) -> list[float]:
    """[launcher MB, worker MB, jobs run] for one size, on a fresh database."""
    site = make_site(root, size)
    launcher, worker = measure(site, seconds)
    ran = finished(site) - size
    shutil.rmtree(site.path, ignore_errors=True)
    return [launcher / 1024, worker / 1024, ran]


def in_process(src: Path | None, root: Path, size: int, seconds: float) -> list[float]:
    """One size measured in a fresh process (``src``: another source tree)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, __file__, "--one", str(size), "--seconds", str(seconds)]
    cmd += ["--root", str(root)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--compare-src", type=Path, default=None, metavar="DIR")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_size(args.root, args.one, args.seconds)))
        return 0
    root = Path(tempfile.mkdtemp(prefix="balsam-membench-"))
    print(f"serial mode, 2 slots, {args.seconds:g} s of /bin/true per size")
    header = f"{'runnable jobs':>14} {'total rows':>11} {'launcher MB':>12} {'worker MB':>10}"
    print(f"{header} {'jobs run':>9}")
    variants: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.compare_src is not None:
        variants.append((str(args.compare_src), args.compare_src.resolve()))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            for label, src in variants:
                launcher, worker, ran = in_process(src, root, size, args.seconds)
                row = f"{size:>14,} {2 * size:>11,} {launcher:>12.1f} {worker:>10.1f}"
                print(f"{row} {ran:>9,.0f}  [{label}]", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

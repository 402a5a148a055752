"""The edge service under load, against the same database opened locally, in the same run.

Issue 12's load figures. Every part runs twice, on two fresh sites of the same kind (SQLite,
or PostgreSQL with ``--db URL``): once with each client holding a LocalBackend on the
database, once with each client holding a RemoteBackend on a real ``balsam server start``
(uvicorn on loopback) serving the other site. Clients are separate processes (not threads),
started together at a barrier, so they queue on the server and the database, not on one GIL:

* ``bulk``: ``--bulk-clients`` clients each ``bulk_create_jobs`` ``--bulk-jobs`` jobs in calls
  of ``--chunk``; jobs/s over all of them.
* ``claims``: for each N of ``--clients``, N clients each open a launcher session and claim one
  job (then report it RUNNING) ``--claims`` times; claim latency p50 / p99 over all claims.
* ``launcher``: ``--launcher-jobs`` x ``/bin/true`` run by one ``balsam launcher --consume-all``
  (serial mode, one node of ``--slots`` slots), its database local or through the server;
  jobs/s and the ratio server/local.

The server, its database and the clients share this machine's cores. From the repository
root, venv with the ``server`` extra active:

    python bench/server_load.py --clients 1,10,50
    python bench/server_load.py --clients 1,10,50 --db postgresql://postgres@127.0.0.1:PORT/bench
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchlib import fresh_pg_database

from balsam.backends.base import Backend

#: Makes a client's Backend inside its own process: (kind, where) -> Backend.
Target = tuple[str, str, str]  # ("local", site path, "") or ("server", url, token)


def _open(target: Target) -> Backend:
    kind, where, token = target
    if kind == "local":
        from balsam.backends.factory import open_local_backend
        from balsam.config import load_site

        return open_local_backend(load_site(where), retry=False)
    from balsam.backends.remote import RemoteBackend

    return RemoteBackend(where, token)


def _bulk_client(target: Target, barrier: Any, jobs: int, chunk: int, tag: int) -> float:
    """Seconds one client takes to bulk-create ``jobs`` jobs (after the barrier)."""
    from balsam.schemas.jobs import JobCreate

    backend = _open(target)
    specs = [
        [
            JobCreate(workflow="bench", application="T", name=f"c{tag}j{i + k}")
            for k in range(min(chunk, jobs - i))
        ]
        for i in range(0, jobs, chunk)
    ]
    barrier.wait()
    started = time.perf_counter()
    for part in specs:
        backend.bulk_create_jobs(part)
    took = time.perf_counter() - started
    backend.close()
    return took


def _claim_client(target: Target, barrier: Any, claims: int, pace: float, tag: int) -> list[float]:
    """Seconds per claim of one job (each followed by its RUNNING update); ``pace``: the
    mean pause between a client's claims (0: back to back), as a launcher between turns."""
    import random

    from balsam.domain.states import JobState
    from balsam.schemas.jobs import StateUpdate
    from balsam.schemas.sessions import ClaimRequest

    backend = _open(target)
    session = backend.open_session(f"bench{tag}", "localhost", os.getpid())
    seq, took = 0, []
    barrier.wait()
    for _ in range(claims):
        seq += 1
        started = time.perf_counter()
        claimed = backend.claim_jobs(session.id, ClaimRequest(limit=1, claim_seq=seq))
        took.append(time.perf_counter() - started)
        seq += 1
        updates = [StateUpdate(job_id=j.job_id, state=JobState.RUNNING, seq=seq) for j in claimed]
        backend.record_updates(session.id, updates)
        if pace:
            time.sleep(random.uniform(0.5, 1.5) * pace)  # think time, not a wait on a result
    backend.close_session(session.id)
    backend.close()
    return took


def _together(func: Callable[..., Any], clients: int, *args: Any) -> list[Any]:
    """``func(*args, barrier, ..., i)`` in ``clients`` processes started at one barrier."""
    ctx = mp.get_context("fork")
    barrier = ctx.Manager().Barrier(clients)
    target, *rest = args
    with ctx.Pool(clients) as pool:
        pending = [pool.apply_async(func, (target, barrier, *rest, i)) for i in range(clients)]
        return [p.get(timeout=900) for p in pending]


def _pcts(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(t * 1000 for t in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def _site(root: Path, name: str, args: argparse.Namespace) -> Path:
    """A fresh site ``name`` (on ``args.db``), one node of ``args.slots``, with app T."""
    db, slots = args.db, args.slots
    from balsam.backends.factory import init_site, open_local_backend
    from balsam.config import save_settings
    from balsam.schemas.apps import AppCreate

    if db == "sqlite":
        site = init_site(root / name)
    else:
        base = db.rpartition("/")[0]
        site = init_site(root / name, kind="url", url=fresh_pg_database(f"{base}/{name}"))
    site.settings.platform.cpus_per_node = slots
    save_settings(site.path, site.settings)
    backend = open_local_backend(site, retry=False)
    backend.create_app(AppCreate(name="T", executable="/bin/true"))
    backend.close()
    return site.path


def _fill(target: Target, jobs: int, n: int = 1) -> None:
    """Add ``jobs`` jobs of app T, ``n`` per node."""
    from balsam.schemas.jobs import JobCreate

    backend = _open(target)
    for i in range(0, jobs, 5000):
        backend.bulk_create_jobs(
            [
                JobCreate(workflow="fill", application="T", name=f"f{k}", node_packing_count=n)
                for k in range(i, min(jobs, i + 5000))
            ]
        )
    backend.close()


def _launch(site: Path, env: dict[str, str]) -> float:
    """Seconds for ``balsam launcher --consume-all`` in ``site`` (with ``env``) to finish."""
    balsam = str(Path(sys.executable).parent / "balsam")
    started = time.perf_counter()
    done = subprocess.run(
        [balsam, "launcher", "--consume-all", "--job-mode", "serial"],
        env={**os.environ, "BALSAM_DB_PATH": str(site), **env},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"launcher failed: {done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument("--workers", default="1", help="server processes, e.g. 1,2: each a run")
    parser.add_argument("--bulk-clients", type=int, default=4)
    parser.add_argument("--bulk-jobs", type=int, default=20_000, help="per client")
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--claims", type=int, default=40, help="per client")
    parser.add_argument(
        "--pace",
        default="0",
        help="mean seconds between one client's claims, comma-separated for several runs "
        "(0: back to back, saturating; 0.5: a launcher claiming twice a second)",
    )
    parser.add_argument("--launcher-jobs", type=int, default=2_000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--skip", default="", help="parts to skip: bulk,claims,launcher")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    counts = [int(c) for c in args.clients.split(",") if c]
    workers = [int(w) for w in args.workers.split(",") if w]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        root = Path(tmp)
        os.environ["BALSAM_HOME"] = str(root / "home")
        from balsam.server.auth import AuthStore, Role
        from serverkit import uvicorn_server

        auth = AuthStore.open(root / "state")
        token = auth.add_user("bench")
        targets: dict[str, Target] = {"local": ("local", str(_site(root, "local", args)), "")}
        # The launcher part starts from empty databases of its own (the others hold the
        # bulk part's jobs, which a --consume-all launcher would run too).
        run_local, run_served = _site(root, "runlocal", args), _site(root, "runserved", args)
        auth.grant("bench", Role.OWNER, "runserved")
        first_base = ""
        for count in workers:
            name = f"served{count}"
            served = _site(root, name, args)
            auth.grant("bench", Role.OWNER, name)
            paths = [served, run_served] if not first_base else [served]
            base = servers.enter_context(
                uvicorn_server(paths, root / "state", args=("--workers", str(count)))
            )
            first_base = first_base or base
            targets[f"server/{count}w"] = ("server", f"{base}/db/{name}", token)
        print(f"database: {'SQLite' if args.db == 'sqlite' else 'PostgreSQL'}; cores: "
              f"{os.cpu_count()}; clients are processes; server/Nw: N server workers")  # fmt: skip
        if "bulk" not in skip:
            for kind, target in targets.items():
                took = _together(
                    _bulk_client, args.bulk_clients, target, args.bulk_jobs, args.chunk
                )
                rate = args.bulk_clients * args.bulk_jobs / max(took)
                print(f"bulk     {kind:10s} {args.bulk_clients} clients x {args.bulk_jobs} "
                      f"jobs in calls of {args.chunk}: {rate:8.0f} jobs/s")  # fmt: skip
        if "claims" not in skip:
            paces = [float(p) for p in args.pace.split(",") if p]
            for pace, clients in ((p, c) for p in paces for c in counts):
                for kind, target in targets.items():
                    _fill(target, clients * args.claims)
                    runs = _together(_claim_client, clients, target, args.claims, pace)
                    p50, p99 = _pcts([t for r in runs for t in r])
                    print(f"claims   {kind:10s} {clients:3d} clients x {args.claims}, pause "
                          f"{pace:.1f} s: p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")  # fmt: skip
        if "launcher" not in skip:
            _launcher_part(root, args, run_local, run_served, f"{first_base}/db/runserved", token)


def _launcher_part(
    root: Path, args: argparse.Namespace, run_local: Path, run_served: Path, url: str, token: str
) -> None:
    """/bin/true jobs under one launcher: its database local, then through the server
    (whose first worker count serves ``run_served``)."""
    compute = root / "node" / "runserved"
    shutil.copytree(run_served, compute)
    for file in compute.glob("balsam.db*"):
        file.unlink()
    rates = {}
    runs: dict[str, tuple[Target, Path, dict[str, str]]] = {
        "local": (("local", str(run_local), ""), run_local, {}),
        "server": (
            ("server", url, token),
            compute,
            {"BALSAM_URL": url, "BALSAM_TOKEN": token},
        ),
    }
    for kind, (target, site, env) in runs.items():
        _fill(target, args.launcher_jobs, n=args.slots)
        rates[kind] = args.launcher_jobs / _launch(site, env)
        print(f"launcher {kind:10s} {args.launcher_jobs} x /bin/true on {args.slots} "
              f"slots: {rates[kind]:6.0f} jobs/s")  # fmt: skip
    print(f"launcher through the server / local: {rates['server'] / rates['local']:.2f}")


if __name__ == "__main__":
    main()

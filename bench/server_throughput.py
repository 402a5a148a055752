"""The edge service against the same database opened locally: bulk creation and claims.

Two fresh SQLite sites in a temporary BALSAM_HOME: one opened with a LocalBackend in this
process, one served by a real ``balsam server start`` (uvicorn, loopback) and reached with a
RemoteBackend. The same work runs on each, one client at a time:

* bulk creation: ``bulk_create_jobs`` of ``--jobs`` jobs in calls of ``--chunk`` (jobs/s);
* claims: a launcher session claiming one job per call, ``--claims`` times (latency per call,
  p50 and p99, ms), each claim followed by the claimed job's RUNNING update.

From the repository root, venv with the ``server`` extra active:

    python bench/server_throughput.py --jobs 20000 --chunk 5000 --claims 300
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _specs(n: int, offset: int) -> list[object]:
    from balsam.schemas.jobs import JobCreate

    return [JobCreate(workflow="bench", application="T", name=f"j{offset + i}") for i in range(n)]


def bulk_rate(backend: object, jobs: int, chunk: int) -> float:
    """Jobs per second of ``bulk_create_jobs`` in calls of ``chunk``."""
    specs = [_specs(min(chunk, jobs - i), i) for i in range(0, jobs, chunk)]
    started = time.perf_counter()
    for part in specs:
        backend.bulk_create_jobs(part)  # type: ignore[attr-defined]
    return jobs / (time.perf_counter() - started)


def claim_latencies(backend: object, claims: int) -> list[float]:
    """Seconds per claim of one job (then its RUNNING update), ``claims`` times."""
    from balsam.domain.states import JobState
    from balsam.schemas.jobs import StateUpdate
    from balsam.schemas.sessions import ClaimRequest

    session = backend.open_session("bench", "localhost", os.getpid())  # type: ignore[attr-defined]
    seq, took = 0, []
    for _ in range(claims):
        seq += 1
        started = time.perf_counter()
        (job,) = backend.claim_jobs(session.id, ClaimRequest(limit=1, claim_seq=seq))  # type: ignore[attr-defined]
        took.append(time.perf_counter() - started)
        seq += 1
        update = StateUpdate(job_id=job.job_id, state=JobState.RUNNING, seq=seq)
        backend.record_updates(session.id, [update])  # type: ignore[attr-defined]
    backend.close_session(session.id)  # type: ignore[attr-defined]
    return took


def concurrent_latencies(make: object, clients: int, claims: int) -> list[float]:
    """Claim latencies of ``clients`` threads at once, each with a backend of its own from
    ``make()`` and ``claims`` claims."""
    results: list[list[float]] = [[] for _ in range(clients)]

    def run(i: int) -> None:
        backend = make()  # type: ignore[operator]
        try:
            results[i] = claim_latencies(backend, claims)
        finally:
            if backend is not shared:
                backend.close()

    shared = getattr(make, "shared", None)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [t for r in results for t in r]


def _report(kind: str, rate: float, took: list[float]) -> None:
    ms = sorted(t * 1000 for t in took)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"{kind:8s} bulk create {rate:8.0f} jobs/s   claim p50 {statistics.median(ms):6.2f} ms"
        f"   p99 {p99:6.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--clients", type=int, default=0, help="also N claiming clients at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BALSAM_HOME"] = str(Path(tmp) / "home")
        from balsam.backends.factory import init_site, open_local_backend
        from balsam.backends.remote import RemoteBackend
        from balsam.schemas.apps import AppCreate
        from balsam.server.auth import AuthStore, Role
        from serverkit import uvicorn_server

        local_site, served = init_site(Path(tmp) / "local"), init_site(Path(tmp) / "served")
        auth = AuthStore.open(Path(tmp) / "state")
        token = auth.add_user("bench")
        auth.grant("bench", Role.OWNER, "served")
        local = open_local_backend(local_site, retry=False)
        with uvicorn_server([served.path], Path(tmp) / "state") as base:
            remote = RemoteBackend(f"{base}/db/served", token)
            for kind, backend in (("local", local), ("server", remote)):
                backend.create_app(AppCreate(name="T", executable="true"))
                rate = bulk_rate(backend, args.jobs, args.chunk)
                _report(kind, rate, claim_latencies(backend, args.claims))
            print(f"({args.jobs} jobs in calls of {args.chunk}; {args.claims} claims; one client)")
            if args.clients:
                each = args.claims // args.clients

                def local_one() -> object:
                    return local

                local_one.shared = local  # type: ignore[attr-defined]
                for kind, make in (
                    ("local", local_one),
                    ("server", lambda: RemoteBackend(f"{base}/db/served", token)),
                ):
                    ms = sorted(t * 1000 for t in concurrent_latencies(make, args.clients, each))
                    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
                    print(
                        f"{kind:8s} {args.clients} clients: claim p50 "
                        f"{statistics.median(ms):6.2f} ms   p99 {p99:7.2f} ms"
                    )
                print(f"({args.clients} clients at once, {each} claims each, one session each)")
            remote.close()
        local.close()


if __name__ == "__main__":
    main()

"""Latency of the event stream: from a state change committed to its event arriving on a
stream client, with N clients streaming at once.

A fresh site in a temporary BALSAM_HOME (SQLite, or PostgreSQL with ``--db-url``), served by a
real ``balsam server start`` (uvicorn, loopback). For each N of ``--streams``, N
:class:`~balsam.backends.stream.EventStream` clients (threads of this process, one connection
each) follow the stream; a LocalBackend on the same database (as a launcher with a direct
connection would) then kills ``--changes`` jobs one at a time, after a random pause of up to
``--pause`` s (so changes land anywhere in the server's wait cycle, not just after the last
one). The latency of one change on one client is the time from ``set_state`` returning (the
commit done) to the client holding the event. Printed: p50, p90 and max over every change and
client, in ms.

From the repository root, venv with the ``server`` extra active:

    python bench/stream_latency.py --streams 1,10,50 --changes 100
    python bench/stream_latency.py --db-url postgresql://USER@HOST/bench_stream ...
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


class Clients:
    """N stream clients recording when each job's kill arrived."""

    def __init__(self, url: str, token: str, count: int, after: int) -> None:
        from balsam.backends.remote import RemoteBackend
        from balsam.backends.stream import EventStream

        self.arrived: dict[str, list[float]] = {}
        self.lock = threading.Condition()
        self.remotes = [RemoteBackend(url, token) for _ in range(count)]
        self.streams = [EventStream(r, after=after) for r in self.remotes]
        self.threads = [
            threading.Thread(target=self._read, args=(s,), daemon=True) for s in self.streams
        ]
        for t in self.threads:
            t.start()

    def _read(self, stream: object) -> None:
        for event in stream:  # type: ignore[attr-defined]
            now = time.perf_counter()
            if event.to_state == "USER_KILLED":
                with self.lock:
                    self.arrived.setdefault(event.job_id, []).append(now)
                    self.lock.notify_all()

    def wait_for(self, job_id: str, timeout: float = 30) -> None:
        """Until every client has the kill of ``job_id``."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.arrived.get(job_id, [])) < len(self.streams):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"event of {job_id} missing on some stream")
                self.lock.wait(left)

    def close(self) -> None:
        for s in self.streams:
            s.close()
        for t in self.threads:
            t.join(timeout=10)
        for r in self.remotes:
            r.close()


def run(url: str, token: str, local: object, count: int, changes: int, pause: float) -> list[float]:
    """Latencies (s) of ``changes`` kills on ``count`` clients."""
    from balsam.domain.states import JobState
    from balsam.schemas.jobs import JobCreate

    jobs = local.create_jobs(  # type: ignore[attr-defined]
        [JobCreate(workflow="bench", application="T", name=f"n{count}-{i}") for i in range(changes)]
    )
    clients = Clients(url, token, count, after=local.change_marker())  # type: ignore[attr-defined]
    rng = random.Random(count)
    took: list[float] = []
    try:
        # Every client connected (its first message is the start): streams are open.
        deadline = time.monotonic() + 30
        while sum(s.connections for s in clients.streams) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("streams did not connect")
            time.sleep(0.01)
        for job in jobs:
            time.sleep(rng.uniform(0, pause))
            local.set_state(job.job_id, JobState.USER_KILLED)  # type: ignore[attr-defined]
            committed = time.perf_counter()
            clients.wait_for(job.job_id)
            took += [t - committed for t in clients.arrived[job.job_id]]
    finally:
        clients.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,10,50", help="clients at once, comma-separated")
    parser.add_argument("--changes", type=int, default=100, help="state changes per run")
    parser.add_argument("--pause", type=float, default=1.0, help="longest pause between them, s")
    parser.add_argument("--db-url", default="", help="PostgreSQL URL (else SQLite)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    os.environ["BALSAM_HOME"] = str(home)
    from benchlib import fresh_pg_database

    from balsam.backends.factory import init_site, open_local_backend
    from balsam.schemas.apps import AppCreate
    from balsam.server.auth import AuthStore, Role
    from serverkit import uvicorn_server

    if args.db_url:
        site = init_site(home / "bench", "url", fresh_pg_database(args.db_url))
    else:
        site = init_site(home / "bench")
    state = home / "state"
    auth = AuthStore.open(state)
    token = auth.add_user("bench")
    auth.grant("bench", Role.VIEWER, "bench")
    local = open_local_backend(site, retry=False)
    local.create_app(AppCreate(name="T", executable="true"))
    kind = "PostgreSQL" if args.db_url else "SQLite"
    print(f"{kind}; {args.changes} changes per run, pauses up to {args.pause} s")
    print(f"{'streams':>8} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}")
    with uvicorn_server([site.path], state) as base:
        url = f"{base}/db/bench"
        for count in (int(n) for n in args.streams.split(",")):
            took = sorted(run(url, token, local, count, args.changes, args.pause))
            p50 = statistics.median(took) * 1000
            p90 = took[int(0.9 * (len(took) - 1))] * 1000
            print(f"{count:>8} {p50:>8.1f} {p90:>8.1f} {took[-1] * 1000:>8.1f}", flush=True)
    local.close()


if __name__ == "__main__":
    main()

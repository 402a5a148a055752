"""`balsam server start --workers N`: N real uvicorn worker processes share the port; calls from
clients running at once all land (through whichever worker), and stopping the server stops
every worker."""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from balsam.backends.factory import init_site
from balsam.backends.remote import RemoteBackend
from balsam.schemas import AppCreate, JobCreate, JobQuery
from balsam.server.auth import AuthStore, Role
from serverkit import uvicorn_server


def _workers_of(state: Path) -> list[int]:
    """Pids of the worker processes started with this server's state directory in their
    environment (the server sets it for them; multiprocessing's resource tracker, which
    inherits it too, is not a worker)."""
    wanted = f"BALSAM_SERVER_STATE={state}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            worker = b"spawn_main" in (entry / "cmdline").read_bytes()
            if worker and wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def test_workers_serve_together_and_stop_together(tmp_path: Path) -> None:
    site = init_site(tmp_path / "campaign")
    state = tmp_path / "state"
    auth = AuthStore.open(state)
    token = auth.add_user("alice")
    auth.grant("alice", Role.OWNER, "campaign")
    with uvicorn_server([site.path], state, args=("--workers", "2")) as base:
        workers = _workers_of(state)
        assert len(workers) == 2 and os.getpid() not in workers
        url = f"{base}/db/campaign"
        with contextlib.closing(RemoteBackend(url, token)) as be:
            be.create_app(AppCreate(name="A", executable="true"))

        def add(i: int) -> int:
            with contextlib.closing(RemoteBackend(url, token)) as client:
                made = client.bulk_create_jobs(
                    JobCreate(name=f"c{i}j{k}", application="A") for k in range(50)
                )
                return len(made.job_ids)

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(add, range(16))) == 800
        with contextlib.closing(RemoteBackend(url, token)) as be:
            assert be.count_jobs(JobQuery()) == 800
    assert _workers_of(state) == [], "a worker outlived the server"

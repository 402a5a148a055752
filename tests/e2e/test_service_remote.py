"""`balsam service` on a machine that reaches its workflow database only through a real
`balsam server` (uvicorn): it takes the service lock, sizes and submits launchers (the
``local`` scheduler: real background `balsam launcher` processes, which inherit the server's
URL and token), the jobs finish, and `service status` and `service stop` work through it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from balsam.backends.factory import init_site
from balsam.backends.remote import RemoteBackend
from balsam.batch_settings import QueueSettings, ServiceSettings
from balsam.config import SQLITE_FILE, load_settings, save_settings
from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import JobQuery
from balsam.schemas.service import SERVICE_LOCK
from balsam.server.auth import AuthStore, Role
from launchkit import BALSAM, gone
from serverkit import uvicorn_server
from waiting import wait_until


def _served_site(tmp_path: Path) -> Path:
    """A site whose service submits one-node local launchers, quickly."""
    served = init_site(tmp_path / "campaign").path
    current = load_settings(served)
    current.queues = {"local": QueueSettings(max_nodes=1, max_wall_time_minutes=10)}
    current.service = ServiceSettings(
        period_seconds=0.5, lock_seconds=3, wall_time_minutes=5, job_mode="serial"
    )
    current.launcher = current.launcher.model_copy(
        update={"heartbeat_seconds": 0.5, "lease_seconds": 3}
    )
    save_settings(served, current)
    return served


def test_the_service_runs_through_the_server(tmp_path: Path) -> None:
    served = _served_site(tmp_path)
    login_node = tmp_path / "login" / "campaign"
    shutil.copytree(served, login_node)
    for file in login_node.glob(f"{SQLITE_FILE}*"):
        file.unlink()
    auth = AuthStore.open(tmp_path / "state")
    token = auth.add_user("alice")
    auth.grant("alice", Role.OWNER, "campaign")  # the service locks need the owner role
    with uvicorn_server([served], tmp_path / "state") as base:
        url = f"{base}/db/campaign"
        env = {**os.environ, "BALSAM_DB_PATH": str(login_node), "BALSAM_URL": url,
               "BALSAM_TOKEN": token}  # fmt: skip

        def balsam(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [BALSAM, *argv], env=env, capture_output=True, text=True, timeout=120
            )

        with contextlib.closing(RemoteBackend(url, token)) as be:
            be.create_app(AppCreate(name="Echo", executable="echo done"))
            be.create_jobs(
                [
                    JobCreate(name=f"j{i}", workflow="w", application="Echo", node_packing_count=4)
                    for i in range(3)
                ]
            )
            started = balsam("service", "start")
            assert started.returncode == 0, started.stderr
            try:

                def finished() -> bool:
                    return all(j.state is JobState.JOB_FINISHED for j in be.query_jobs(JobQuery()))

                wait_until(finished, timeout=90)
                (batch,) = be.list_batch_jobs()
                assert (batch.scheduler, batch.num_nodes) == ("local", 1)
                status = balsam("service", "status")
                assert "service: running" in status.stdout, status.stderr
                stopped = balsam("service", "stop")
                assert stopped.returncode == 0, stopped.stderr
                assert be.get_service_lock(SERVICE_LOCK) is None
            finally:
                lock = be.get_service_lock(SERVICE_LOCK)
                if lock is not None and not gone(lock.pid):
                    os.kill(lock.pid, 9)
        # The jobs ran under the login node's directory, which has no database of its own.
        assert not (login_node / SQLITE_FILE).exists()
        outs = list((login_node / "data" / "w").glob("j*/j*.out"))
        assert sorted(p.read_text() for p in outs) == ["done\n"] * 3, outs


def test_the_service_needs_the_owner_role(tmp_path: Path) -> None:
    """A submitter's `service start` fails in one line naming the role (the lock is an
    owner's); the background service reports it to the command, which exits 1."""
    served = _served_site(tmp_path)
    auth = AuthStore.open(tmp_path / "state")
    token = auth.add_user("bob")
    auth.grant("bob", Role.SUBMITTER, "campaign")
    with uvicorn_server([served], tmp_path / "state") as base:
        env = {**os.environ, "BALSAM_DB_PATH": str(served), "BALSAM_URL": f"{base}/db/campaign",
               "BALSAM_TOKEN": token}  # fmt: skip
        done = subprocess.run(
            [BALSAM, "service", "start"], env=env, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr == (
        "balsam: error: the service did not start: user 'bob' needs role owner on 'campaign'\n"
    )

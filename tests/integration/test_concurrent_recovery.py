"""Launchers that notice the same lost launcher at once recover each of its jobs once.

Found by the random-kill test: two launchers starting together both saw a dead launcher's
pid gone and both handed its RUNNING job back, writing the loss twice.
"""

from __future__ import annotations

import threading

from balsam.backends.local import LocalBackend
from balsam.domain.states import JobState
from balsam.schemas import AppCreate, ClaimRequest, JobCreate
from balsam.schemas.jobs import StateUpdate
from balsam.store.engine import make_engine

S = JobState


def test_concurrent_recoveries_record_each_lost_run_once(
    backend: LocalBackend, db_url: str
) -> None:
    backend.create_app(AppCreate(name="A", executable="true"))
    specs = [JobCreate(name=f"j{i}", application="A", max_lost_retries=10) for i in range(20)]
    jobs = backend.create_jobs(specs)
    peers = [LocalBackend(make_engine(db_url)) for _ in range(4)]
    try:
        for _round in range(5):
            dead = backend.open_session("dead", "h", 1)
            claimed = backend.claim_jobs(dead.id, ClaimRequest(limit=100))
            updates = [StateUpdate(job_id=j.job_id, state=S.RUNNING) for j in claimed]
            backend.record_updates(dead.id, updates)
            start = threading.Barrier(len(peers))
            recovered: list[list[int]] = []

            def recover(
                peer: LocalBackend,
                dead_id: int = dead.id,
                start: threading.Barrier = start,
                recovered: list[list[int]] = recovered,
            ) -> None:
                start.wait()
                recovered.append(peer.expire_sessions(3600, dead=[dead_id]))

            threads = [threading.Thread(target=recover, args=(p,)) for p in peers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert sorted(len(r) for r in recovered) == [0, 0, 0, 1]
    finally:
        for peer in peers:
            peer.close()
    for job in jobs:
        out = backend.get_job(job.job_id)
        losses = [e for e in backend.history(job.job_id) if e.to_state == S.RESTART_READY]
        assert out.lost_count == len(losses) == 5
        assert out.state is S.RESTART_READY and out.session_id is None

"""A user's kill that commits while a launcher is writing the same job's end is kept.

On PostgreSQL a launcher's batch of state changes reads its jobs with ``FOR UPDATE``: a kill
committed while the batch waits is seen, and the launcher's change refused, instead of the
launcher overwriting USER_KILLED with its own, older view of the job.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text

from balsam.backends.local import LocalBackend
from balsam.domain.states import JobState
from balsam.schemas import AppCreate, ClaimRequest, JobCreate
from balsam.schemas.jobs import RefusalCode, StateUpdate, UpdateResult
from balsam.store.engine import make_engine
from pgserver import PgServer
from waiting import wait_until

S = JobState


def _waiting_on_locks(admin_url: str, database: str) -> int:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            query = text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = :db AND wait_event_type = 'Lock'"
            )
            return int(conn.execute(query, {"db": database}).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_kill_committed_during_a_launchers_write_is_not_overwritten(
    db_url: str, pg_server: PgServer
) -> None:
    url = db_url
    database = url.rsplit("/", 1)[1]
    backend = LocalBackend(make_engine(url))
    user = make_engine(url)
    try:
        backend.create_app(AppCreate(name="A", executable="true"))
        job = backend.create_jobs([JobCreate(name="j", application="A")])[0]
        session = backend.open_session("launcher", "h", 1)
        backend.claim_jobs(session.id, ClaimRequest(limit=1))
        backend.record_updates(session.id, [StateUpdate(job_id=job.job_id, state=S.RUNNING)])
        refused: list[list[UpdateResult]] = []
        with user.connect() as conn, conn.begin():
            # The user's kill, mid-transaction, holding the job's row.
            conn.execute(
                text("SELECT 1 FROM jobs WHERE job_id = :id FOR UPDATE"), {"id": job.job_id}
            )
            conn.execute(
                text("UPDATE jobs SET state = 'USER_KILLED', session_id = NULL WHERE job_id = :id"),
                {"id": job.job_id},
            )
            done = StateUpdate(job_id=job.job_id, state=S.RUN_DONE, return_code=0, release=True)
            writer = threading.Thread(
                target=lambda: refused.append(backend.record_updates(session.id, [done]))
            )
            writer.start()
            wait_until(
                lambda: _waiting_on_locks(pg_server.url("postgres"), database) > 0,
                timeout=30,
                interval=0.05,
                what="the launcher's write to wait on the user's lock",
            )
        writer.join(timeout=30)
        assert len(refused) == 1 and len(refused[0]) == 1, f"not refused: {refused}"
        (result,) = refused[0]
        assert result.code is RefusalCode.NOT_HELD, result
        assert (result.state, result.held) == (S.USER_KILLED, False)
        assert backend.get_job(job.job_id).state is S.USER_KILLED
    finally:
        user.dispose()
        backend.close()

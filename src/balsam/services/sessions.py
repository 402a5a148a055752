"""Launcher sessions: leases, claims, batched state updates, lease recovery.

There is one claim path: jobs in a claimable state that no session holds are marked with the
claimant's session id in the same transaction that selects them. On PostgreSQL the select
uses ``FOR UPDATE SKIP LOCKED`` so concurrent launchers never wait on, or take, each other's
rows; on SQLite the transaction holds the write lock from its first statement.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, Select, delete, select, text, update
from sqlalchemy.orm import Session

from balsam.domain.states import TERMINAL_STATES, JobState
from balsam.errors import InvalidTransition, NotFound
from balsam.schemas.jobs import JobOut, StateUpdate
from balsam.schemas.sessions import ClaimRequest, SessionOut
from balsam.services.jobs import job_outs, select_outs
from balsam.services.state_engine import AnyJob, StateEngine
from balsam.store import repository as repo
from balsam.store.engine import is_sqlite, unit_of_work
from balsam.store.staterows import state_rows
from balsam.store.tables import CLAIMABLE_PREDICATE, JOBS, JobRow, SessionRow, utcnow

S = JobState


def open_session(engine: Engine, label: str, hostname: str, pid: int) -> SessionOut:
    """Start a lease for one launcher."""
    with unit_of_work(engine) as session:
        row = SessionRow(
            label=label, hostname=hostname, pid=pid, heartbeat=utcnow(), created_at=utcnow()
        )
        session.add(row)
        session.flush()
        return SessionOut.model_validate(row)


def heartbeat(engine: Engine, session_id: int) -> list[str]:
    """Renew the lease; returns ids of held jobs a user killed (or failed) meanwhile."""
    with unit_of_work(engine) as session:
        row = session.get(SessionRow, session_id)
        if row is None:
            raise NotFound(f"launcher session {session_id} has expired")
        row.heartbeat = utcnow()
        return _ended_held(session, session_id)


def ended_held_jobs(engine: Engine, session_id: int) -> list[str]:
    """Ids of jobs ``session_id`` holds that a user killed (or failed) meanwhile; read-only.

    Launchers ask this every few seconds while jobs run, so ``balsam kill`` takes effect
    quickly without a write per question.
    """
    with unit_of_work(engine, write=False) as session:
        if session.get(SessionRow, session_id) is None:
            raise NotFound(f"launcher session {session_id} has expired")
        return _ended_held(session, session_id)


def _ended_held(session: Session, session_id: int) -> list[str]:
    # A held job that reached an end state was killed or given up on by a user.
    ended = [s.value for s in TERMINAL_STATES]
    stmt = select(JobRow.job_id).where(JobRow.session_id == session_id, JobRow.state.in_(ended))
    return list(session.scalars(stmt))


def list_sessions(engine: Engine) -> list[SessionOut]:
    """Every open launcher session, oldest first."""
    with unit_of_work(engine, write=False) as session:
        rows = session.scalars(select(SessionRow).order_by(SessionRow.id))
        return [SessionOut.model_validate(row) for row in rows]


def close_session(engine: Engine, session_id: int) -> None:
    """End a lease, handing back every job it still holds (RUNNING ones to RESTART_READY)."""
    with unit_of_work(engine) as session:
        _recover_jobs(session, [session_id], "launcher stopped while the job ran")
        session.execute(delete(SessionRow).where(SessionRow.id == session_id))


def expire_sessions(
    engine: Engine, lease_seconds: float, dead: list[int] | None = None
) -> list[int]:
    """Recover the jobs of sessions whose heartbeat is older than ``lease_seconds``, and of
    the sessions in ``dead`` (launchers seen dead on their own host); returns their ids."""
    cutoff = utcnow() - timedelta(seconds=lease_seconds)
    with unit_of_work(engine) as session:
        # Several launchers may notice the same loss at once: each session is recovered by
        # the one that locks it (PostgreSQL; SQLite's write lock serialises them anyway).
        lock = not is_sqlite(engine)
        stale_q = select(SessionRow.id).where(SessionRow.heartbeat < cutoff)
        stale = list(
            session.scalars(stale_q.with_for_update(skip_locked=True) if lock else stale_q)
        )
        gone = [s for s in dict.fromkeys(dead or []) if s not in stale]
        if gone:
            gone_q = select(SessionRow.id).where(SessionRow.id.in_(gone))
            gone_q = gone_q.with_for_update(skip_locked=True) if lock else gone_q
            gone = list(session.scalars(gone_q))
        if stale:
            _recover_jobs(session, stale, "launcher lost (lease expired)")
        if gone:
            _recover_jobs(session, gone, "launcher lost (its process is gone)")
        if stale or gone:
            session.execute(delete(SessionRow).where(SessionRow.id.in_(stale + gone)))
        return stale + gone


def _recover_jobs(session: Session, session_ids: list[int], message: str) -> None:
    """Hand back every job the sessions hold; RUNNING ones restart (a lost run) or fail.

    The rows are locked, so a launcher closing its session while a peer expires it does not
    recover a job twice: the second waits, then finds it held by nobody (PostgreSQL rechecks
    the condition on the row it waited for).
    """
    stmt = select(JobRow).where(JobRow.session_id.in_(session_ids)).order_by(JobRow.job_id)
    if session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    rows = list(session.scalars(stmt))
    engine_ = StateEngine(session)
    for row in rows:
        if row.state == S.RUNNING:
            engine_.move(row, S.RESTART_READY, message, lost=True)
            _bound_lost(engine_, row)
        row.session_id = None
    engine_.finish()


def _bound_lost(engine_: StateEngine, row: AnyJob) -> None:
    """Fail a job whose runs were lost more often than it allows."""
    if row.state == S.RESTART_READY and row.lost_count > row.max_lost_retries:
        reason = f"gave up after {row.lost_count} runs lost with their launcher"
        engine_.move(row, S.FAILED, reason)


def claim_jobs(engine: Engine, session_id: int, req: ClaimRequest) -> list[JobOut]:
    """Take up to ``req.limit`` jobs this launcher can run and mark them held by it."""
    with unit_of_work(engine) as session:
        if session.get(SessionRow, session_id) is None:
            raise NotFound(f"launcher session {session_id} has expired")
        # One range on num_nodes, never an equality beside it: with both, SQLite sorts every
        # claimable row instead of reading the index in claim order (jobs have num_nodes >= 1).
        max_nodes = 1 if req.serial_only else req.max_nodes
        stmt = (
            select_outs()
            .where(text(CLAIMABLE_PREDICATE), JobRow.num_nodes <= max_nodes)
            .order_by(JobRow.num_nodes.desc(), JobRow.wall_time_minutes.desc(), JobRow.created_at)
            .limit(req.limit)
        )
        stmt = _filter_workflows(stmt, req.workflows, is_sqlite(engine))
        if req.max_wall_time_minutes is not None:
            stmt = stmt.where(JobRow.wall_time_minutes <= req.max_wall_time_minutes)
        if req.job_ids:
            stmt = stmt.where(JobRow.job_id.in_(req.job_ids))
        if not is_sqlite(engine):
            stmt = stmt.with_for_update(skip_locked=True)
        jobs = job_outs(session, stmt, session_id=session_id)
        if jobs:
            session.execute(
                update(JobRow)
                .where(JobRow.job_id.in_([job.job_id for job in jobs]))
                .values(session_id=session_id)
            )
        return jobs


def _filter_workflows(stmt: Select[Any], workflows: list[str], sqlite: bool) -> Any:
    """Restrict a claim to ``workflows``, steering SQLite to the index that keeps it flat.

    Without statistics SQLite prefers the (state, workflow) index and then sorts every
    claimable row; the claim indexes return rows already in claim order.
    """
    if len(workflows) == 1:
        stmt = stmt.where(JobRow.workflow == workflows[0])
        index = "ix_jobs_claimable_wf"
    else:
        if workflows:
            stmt = stmt.where(JobRow.workflow.in_(workflows))
        index = "ix_jobs_claimable"
    return stmt.with_hint(JOBS, f"INDEXED BY {index}", "sqlite") if sqlite else stmt


def record_updates(engine: Engine, session_id: int, updates: list[StateUpdate]) -> list[str]:
    """Apply a launcher's buffered state changes in one transaction.

    Changes to jobs this session no longer holds, or that the state machine refuses (a job a
    user killed meanwhile), are skipped; the returned list says which and why.
    """
    rejected: list[str] = []
    with unit_of_work(engine) as session:
        # Locked on PostgreSQL: a user's kill committed meanwhile is seen, not overwritten.
        lock = not is_sqlite(engine)
        rows = state_rows(session, [u.job_id for u in updates], lock=lock)
        engine_ = StateEngine(session)
        for upd in updates:
            row = rows.get(upd.job_id)
            if row is None or row.session_id != session_id:
                rejected.append(f"{upd.job_id[:8]}: not held by this launcher")
                continue
            try:
                engine_.move(
                    row,
                    upd.state,
                    upd.message,
                    when=upd.timestamp,
                    keep_hold=not upd.release,
                    lost=upd.lost,
                )
                if upd.lost:
                    _bound_lost(engine_, row)
            except InvalidTransition as exc:
                rejected.append(str(exc))
                continue
            if upd.return_code is not None:
                row.return_code = upd.return_code
            if upd.release:
                row.session_id = None
        engine_.finish()
    return rejected


def release_jobs(engine: Engine, session_id: int, job_ids: list[str]) -> None:
    """Stop holding ``job_ids`` (e.g. after a killed job's process is gone)."""
    with unit_of_work(engine) as session:
        repo.release(session, session_id, job_ids)

"""Launcher sessions: leases, claims, batched state updates, lease recovery.

There is one claim path: jobs in a claimable state that no session holds are marked with the
claimant's session id in the same transaction that selects them. On PostgreSQL the select
uses ``FOR UPDATE SKIP LOCKED`` so concurrent launchers never wait on, or take, each other's
rows; on SQLite the transaction holds the write lock from its first statement.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, Select, select, text, update
from sqlalchemy.orm import Session

from balsam.domain.states import TERMINAL_STATES, JobState
from balsam.errors import InvalidTransition, NotFound
from balsam.schemas.jobs import (
    JobOut,
    RefusalCode,
    StateUpdate,
    UpdateOutcome,
    UpdateResult,
)
from balsam.schemas.sessions import ClaimRequest, RecordedAndClaimed, SessionOut
from balsam.services.jobs import job_outs, select_outs
from balsam.services.state_engine import AnyJob, StateEngine
from balsam.store import repository as repo
from balsam.store.bulk import update_rows
from balsam.store.engine import is_sqlite, unit_of_work
from balsam.store.staterows import StateRow, state_rows
from balsam.store.tables import (
    CLAIMABLE_PREDICATE,
    JOBS,
    PROCESSING_PREDICATE,
    JobRow,
    SessionRow,
    utcnow,
)

S = JobState


def open_session(
    engine: Engine,
    label: str,
    hostname: str,
    pid: int,
    client_key: str | None = None,
    batch_job: str | None = None,
) -> SessionOut:
    """Start a lease for one launcher; with ``client_key``, a repeat returns the same lease.

    ``batch_job`` is the scheduler's id of the batch job the launcher runs in, if any.
    """
    with unit_of_work(engine) as session:
        if client_key:
            found = session.scalar(select(SessionRow).where(SessionRow.client_key == client_key))
            if found is not None:
                return SessionOut.model_validate(found)
        row = SessionRow(
            label=label,
            hostname=hostname,
            pid=pid,
            heartbeat=utcnow(),
            created_at=utcnow(),
            client_key=client_key or None,
            batch_job=batch_job or None,
        )
        session.add(row)
        session.flush()
        return SessionOut.model_validate(row)


def heartbeat(engine: Engine, session_id: int) -> list[str]:
    """Renew the lease; returns ids of held jobs a user killed (or failed) meanwhile."""
    with unit_of_work(engine) as session:
        row = _open_row(session, session_id)
        row.heartbeat = utcnow()
        return _ended_held(session, session_id)


def ended_held_jobs(engine: Engine, session_id: int) -> list[str]:
    """Ids of jobs ``session_id`` holds that a user killed (or failed) meanwhile; read-only.

    Launchers ask this every few seconds while jobs run, so ``balsam kill`` takes effect
    quickly without a write per question.
    """
    with unit_of_work(engine, write=False) as session:
        _open_row(session, session_id)
        return _ended_held(session, session_id)


def _open_row(session: Session, session_id: int) -> SessionRow:
    """The row of an open session (NotFound once it ended: closed, or expired by peers)."""
    row = session.get(SessionRow, session_id)
    if row is None or row.ended_at is not None:
        raise NotFound(f"launcher session {session_id} has expired")
    return row


def _ended_held(session: Session, session_id: int) -> list[str]:
    # A held job that reached an end state was killed or given up on by a user.
    ended = [s.value for s in TERMINAL_STATES]
    stmt = select(JobRow.job_id).where(JobRow.session_id == session_id, JobRow.state.in_(ended))
    return list(session.scalars(stmt))


def list_sessions(engine: Engine) -> list[SessionOut]:
    """Every open launcher session, oldest first."""
    with unit_of_work(engine, write=False) as session:
        open_ = SessionRow.ended_at.is_(None)
        rows = session.scalars(select(SessionRow).where(open_).order_by(SessionRow.id))
        return [SessionOut.model_validate(row) for row in rows]


def close_session(engine: Engine, session_id: int) -> None:
    """End a lease, handing back every job it still holds (RUNNING ones to RESTART_READY).

    Closing a session that is gone already (closed before, or expired by peers) does nothing.
    """
    with unit_of_work(engine) as session:
        _recover_jobs(session, [session_id], "launcher stopped while the job ran")
        _end(session, [session_id])


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
        open_ = SessionRow.ended_at.is_(None)
        stale_q = select(SessionRow.id).where(SessionRow.heartbeat < cutoff, open_)
        stale = list(
            session.scalars(stale_q.with_for_update(skip_locked=True) if lock else stale_q)
        )
        gone = [s for s in dict.fromkeys(dead or []) if s not in stale]
        if gone:
            gone_q = select(SessionRow.id).where(SessionRow.id.in_(gone), open_)
            gone_q = gone_q.with_for_update(skip_locked=True) if lock else gone_q
            gone = list(session.scalars(gone_q))
        if stale:
            _recover_jobs(session, stale, "launcher lost (lease expired)")
        if gone:
            _recover_jobs(session, gone, "launcher lost (its process is gone)")
        if stale or gone:
            _end(session, stale + gone)
        return stale + gone


def _end(session: Session, session_ids: list[int]) -> None:
    """Mark sessions ended; their rows stay, so their ids are never reused."""
    session.execute(
        update(SessionRow)
        .where(SessionRow.id.in_(session_ids), SessionRow.ended_at.is_(None))
        .values(ended_at=utcnow())
    )


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
    """Take up to ``req.limit`` jobs that fit this launcher (and up to ``processing_limit``
    jobs with a processing step left) and mark them held by it.

    A repeat of a claim (same ``claim_seq``) whose first answer was lost returns the jobs that
    first claim took, and takes no more.
    """
    with unit_of_work(engine) as session:
        _open_row(session, session_id)
        return _claim(session, is_sqlite(engine), session_id, req)


def record_and_claim(
    engine: Engine, session_id: int, updates: list[StateUpdate], req: ClaimRequest
) -> RecordedAndClaimed:
    """:func:`record_updates`, then :func:`claim_jobs`, in one transaction.

    A launcher that has finished jobs to report and room for more sends both at once: one
    commit instead of two, and the children its finished jobs free are claimable in the same
    call (a dependency chain's next step starts without another round trip). Repeats are safe
    as for each part: updates are reported as duplicates, the claim's ``claim_seq`` replays.
    """
    with unit_of_work(engine) as session:
        _open_row(session, session_id)
        sqlite = is_sqlite(engine)
        results = _record(session, sqlite, session_id, updates)
        jobs = _claim(session, sqlite, session_id, req)
        return RecordedAndClaimed.model_construct(results=results, jobs=jobs)


def _claim(session: Session, sqlite: bool, session_id: int, req: ClaimRequest) -> list[JobOut]:
    if req.claim_seq:
        replayed = _replay_claim(session, session_id, req.claim_seq)
        if replayed:
            return replayed
    jobs = _claim_runnable(session, req, sqlite, session_id) if req.limit else []
    if req.processing_limit:
        jobs += _claim_processing(session, req, sqlite, session_id)
    if jobs:
        session.execute(
            update(JobRow)
            .where(JobRow.job_id.in_([job.job_id for job in jobs]))
            .values(
                session_id=session_id,
                update_session=session_id if req.claim_seq else None,
                update_seq=req.claim_seq or None,
            )
        )
    return jobs


def _replay_claim(session: Session, session_id: int, claim_seq: int) -> list[JobOut]:
    """The jobs the claim numbered ``claim_seq`` took, if it was committed before."""
    stmt = select_outs().where(
        JobRow.session_id == session_id,
        JobRow.update_session == session_id,
        JobRow.update_seq == claim_seq,
    )
    return job_outs(session, stmt.order_by(JobRow.created_at))


def _claim_runnable(
    session: Session, req: ClaimRequest, sqlite: bool, session_id: int
) -> list[JobOut]:
    """Runnable jobs that fit the claimant, one GPU class at a time, most GPUs first.

    Each class is an equality on ``gpus_needed`` and a range on ``num_nodes``: the claim index
    is then read in claim order and the query stops after ``limit`` rows, however many jobs
    the table holds (a range on both would make SQLite sort every claimable row).
    """
    found: list[JobOut] = []
    classes: list[int | None] = (
        [None] if req.gpus_per_node is None else list(range(req.gpus_per_node, -1, -1))
    )
    for gpus in classes:
        left = req.limit - len(found)
        if left <= 0:
            break
        stmt = _runnable_query(req, gpus, left, sqlite)
        # Held by the claimant from this transaction on (the update below writes it).
        found += job_outs(session, stmt, session_id=session_id)
    return found


def _runnable_query(req: ClaimRequest, gpus: int | None, limit: int, sqlite: bool) -> Any:
    # One range on num_nodes, never an equality beside it: with both, SQLite sorts every
    # claimable row instead of reading the index in claim order (jobs have num_nodes >= 1).
    max_nodes = 1 if req.serial_only else req.max_nodes
    stmt = select_outs().where(text(CLAIMABLE_PREDICATE), JobRow.num_nodes <= max_nodes)
    if gpus is not None:
        stmt = stmt.where(JobRow.gpus_needed == gpus)
    if req.cpus_per_node is not None:
        stmt = stmt.where(JobRow.cpus_needed <= req.cpus_per_node)
    if req.max_ranks_per_node is not None:
        stmt = stmt.where(JobRow.ranks_per_node <= req.max_ranks_per_node)
    if req.max_wall_time_minutes is not None:
        stmt = stmt.where(JobRow.wall_time_minutes <= req.max_wall_time_minutes)
    if req.job_ids:
        stmt = stmt.where(JobRow.job_id.in_(req.job_ids))
    if req.states:
        # Implies nothing the index's predicate does not: the claim index is still read.
        stmt = stmt.where(JobRow.state.in_([str(s) for s in req.states]))
    stmt = stmt.order_by(
        JobRow.gpus_needed.desc(),
        JobRow.num_nodes.desc(),
        JobRow.wall_time_minutes.desc(),
        JobRow.created_at,
    ).limit(limit)
    stmt = _filter_workflows(stmt, req.workflows, sqlite, "ix_jobs_claim_run")
    return stmt if sqlite else stmt.with_for_update(skip_locked=True)


def _claim_processing(
    session: Session, req: ClaimRequest, sqlite: bool, session_id: int
) -> list[JobOut]:
    """Jobs nobody holds that wait in a processing state for a launcher's step."""
    stmt = select_outs().where(text(PROCESSING_PREDICATE))
    if req.job_ids:
        stmt = stmt.where(JobRow.job_id.in_(req.job_ids))
    if req.workflows:
        stmt = stmt.where(JobRow.workflow.in_(req.workflows))
    stmt = stmt.order_by(JobRow.created_at).limit(req.processing_limit)
    if sqlite:
        stmt = stmt.with_hint(JOBS, "INDEXED BY ix_jobs_claim_processing", "sqlite")
    else:
        stmt = stmt.with_for_update(skip_locked=True)
    return job_outs(session, stmt, session_id=session_id)


def _filter_workflows(stmt: Select[Any], workflows: list[str], sqlite: bool, index: str) -> Any:
    """Restrict a claim to ``workflows``, steering SQLite to the index that keeps it flat.

    Without statistics SQLite prefers the (state, workflow) index and then sorts every
    claimable row; the claim indexes (``index``, and ``index`` + ``_wf`` for one workflow)
    return rows already in claim order.
    """
    if len(workflows) == 1:
        stmt = stmt.where(JobRow.workflow == workflows[0])
        index = f"{index}_wf"
    elif workflows:
        stmt = stmt.where(JobRow.workflow.in_(workflows))
    return stmt.with_hint(JOBS, f"INDEXED BY {index}", "sqlite") if sqlite else stmt


def record_updates(
    engine: Engine, session_id: int, updates: list[StateUpdate]
) -> list[UpdateResult]:
    """Apply a launcher's buffered state changes in one transaction; one result per update.

    An update this session sent before (its job carries the same or a later ``seq`` of this
    session) is a duplicate: reported, not applied again. Changes to jobs this session does not
    hold, to jobs that moved away from the update's ``from_state``, or that the state machine
    refuses, are refused with a code saying which (see :class:`RefusalCode`).
    """
    with unit_of_work(engine) as session:
        return _record(session, is_sqlite(engine), session_id, updates)


def _record(
    session: Session, sqlite: bool, session_id: int, updates: list[StateUpdate]
) -> list[UpdateResult]:
    # Locked on PostgreSQL: a user's kill committed meanwhile is seen, not overwritten.
    rows = state_rows(session, [u.job_id for u in updates], lock=not sqlite)
    engine_ = StateEngine(session)
    results = [_apply(engine_, rows.get(upd.job_id), session_id, upd) for upd in updates]
    engine_.finish()
    _write_outcomes(session, updates, results)
    return results


def _write_outcomes(
    session: Session, updates: list[StateUpdate], results: list[UpdateResult]
) -> None:
    """Store the outcomes that came with the updates applied now (``{}``: clear it), in the
    same transaction as their states: a function job's result is never recorded without the
    run's end, nor lost with a repeat. Most updates carry none: no statement then."""
    outcomes = {
        upd.job_id: upd.outcome or None
        for upd, result in zip(updates, results, strict=True)
        if upd.outcome is not None and result.outcome is UpdateOutcome.APPLIED
    }
    if outcomes:
        rows = [(outcome, job_id) for job_id, outcome in outcomes.items()]
        update_rows(session, JOBS, "job_id", ("function_outcome",), rows)


def _apply(
    engine_: StateEngine, row: StateRow | None, session_id: int, upd: StateUpdate
) -> UpdateResult:
    """Apply one update to its job's row, or say why not."""
    if row is None:
        return _refused(upd, RefusalCode.NOT_FOUND, "no such job (deleted?)", None, session_id)
    if upd.seq and row.update_session == session_id and (row.update_seq or 0) >= upd.seq:
        return _result(upd, UpdateOutcome.DUPLICATE, row, session_id)
    if row.session_id != session_id:
        return _refused(upd, RefusalCode.NOT_HELD, "not held by this launcher", row, session_id)
    if upd.from_state is not None and row.state != upd.from_state:
        why = f"the job moved from {upd.from_state} to {row.state} meanwhile"
        return _refused(upd, RefusalCode.STATE_CHANGED, why, row, session_id)
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
        return _refused(upd, RefusalCode.INVALID_TRANSITION, str(exc), row, session_id)
    if upd.return_code is not None:
        row.return_code = upd.return_code
    if upd.release:
        row.session_id = None
    if upd.seq:
        row.update_session, row.update_seq = session_id, upd.seq
    return _result(upd, UpdateOutcome.APPLIED, row, session_id)


def _result(
    upd: StateUpdate, outcome: UpdateOutcome, row: StateRow, session_id: int
) -> UpdateResult:
    return UpdateResult.model_construct(
        job_id=upd.job_id,
        seq=upd.seq,
        outcome=outcome,
        code=None,
        reason="",
        state=S(row.state),
        held=row.session_id == session_id,
    )


def _refused(
    upd: StateUpdate,
    code: RefusalCode,
    reason: str,
    row: StateRow | None,
    session_id: int,
) -> UpdateResult:
    return UpdateResult.model_construct(
        job_id=upd.job_id,
        seq=upd.seq,
        outcome=UpdateOutcome.REFUSED,
        code=code,
        reason=reason,
        state=S(row.state) if row is not None else None,
        held=row is not None and row.session_id == session_id,
    )


def release_jobs(engine: Engine, session_id: int, job_ids: list[str], seq: int = 0) -> None:
    """Stop holding ``job_ids`` (e.g. after a killed job's process is gone).

    ``seq`` numbers the release in the session's calls: repeated after the session claimed a
    job again (a later call), it leaves that job held.
    """
    with unit_of_work(engine) as session:
        repo.release(session, session_id, job_ids, seq)

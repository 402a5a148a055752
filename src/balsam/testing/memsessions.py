"""Launcher calls of :class:`~balsam.testing.MemoryBackend`, as :mod:`balsam.services.sessions`.

Leases, claims (one GPU class after another, biggest and longest first), numbered calls that
a repeat finds applied (claims replayed, updates reported as duplicates), and the recovery of
jobs a lost launcher held. Each function is one call on a store the caller has locked.
"""

from __future__ import annotations

import math
from datetime import timedelta

from balsam.domain.states import (
    LAUNCHER_CLAIMABLE_STATES,
    PROCESSING_STATES,
    TERMINAL_STATES,
    JobState,
)
from balsam.errors import InvalidTransition
from balsam.schemas.jobs import (
    JobOut,
    RefusalCode,
    StateUpdate,
    UpdateOutcome,
    UpdateResult,
)
from balsam.schemas.sessions import ClaimRequest, SessionOut
from balsam.testing.memchecks import check_int, check_known, check_text, disagree, stored_json
from balsam.testing.memengine import MemoryStateEngine, bound_lost
from balsam.testing.memstore import JobRecord, SessionRecord, Store, utcnow

S = JobState
#: The request fields the fake acts on; a newer one set to anything but its default is refused.
_CLAIM_FIELDS = frozenset(
    {
        "limit",
        "states",
        "workflows",
        "max_nodes",
        "max_ranks_per_node",
        "cpus_per_node",
        "gpus_per_node",
        "max_wall_time_minutes",
        "serial_only",
        "job_ids",
        "processing_limit",
        "claim_seq",
    }
)
_UPDATE_FIELDS = frozenset(
    {
        "job_id",
        "state",
        "message",
        "return_code",
        "timestamp",
        "release",
        "lost",
        "seq",
        "from_state",
        "outcome",
    }
)


def open_session(
    store: Store,
    label: str,
    hostname: str,
    pid: int,
    client_key: str | None = None,
    batch_job: str | None = None,
) -> SessionOut:
    """Start a lease (in the batch job ``batch_job``); with ``client_key``, a repeat returns
    the same lease."""
    check_text(label, "the session label", 256)
    check_text(batch_job, "the session batch_job", 128)
    check_text(hostname, "the session hostname", 256)
    check_text(client_key, "the session client_key", 64)
    check_int(pid, "pid")
    if client_key:
        for found in store.sessions.values():
            if found.client_key == client_key:
                return SessionOut.model_validate(found)
    store.last_session_id += 1
    record = SessionRecord(
        id=store.last_session_id,
        label=label,
        hostname=hostname,
        pid=pid,
        heartbeat=utcnow(),
        created_at=utcnow(),
        client_key=client_key or None,
        batch_job=batch_job or None,
    )
    store.sessions[record.id] = record
    return SessionOut.model_validate(record)


def heartbeat(store: Store, session_id: int) -> list[str]:
    """Renew the lease; returns ids of held jobs a user killed (or failed) meanwhile."""
    store.session(session_id).heartbeat = utcnow()
    return _ended_held(store, session_id)


def ended_held_jobs(store: Store, session_id: int) -> list[str]:
    """Ids of held jobs a user killed (or failed) meanwhile; the lease is not renewed."""
    store.session(session_id)
    return _ended_held(store, session_id)


def _ended_held(store: Store, session_id: int) -> list[str]:
    return [
        job.job_id
        for job in store.jobs.values()
        if job.session_id == session_id and job.state in TERMINAL_STATES
    ]


def list_sessions(store: Store) -> list[SessionOut]:
    """Every open session, oldest first."""
    return [SessionOut.model_validate(store.sessions[key]) for key in sorted(store.sessions)]


def close_session(store: Store, session_id: int) -> None:
    """End a lease, handing back every job it holds; a lease that is gone: nothing."""
    recover_jobs(store, [session_id], "launcher stopped while the job ran")
    store.sessions.pop(session_id, None)


def expire_sessions(store: Store, lease_seconds: float, dead: list[int] | None = None) -> list[int]:
    """Recover the jobs of leases older than ``lease_seconds`` and of the ``dead`` sessions."""
    cutoff = utcnow() - timedelta(seconds=lease_seconds)
    for session_id in dead or []:
        check_int(session_id, "a dead session id")
    stale = sorted(s.id for s in store.sessions.values() if s.heartbeat < cutoff)
    gone = sorted(s for s in dict.fromkeys(dead or []) if s not in stale and s in store.sessions)
    if stale:
        recover_jobs(store, stale, "launcher lost (lease expired)")
    if gone:
        recover_jobs(store, gone, "launcher lost (its process is gone)")
    for session_id in stale + gone:
        del store.sessions[session_id]
    return stale + gone


def recover_jobs(store: Store, session_ids: list[int], message: str) -> None:
    """Hand back every job the sessions hold; RUNNING ones restart (a lost run) or fail."""
    wanted = set(session_ids)
    held = sorted(
        (job for job in store.jobs.values() if job.session_id in wanted),
        key=lambda job: job.job_id,
    )
    engine = MemoryStateEngine(store)
    for job in held:
        if job.state is S.RUNNING:
            engine.move(job, S.RESTART_READY, message, lost=True)
            bound_lost(engine, job)
        job.session_id = None
    engine.finish()


def claim_jobs(store: Store, session_id: int, req: ClaimRequest) -> list[JobOut]:
    """Hold and return jobs that fit the claimant; a repeated ``claim_seq`` is replayed."""
    check_known(req, _CLAIM_FIELDS)
    store.session(session_id)
    for value, what in (
        (req.claim_seq, "claim_seq"),
        (req.max_nodes, "max_nodes"),
        (req.max_ranks_per_node, "max_ranks_per_node"),
        (req.cpus_per_node, "cpus_per_node"),
        (req.gpus_per_node, "gpus_per_node"),
    ):
        check_int(value, what)
    if req.max_wall_time_minutes is not None and math.isnan(req.max_wall_time_minutes):
        raise disagree("max_wall_time_minutes=nan", "takes nothing", "takes everything")
    if req.claim_seq:
        replayed = _replay_claim(store, session_id, req.claim_seq)
        if replayed:
            return [store.out(job) for job in replayed]
    jobs = _runnable(store, req) if req.limit else []
    if req.processing_limit:
        jobs += _processing(store, req)
    for job in jobs:
        job.session_id = session_id
        job.update_session = session_id if req.claim_seq else None
        job.update_seq = req.claim_seq or None
    return [store.out(job) for job in jobs]


def _replay_claim(store: Store, session_id: int, claim_seq: int) -> list[JobRecord]:
    """The jobs the claim numbered ``claim_seq`` took, if it was made before."""
    found = [
        job
        for job in store.jobs.values()
        if job.session_id == session_id
        and job.update_session == session_id
        and job.update_seq == claim_seq
    ]
    return sorted(found, key=lambda job: job.created_at)


def _wanted(job: JobRecord, req: ClaimRequest) -> bool:
    """Whether ``job`` passes the request's id and workflow filters."""
    if req.job_ids and job.job_id not in req.job_ids:
        return False
    return not req.workflows or job.workflow in req.workflows


def _runnable(store: Store, req: ClaimRequest) -> list[JobRecord]:
    """Unheld claimable jobs that fit, most GPUs first, then biggest, longest, oldest.

    The SQL backend asks one GPU class at a time (``gpus_per_node`` down to 0); with the
    classes in descending order that takes exactly the first ``limit`` of this one sort.
    """
    max_nodes = 1 if req.serial_only else req.max_nodes
    found = [
        job
        for job in store.jobs.values()
        if job.session_id is None
        and job.state in LAUNCHER_CLAIMABLE_STATES
        and (not req.states or job.state in req.states)
        and job.num_nodes <= max_nodes
        and (req.gpus_per_node is None or job.gpus_needed <= req.gpus_per_node)
        and (req.cpus_per_node is None or job.cpus_needed <= req.cpus_per_node)
        and (req.max_ranks_per_node is None or job.ranks_per_node <= req.max_ranks_per_node)
        and (
            req.max_wall_time_minutes is None or job.wall_time_minutes <= req.max_wall_time_minutes
        )
        and _wanted(job, req)
    ]
    found.sort(key=lambda j: (-j.gpus_needed, -j.num_nodes, -j.wall_time_minutes, j.created_at))
    return found[: req.limit]


def _processing(store: Store, req: ClaimRequest) -> list[JobRecord]:
    """Unheld jobs waiting in a processing state for a launcher's step, oldest first."""
    found = [
        job
        for job in store.jobs.values()
        if job.session_id is None and job.state in PROCESSING_STATES and _wanted(job, req)
    ]
    found.sort(key=lambda job: job.created_at)
    return found[: req.processing_limit]


def record_updates(store: Store, session_id: int, updates: list[StateUpdate]) -> list[UpdateResult]:
    """Apply a launcher's buffered state changes; one result per update, in order."""
    for upd in updates:
        check_known(upd, _UPDATE_FIELDS)
        check_text(upd.message, "a state update's message")
        check_int(upd.return_code, "return_code")
        check_int(upd.seq, "seq")
    engine = MemoryStateEngine(store)
    results = [_apply(engine, store.jobs.get(u.job_id), session_id, u) for u in updates]
    engine.finish()
    return results


def _apply(
    engine: MemoryStateEngine, job: JobRecord | None, session_id: int, upd: StateUpdate
) -> UpdateResult:
    """Apply one update to its job, or say why not."""
    if job is None:
        return _refused(upd, RefusalCode.NOT_FOUND, "no such job (deleted?)", None, session_id)
    if upd.seq and job.update_session == session_id and (job.update_seq or 0) >= upd.seq:
        return _result(upd, UpdateOutcome.DUPLICATE, job, session_id)
    if job.session_id != session_id:
        return _refused(upd, RefusalCode.NOT_HELD, "not held by this launcher", job, session_id)
    if upd.from_state is not None and job.state != upd.from_state:
        why = f"the job moved from {upd.from_state} to {job.state} meanwhile"
        return _refused(upd, RefusalCode.STATE_CHANGED, why, job, session_id)
    try:
        engine.move(
            job,
            upd.state,
            upd.message,
            when=upd.timestamp,
            keep_hold=not upd.release,
            lost=upd.lost,
        )
        if upd.lost:
            bound_lost(engine, job)
    except InvalidTransition as exc:
        return _refused(upd, RefusalCode.INVALID_TRANSITION, str(exc), job, session_id)
    if upd.return_code is not None:
        job.return_code = upd.return_code
    if upd.outcome is not None:
        # With the state, in the same call: {} clears it (a new run starts).
        job.function_outcome = stored_json(upd.outcome, "outcome") if upd.outcome else None
    if upd.release:
        job.session_id = None
    if upd.seq:
        job.update_session, job.update_seq = session_id, upd.seq
    return _result(upd, UpdateOutcome.APPLIED, job, session_id)


def _result(
    upd: StateUpdate, outcome: UpdateOutcome, job: JobRecord, session_id: int
) -> UpdateResult:
    return UpdateResult(
        job_id=upd.job_id,
        seq=upd.seq,
        outcome=outcome,
        state=job.state,
        held=job.session_id == session_id,
    )


def _refused(
    upd: StateUpdate, code: RefusalCode, reason: str, job: JobRecord | None, session_id: int
) -> UpdateResult:
    return UpdateResult(
        job_id=upd.job_id,
        seq=upd.seq,
        outcome=UpdateOutcome.REFUSED,
        code=code,
        reason=reason,
        state=job.state if job is not None else None,
        held=job is not None and job.session_id == session_id,
    )


def release_jobs(store: Store, session_id: int, job_ids: list[str], seq: int = 0) -> None:
    """Stop holding ``job_ids``; with ``seq``, a job claimed or updated since keeps its hold."""
    check_int(seq, "seq")
    for job_id in job_ids:
        job = store.jobs.get(job_id)
        if job is not None and job.session_id == session_id and _released_by(job, session_id, seq):
            job.session_id = None


def _released_by(job: JobRecord, session_id: int, seq: int) -> bool:
    """Whether the release numbered ``seq`` is not older than the session's last call on it."""
    if not seq or job.update_session != session_id or job.update_seq is None:
        return True
    return job.update_seq <= seq

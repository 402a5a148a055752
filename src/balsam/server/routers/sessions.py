"""Launcher sessions: leases, claims and updates (submitters; viewers may list them)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from balsam.schemas.jobs import JobOut, StateUpdate, UpdateResult
from balsam.schemas.remote import ExpireRequest, RecordAndClaim, Release, SessionOpen
from balsam.schemas.sessions import ClaimRequest, RecordedAndClaimed, SessionOut
from balsam.server.deps import Submitter, Viewer, check_items
from balsam.server.responses import DB_ROUTE

router = APIRouter(prefix="/db/{name}", tags=["sessions"], responses=DB_ROUTE)


@router.post("/sessions", response_model=SessionOut)
def open_session(backend: Submitter, body: SessionOpen) -> SessionOut:
    """Start a launcher lease (the same again for a repeated client key)."""
    return backend.open_session(
        body.label, body.hostname, body.pid, body.client_key, body.batch_job
    )


@router.get("/sessions", response_model=list[SessionOut])
def list_sessions(backend: Viewer) -> list[SessionOut]:
    """Every open launcher session."""
    return backend.list_sessions()


@router.post("/sessions/expire", response_model=list[int])
def expire_sessions(backend: Submitter, body: ExpireRequest) -> list[int]:
    """Recover the jobs of expired (and of dead) leases."""
    return backend.expire_sessions(body.lease_seconds, body.dead)


@router.post("/sessions/{session_id}/heartbeat", response_model=list[str])
def heartbeat(backend: Submitter, session_id: int) -> list[str]:
    """Renew a lease; held job ids a user killed."""
    return backend.heartbeat(session_id)


@router.post("/sessions/{session_id}/close", response_model=None)
def close_session(backend: Submitter, session_id: int) -> None:
    """End a lease, handing back held jobs."""
    backend.close_session(session_id)


@router.get("/sessions/{session_id}/ended-held-jobs", response_model=list[str])
def ended_held_jobs(backend: Viewer, session_id: int) -> list[str]:
    """Held job ids a user killed meanwhile (read-only)."""
    return backend.ended_held_jobs(session_id)


@router.post("/sessions/{session_id}/claim", response_model=list[JobOut])
def claim_jobs(backend: Submitter, session_id: int, body: ClaimRequest) -> list[JobOut]:
    """Hold and return jobs that fit the launcher."""
    return backend.claim_jobs(session_id, body)


@router.post("/sessions/{session_id}/updates", response_model=list[UpdateResult])
def record_updates(
    backend: Submitter, request: Request, session_id: int, updates: list[StateUpdate]
) -> list[UpdateResult]:
    """Apply buffered state changes; one result per update."""
    check_items(request, len(updates))
    return backend.record_updates(session_id, updates)


@router.post("/sessions/{session_id}/record-and-claim", response_model=RecordedAndClaimed)
def record_and_claim(
    backend: Submitter, request: Request, session_id: int, body: RecordAndClaim
) -> RecordedAndClaimed:
    """Updates then a claim, in one transaction."""
    check_items(request, len(body.updates))
    return backend.record_and_claim(session_id, body.updates, body.request)


@router.post("/sessions/{session_id}/release", response_model=None)
def release_jobs(backend: Submitter, request: Request, session_id: int, body: Release) -> None:
    """Stop holding jobs."""
    check_items(request, len(body.job_ids))
    backend.release_jobs(session_id, body.job_ids, body.seq)

"""Service locks (owners; viewers may read one) and the change signal (viewers)."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, Request

from balsam.schemas.remote import LockAcquire, LockHolder, LockRenew
from balsam.schemas.service import ServiceLockOut
from balsam.server.deps import Owner, Viewer, server_state, wait_limiter
from balsam.server.responses import DB_ROUTE

router = APIRouter(prefix="/db/{name}", tags=["service"], responses=DB_ROUTE)


@router.post("/service-locks/{lock}/acquire", response_model=ServiceLockOut)
def acquire_service_lock(backend: Owner, lock: str, body: LockAcquire) -> ServiceLockOut:
    """Take the lock if free, expired or held by ``take_from``."""
    return backend.acquire_service_lock(
        lock,
        body.holder,
        hostname=body.hostname,
        pid=body.pid,
        lease_seconds=body.lease_seconds,
        take_from=body.take_from,
    )


@router.post("/service-locks/{lock}/renew", response_model=ServiceLockOut)
def renew_service_lock(backend: Owner, lock: str, body: LockRenew) -> ServiceLockOut:
    """Extend the holder's lock and store its report."""
    return backend.renew_service_lock(
        lock, body.holder, lease_seconds=body.lease_seconds, status=body.status
    )


@router.post("/service-locks/{lock}/release", response_model=None)
def release_service_lock(backend: Owner, lock: str, body: LockHolder) -> None:
    """Give the lock up."""
    backend.release_service_lock(lock, body.holder)


@router.get("/service-locks/{lock}", response_model=ServiceLockOut | None)
def get_service_lock(backend: Viewer, lock: str) -> ServiceLockOut | None:
    """The lock, null when nobody holds it."""
    return backend.get_service_lock(lock)


@router.post("/service-locks/{lock}/stop", response_model=ServiceLockOut | None)
def request_service_stop(backend: Owner, lock: str) -> ServiceLockOut | None:
    """Ask the holder to stop."""
    return backend.request_service_stop(lock)


@router.get("/changes/marker", response_model=int)
def change_marker(backend: Viewer) -> int:
    """The id of the newest job event."""
    return backend.change_marker()


@router.get("/changes/wait", response_model=int)
async def wait_for_change(
    backend: Viewer,
    request: Request,
    after: int,
    timeout: Annotated[float, Query(ge=0, allow_inf_nan=False)] = 0.0,
) -> int:
    """Long-poll until the marker differs from ``after``, at most the server's cap; when the
    server has ``max_waiters`` waiting already, the marker now (the caller polls again)."""
    state = server_state(request)
    limiter = wait_limiter(state)
    if limiter.available_tokens < 1:
        return await anyio.to_thread.run_sync(backend.change_marker)
    wait = min(timeout, state.limits.max_wait_seconds)
    return await anyio.to_thread.run_sync(backend.wait_for_change, after, wait, limiter=limiter)

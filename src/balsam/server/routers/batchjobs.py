"""Launcher batch jobs: submitters record and update them, viewers read them."""

from __future__ import annotations

from fastapi import APIRouter

from balsam.schemas.batchjobs import BatchJobCreate, BatchJobEventOut, BatchJobOut, BatchJobUpdate
from balsam.schemas.remote import BatchJobFilter
from balsam.server.deps import Submitter, Viewer
from balsam.server.responses import CONFLICT, DB_ROUTE

router = APIRouter(prefix="/db/{name}", tags=["batch jobs"], responses=DB_ROUTE)


@router.post("/batch-jobs", response_model=BatchJobOut, responses=CONFLICT)
def create_batch_job(backend: Submitter, spec: BatchJobCreate) -> BatchJobOut:
    """Record a batch job (the same row for a repeated client key)."""
    return backend.create_batch_job(spec)


@router.post("/batch-jobs/list", response_model=list[BatchJobOut])
def list_batch_jobs(backend: Viewer, body: BatchJobFilter) -> list[BatchJobOut]:
    """Batch jobs, oldest first."""
    return backend.list_batch_jobs(body.states)


@router.get("/batch-jobs/{batch_id}", response_model=BatchJobOut)
def get_batch_job(backend: Viewer, batch_id: int) -> BatchJobOut:
    """One batch job."""
    return backend.get_batch_job(batch_id)


@router.patch("/batch-jobs/{batch_id}", response_model=BatchJobOut)
def update_batch_job(backend: Submitter, batch_id: int, changes: BatchJobUpdate) -> BatchJobOut:
    """Change a batch job's set fields."""
    return backend.update_batch_job(batch_id, changes)


@router.get("/batch-jobs/{batch_id}/history", response_model=list[BatchJobEventOut])
def batch_job_history(backend: Viewer, batch_id: int) -> list[BatchJobEventOut]:
    """The states a batch job entered, oldest first."""
    return backend.batch_job_history(batch_id)

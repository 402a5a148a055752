"""Pydantic models shared by every entry point: inputs, outputs and queries."""

from balsam.schemas.apps import AppCreate, AppOut, AppUpdate
from balsam.schemas.batchjobs import BatchJobCreate, BatchJobOut, BatchJobUpdate
from balsam.schemas.jobs import (
    BulkCreated,
    EventOut,
    JobCreate,
    JobOut,
    JobUpdate,
    RefusalCode,
    StateUpdate,
    UpdateOutcome,
    UpdateResult,
)
from balsam.schemas.queries import Clause, Condition, JobQuery, Lookup
from balsam.schemas.sessions import ClaimRequest, SessionOut

__all__ = [
    "AppCreate",
    "AppOut",
    "AppUpdate",
    "BatchJobCreate",
    "BatchJobOut",
    "BatchJobUpdate",
    "BulkCreated",
    "ClaimRequest",
    "Clause",
    "Condition",
    "EventOut",
    "JobCreate",
    "JobOut",
    "JobQuery",
    "JobUpdate",
    "Lookup",
    "RefusalCode",
    "SessionOut",
    "StateUpdate",
    "UpdateOutcome",
    "UpdateResult",
]

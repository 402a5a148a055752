"""Pydantic models shared by every entry point: inputs, outputs and queries."""

from balsam.schemas.apps import AppCreate, AppOut, AppUpdate
from balsam.schemas.batchjobs import BatchJobCreate, BatchJobOut, BatchJobUpdate
from balsam.schemas.jobs import (
    BulkCreated,
    EventOut,
    EventPage,
    JobCreate,
    JobOut,
    JobUpdate,
    RefusalCode,
    StateUpdate,
    StreamEvent,
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
    "EventPage",
    "JobCreate",
    "JobOut",
    "JobQuery",
    "JobUpdate",
    "Lookup",
    "RefusalCode",
    "SessionOut",
    "StateUpdate",
    "StreamEvent",
    "UpdateOutcome",
    "UpdateResult",
]

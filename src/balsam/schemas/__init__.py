"""Pydantic models shared by every entry point: inputs, outputs and queries."""

from balsam.schemas.apps import AppCreate, AppOut, AppUpdate
from balsam.schemas.jobs import EventOut, JobCreate, JobOut, JobUpdate, StateUpdate
from balsam.schemas.queries import Clause, Condition, JobQuery, Lookup
from balsam.schemas.sessions import ClaimRequest, SessionOut

__all__ = [
    "AppCreate",
    "AppOut",
    "AppUpdate",
    "ClaimRequest",
    "Clause",
    "Condition",
    "EventOut",
    "JobCreate",
    "JobOut",
    "JobQuery",
    "JobUpdate",
    "Lookup",
    "SessionOut",
    "StateUpdate",
]

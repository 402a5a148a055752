"""Launcher batch jobs: what `balsam submit-launch` records and `balsam ls queues` shows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from balsam.domain.batchjobs import BatchJobState


class BatchJobCreate(BaseModel):
    """A batch job about to be submitted (state ``submitting`` until the scheduler answers).

    ``client_key`` (chosen by the caller) makes a repeated create return the row the first one
    made, as ``JobCreate.job_id`` does for jobs.
    """

    model_config = ConfigDict(extra="forbid")

    scheduler: str = Field(min_length=1, max_length=32)
    project: str = Field(default="", max_length=256)
    queue: str = Field(default="", max_length=256)
    num_nodes: int = Field(ge=1, le=2**31 - 1)
    wall_time_minutes: float = Field(gt=0, allow_inf_nan=False)
    job_mode: str = Field(max_length=16)
    wf_filter: str | None = Field(default=None, max_length=256)
    state: BatchJobState = BatchJobState.SUBMITTING
    status_message: str = ""
    scheduler_id: str | None = Field(default=None, max_length=128)
    script: str | None = None
    client_key: str | None = Field(default=None, min_length=1, max_length=64)


class BatchJobUpdate(BaseModel):
    """Changes to a batch job's row; fields left unset are kept."""

    model_config = ConfigDict(extra="forbid")

    scheduler_id: str | None = Field(default=None, max_length=128)
    state: BatchJobState | None = None
    status_message: str | None = None
    script: str | None = None


class BatchJobOut(BaseModel):
    """A recorded launcher batch job."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    scheduler: str
    scheduler_id: str | None
    project: str
    queue: str
    num_nodes: int
    wall_time_minutes: float
    job_mode: str
    wf_filter: str | None
    state: BatchJobState
    status_message: str
    script: str | None
    client_key: str | None
    created_at: datetime
    updated_at: datetime


class BatchJobEventOut(BaseModel):
    """One state a batch job entered, and why (``from_state`` is empty for the first)."""

    model_config = ConfigDict(from_attributes=True)

    batch_job_id: int
    timestamp: datetime
    from_state: str
    to_state: str
    message: str

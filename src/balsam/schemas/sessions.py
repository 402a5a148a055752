"""Launcher sessions (leases) and claims."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class SessionOut(BaseModel):
    """A launcher's lease on the jobs it holds."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    label: str
    hostname: str
    pid: int
    heartbeat: datetime
    created_at: datetime


class ClaimRequest(BaseModel):
    """What a launcher asks for: up to ``limit`` jobs it can run."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=1)
    workflows: list[str] = Field(default_factory=list)
    max_nodes: int = Field(default=1, ge=1)
    max_wall_time_minutes: float | None = None
    serial_only: bool = False
    job_ids: list[str] = Field(default_factory=list)

"""Launcher sessions (leases) and claims."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from balsam.domain.states import JobState
from balsam.schemas.jobs import JobOut, UpdateResult


class SessionOut(BaseModel):
    """A launcher's lease on the jobs it holds."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    label: str
    hostname: str
    pid: int
    heartbeat: datetime
    created_at: datetime
    #: The scheduler's id of the batch job the launcher runs in (None: not in one).
    batch_job: str | None = None


class ClaimRequest(BaseModel):
    """What a launcher asks for: up to ``limit`` jobs that fit its allocation.

    The database hands out only jobs that fit: at most ``max_nodes`` nodes (one with
    ``serial_only``), at most ``cpus_per_node`` CPUs and ``gpus_per_node`` GPUs on each and
    ``max_ranks_per_node`` ranks (None: not checked), and ``wall_time_minutes`` within
    ``max_wall_time_minutes``. With
    ``processing_limit``, up to that many more jobs left unheld in a processing state
    (RUN_DONE, RUN_ERROR or RUN_TIMEOUT with a handler, POSTPROCESSED with a stage-out to do),
    whatever their size: their steps run on the launcher's host.

    ``states`` narrows the runnable states handed out (empty: every one a launcher may take,
    READY, STAGED_IN, PREPROCESSED, RESTART_READY): a launcher that leaves staging and
    preprocessing to the service asks for PREPROCESSED and RESTART_READY only.

    ``claim_seq`` (a number from the session's call counter, see StateUpdate) makes a
    repeated claim return the jobs the first one took, rather than take more.
    """

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=0)
    workflows: list[str] = Field(default_factory=list)
    max_nodes: int = Field(default=1, ge=1)
    #: At most this many ranks per node (1: the launcher has no MPI to start more).
    max_ranks_per_node: int | None = Field(default=None, ge=1)
    cpus_per_node: int | None = Field(default=None, ge=1)
    gpus_per_node: int | None = Field(default=None, ge=0)
    max_wall_time_minutes: float | None = None
    serial_only: bool = False
    job_ids: list[str] = Field(default_factory=list)
    processing_limit: int = Field(default=0, ge=0)
    states: list[JobState] = Field(default_factory=list)
    claim_seq: int = Field(default=0, ge=0)


class RecordedAndClaimed(BaseModel):
    """The answer to ``record_and_claim``: one result per update, in order, then the jobs the
    claim took (after the updates, so children they freed can be among them)."""

    results: list[UpdateResult] = Field(default_factory=list)
    jobs: list[JobOut] = Field(default_factory=list)

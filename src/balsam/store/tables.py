"""Tables of the workflow database (SQLAlchemy 2.0 declarative).

Parents are an edge table; every state change appends an ``events`` row. Indexes serve the
hot queries: claiming runnable jobs (state, workflow), counting by state, finding children.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: Rows a launcher may claim to run (staging in and preprocessing them first if need be).
#: Used verbatim (literal SQL, not bound parameters) by both the partial index and the claim
#: query, so SQLite's and PostgreSQL's planners can match them.
CLAIMABLE_PREDICATE = (
    "session_id IS NULL AND state IN ('PREPROCESSED', 'READY', 'RESTART_READY', 'STAGED_IN')"
)
#: Rows held by nobody in a state that still needs a launcher's step (a postprocess, an error
#: or timeout handler, a stage-out): left by a launcher that died or stopped mid-way. A job
#: with nothing left to do in these states was fast-forwarded, so every such row has work.
PROCESSING_PREDICATE = (
    "session_id IS NULL AND state IN ('POSTPROCESSED', 'RUN_DONE', 'RUN_ERROR', 'RUN_TIMEOUT')"
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (Alembic needs them)."""

    metadata = MetaData(naming_convention=NAMING)


class AppRow(Base):
    """A registered application."""

    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    executable: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    preprocess: Mapped[str] = mapped_column(Text, default="")
    postprocess: Mapped[str] = mapped_column(Text, default="")
    envscript: Mapped[str] = mapped_column(Text, default="")
    #: The container image the app's runs go in ("" = on the host); see docs/containers.md.
    container: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: The Python function the app's jobs call, ``module:function`` ("" = an executable app,
    #: whose ``executable`` column then holds a placeholder for older launchers; see
    #: balsam.schemas.apps.FUNCTION_APP_EXECUTABLE and docs/functions.md).
    function: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: The interpreter that calls it ("" = the launcher's own Python).
    python: Mapped[str] = mapped_column(Text, default="", server_default="")


class SessionRow(Base):
    """A launcher's lease; jobs it holds point at it.

    A session that ends (closed, or expired by peers) keeps its row, marked ``ended_at``: its id
    is never given to another launcher (SQLite would reuse the highest id of a deleted row),
    so a launcher whose lease expired can never act under someone else's session.
    """

    __tablename__ = "sessions"
    __table_args__ = (Index("uq_sessions_client_key", "client_key", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label: Mapped[str] = mapped_column(String(256), default="")
    hostname: Mapped[str] = mapped_column(String(256), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Chosen by the launcher: opening a session twice with one key opens it once.
    client_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: When the session ended (None while it is open).
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The scheduler's id of the batch job the launcher runs in (None: not in one).
    batch_job: Mapped[str | None] = mapped_column(String(128), nullable=True)


class BatchJobRow(Base):
    """A launcher batch job, written before it is submitted (see balsam.domain.batchjobs)."""

    __tablename__ = "batch_jobs"
    __table_args__ = (
        Index("ix_batch_jobs_state", "state"),
        Index("uq_batch_jobs_client_key", "client_key", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scheduler: Mapped[str] = mapped_column(String(32))
    scheduler_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    project: Mapped[str] = mapped_column(String(256), default="")
    queue: Mapped[str] = mapped_column(String(256), default="")
    num_nodes: Mapped[int] = mapped_column(Integer)
    wall_time_minutes: Mapped[float] = mapped_column(Float)
    job_mode: Mapped[str] = mapped_column(String(16))
    wf_filter: Mapped[str | None] = mapped_column(String(256), nullable=True)
    state: Mapped[str] = mapped_column(String(32))
    status_message: Mapped[str] = mapped_column(Text, default="")
    script: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Chosen by the submitter: creating the row twice with one key creates it once.
    client_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BatchJobEventRow(Base):
    """One state a launcher batch job entered, and why."""

    __tablename__ = "batch_job_events"
    __table_args__ = (Index("ix_batch_job_events_batch_job_id_id", "batch_job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_job_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("batch_jobs.id", ondelete="CASCADE")
    )
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")


class ServiceLockRow(Base):
    """Who runs the service of this database, until when (see balsam.services.service_lock)."""

    __tablename__ = "service_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    hostname: Mapped[str] = mapped_column(String(256), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(Text, default="")


#: Claim order inside one GPU class: biggest (nodes), longest, oldest first.
_CLAIM_ORDER = (
    text("gpus_needed DESC"),
    text("num_nodes DESC"),
    text("wall_time_minutes DESC"),
    "created_at",
)


class JobRow(Base):
    """One run of an app."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_workflow", "state", "workflow"),
        Index("ix_jobs_workflow_name", "workflow", "name"),
        Index("ix_jobs_session_id", "session_id"),
        # The listing order (oldest first; job_id breaks ties, sorted within one created_at):
        # a page of `balsam ls`, and each keyset page after it, starts where it should in
        # this index instead of sorting every job. created_at alone, not with job_id: new
        # jobs land at its end (their time only grows), where random ids would land anywhere
        # and slow every bulk create as the primary key already does.
        Index("ix_jobs_created_at", "created_at"),
        # Claims scan one of these in claim order, one GPU class at a time (an equality on
        # gpus_needed, then a range on num_nodes), and stop after `limit` rows, so their cost
        # does not grow with the table: the first for any workflow, the second for one.
        Index(
            "ix_jobs_claim_run",
            *_CLAIM_ORDER,
            sqlite_where=text(CLAIMABLE_PREDICATE),
            postgresql_where=text(CLAIMABLE_PREDICATE),
        ),
        Index(
            "ix_jobs_claim_run_wf",
            "workflow",
            *_CLAIM_ORDER,
            sqlite_where=text(CLAIMABLE_PREDICATE),
            postgresql_where=text(CLAIMABLE_PREDICATE),
        ),
        # Holds only the unheld jobs of the processing states: small whatever the table.
        Index(
            "ix_jobs_claim_processing",
            "created_at",
            sqlite_where=text(PROCESSING_PREDICATE),
            postgresql_where=text(PROCESSING_PREDICATE),
        ),
    )

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    workflow: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    application: Mapped[str] = mapped_column(
        String(128), ForeignKey("apps.name", ondelete="RESTRICT", onupdate="CASCADE")
    )
    args: Mapped[str] = mapped_column(Text, default="")
    num_nodes: Mapped[int] = mapped_column(Integer, default=1)
    ranks_per_node: Mapped[int] = mapped_column(Integer, default=1)
    threads_per_rank: Mapped[int] = mapped_column(Integer, default=1)
    threads_per_core: Mapped[int] = mapped_column(Integer, default=1)
    gpus_per_rank: Mapped[int] = mapped_column(Integer, default=0)
    cpu_affinity: Mapped[str] = mapped_column(String(16), default="none")
    node_packing_count: Mapped[int] = mapped_column(Integer, default=1)
    wall_time_minutes: Mapped[int] = mapped_column(Integer, default=1)
    environ_vars: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    mpi_flags: Mapped[str] = mapped_column(Text, default="")
    input_files: Mapped[str] = mapped_column(Text, default="*")
    stage_in_url: Mapped[str] = mapped_column(Text, default="")
    stage_out_files: Mapped[str] = mapped_column(Text, default="")
    stage_out_url: Mapped[str] = mapped_column(Text, default="")
    post_error_handler: Mapped[bool] = mapped_column(Boolean, default=False)
    post_timeout_handler: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_timeout_retry: Mapped[bool] = mapped_column(Boolean, default=True)
    wait_for_parents: Mapped[bool] = mapped_column(Boolean, default=True)
    max_error_retries: Mapped[int] = mapped_column(Integer, default=0)
    max_timeout_retries: Mapped[int] = mapped_column(Integer, default=3)
    max_lost_retries: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(32))
    state_timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    working_directory: Mapped[str] = mapped_column(Text, default="")
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    timeout_count: Mapped[int] = mapped_column(Integer, default=0)
    lost_count: Mapped[int] = mapped_column(Integer, default=0)
    return_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    session_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("sessions.id", ondelete="SET NULL"), nullable=True
    )
    #: What one node must have for the job (from its resource fields, kept with them).
    cpus_needed: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    gpus_needed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The session and sequence number of the last launcher call (claim or state update)
    #: applied to the job: a repeat of that call is a duplicate, reported and not reapplied.
    update_session: Mapped[int | None] = mapped_column(Integer, nullable=True)
    update_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: A function app's call (a JSON list and a JSON object; NULL: none) and what its last
    #: run returned or raised (docs/functions.md). None is SQL NULL, not JSON null.
    function_args: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    function_kwargs: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )
    function_outcome: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )
    #: The edge-service user whose token created the job (NULL: made on the database
    #: directly, not through a server). A submitter changes only the jobs it made.
    created_by: Mapped[str | None] = mapped_column(String(256), nullable=True)


class JobParentRow(Base):
    """Dependency edge: ``child_id`` waits for ``parent_id``."""

    __tablename__ = "job_parents"
    __table_args__ = (Index("ix_job_parents_child_id", "child_id"),)

    parent_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True
    )
    child_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True
    )


class EventRow(Base):
    """One state change of one job."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.job_id", ondelete="CASCADE"))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")


#: The tables behind the rows, for Core statements on the hot paths (no ORM bookkeeping).
JOBS = cast(Table, JobRow.__table__)
EVENTS = cast(Table, EventRow.__table__)
JOB_PARENTS = cast(Table, JobParentRow.__table__)

"""The tables of :class:`~balsam.testing.MemoryBackend`: jobs, edges, history, apps, sessions.

A :class:`JobRecord` has exactly the columns of the SQL ``jobs`` table, under the same names,
so a query names the same fields on both. Records never leave the store: callers get fresh
pydantic models (:meth:`Store.out`) whose dicts and lists are copies.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from balsam.domain.states import JobState
from balsam.errors import NotFound
from balsam.schemas.apps import AppOut
from balsam.schemas.batchjobs import BatchJobEventOut, BatchJobOut
from balsam.schemas.jobs import STORED, EventOut, JobCreate, JobOut
from balsam.schemas.service import ServiceLockOut

#: The stored fields a JobOut shows (everything but its parents, which are edges).
OUT_FIELDS = tuple(name for name in JobOut.model_fields if name != "parents")
#: Fields holding JSON documents (copied on the way in and out).
JSON_FIELDS = ("environ_vars", "data", "tags")
#: A function job's call: JSON documents too, or None (SQL NULL) for none.
CALL_FIELDS = ("function_args", "function_kwargs")
#: The JSON fields that may be None.
NULLABLE_JSON_FIELDS = (*CALL_FIELDS, "function_outcome")


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def as_utc(when: datetime) -> datetime:
    """``when`` as the SQL column stores it: aware, in UTC (naive times are taken as UTC)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@dataclass(slots=True)
class JobRecord:
    """One stored job: the columns of the SQL ``jobs`` table."""

    job_id: str
    name: str
    workflow: str
    description: str
    application: str
    args: str
    num_nodes: int
    ranks_per_node: int
    threads_per_rank: int
    threads_per_core: int
    gpus_per_rank: int
    cpu_affinity: str
    node_packing_count: int
    wall_time_minutes: int
    environ_vars: dict[str, str]
    mpi_flags: str
    input_files: str
    stage_in_url: str
    stage_out_files: str
    stage_out_url: str
    post_error_handler: bool
    post_timeout_handler: bool
    auto_timeout_retry: bool
    wait_for_parents: bool
    max_error_retries: int
    max_timeout_retries: int
    max_lost_retries: int
    data: dict[str, Any]
    tags: dict[str, str]
    state: JobState
    state_timestamp: datetime
    created_at: datetime
    working_directory: str
    cpus_needed: int
    gpus_needed: int
    error_count: int = 0
    timeout_count: int = 0
    lost_count: int = 0
    return_code: int | None = None
    session_id: int | None = None
    update_session: int | None = None
    update_seq: int | None = None
    function_args: list[Any] | None = None
    function_kwargs: dict[str, Any] | None = None
    function_outcome: dict[str, Any] | None = None
    created_by: str | None = None


@dataclass(slots=True)
class SessionRecord:
    """One launcher lease: the columns of the SQL ``sessions`` table."""

    id: int
    label: str
    hostname: str
    pid: int
    heartbeat: datetime
    created_at: datetime
    client_key: str | None
    #: The scheduler's id of the batch job the launcher runs in.
    batch_job: str | None = None
    #: Always None here: an ended session's record is removed (its id, from a counter, is
    #: never given out again, which is what the SQL table keeps its ended rows for).
    ended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One state change (or note) of one job."""

    timestamp: datetime
    from_state: str
    to_state: str
    message: str
    #: The position in the event log (given by :meth:`Store.append_event`).
    id: int = 0


@dataclass
class Store:
    """Every table, in insertion order (which is also SQLite's order for unordered reads)."""

    apps: dict[str, AppOut] = field(default_factory=dict)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    #: child id -> parent ids, and parent id -> child ids, each in the order the edges came.
    parents: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    events: dict[str, list[EventRecord]] = field(default_factory=dict)
    sessions: dict[int, SessionRecord] = field(default_factory=dict)
    #: Launcher batch jobs by id (the rows of ``batch_jobs``, as their output models).
    batch_jobs: dict[int, BatchJobOut] = field(default_factory=dict)
    #: The history of each batch job (the rows of ``batch_job_events``).
    batch_job_events: dict[int, list[BatchJobEventOut]] = field(default_factory=dict)
    #: Service locks by name (the rows of ``service_locks``).
    service_locks: dict[str, ServiceLockOut] = field(default_factory=dict)
    #: Ids are never reused (PostgreSQL's sequences; SQLite reuses the highest after a delete).
    last_app_id: int = 0
    last_session_id: int = 0
    last_batch_job_id: int = 0
    #: The id of the newest job event (the change marker).
    last_event_id: int = 0
    #: Every job event by id, ascending (the order ``events_since`` reads them in).
    event_log: dict[int, tuple[str, EventRecord]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A job field added to the schemas but not to JobRecord: say so now, not mid-test.
        missing = (set(OUT_FIELDS) | set(JobCreate.model_fields)) - {
            f.name for f in fields(JobRecord)
        }
        # Parents are edges; user_workdir is stored as the job's working_directory.
        missing -= {"parents", "user_workdir"}
        if missing:
            raise NotImplementedError(
                f"MemoryBackend does not store job field(s) {', '.join(sorted(missing))} yet"
            )

    def job(self, job_id: str) -> JobRecord:
        """The job ``job_id`` (NotFound)."""
        found = self.jobs.get(job_id)
        if found is None:
            raise NotFound(f"no job with id {job_id!r}")
        return found

    def session(self, session_id: int) -> SessionRecord:
        """The open session ``session_id`` (NotFound: it expired or was closed)."""
        found = self.sessions.get(session_id)
        if found is None:
            raise NotFound(f"launcher session {session_id} has expired")
        return found

    def app(self, name: str) -> AppOut:
        """The app named ``name`` (NotFound)."""
        found = self.apps.get(name)
        if found is None:
            raise NotFound(f"no application named {name!r}")
        return found

    def parent_states(self, child_id: str) -> list[str]:
        """States of every parent of ``child_id``."""
        return [self.jobs[p].state.value for p in self.parents.get(child_id, [])]

    def child_ids(self, parent_id: str) -> list[str]:
        """Ids of the jobs that depend on ``parent_id`` (by id, as SQLite's key gives them)."""
        return sorted(self.children.get(parent_id, []))

    def add_edge(self, parent_id: str, child_id: str) -> None:
        """Make ``child_id`` depend on ``parent_id``."""
        self.parents.setdefault(child_id, []).append(parent_id)
        self.children.setdefault(parent_id, []).append(child_id)

    def add_event(self, job_id: str, old: str, new: str, message: str, when: datetime) -> None:
        """Append one row to a job's history."""
        self.append_event(job_id, EventRecord(when, str(old), str(new), message))

    def append_event(self, job_id: str, event: EventRecord) -> None:
        """Append ``event`` to a job's history under the next event id."""
        self.last_event_id += 1
        numbered = replace(event, id=self.last_event_id)
        self.events.setdefault(job_id, []).append(numbered)
        self.event_log[numbered.id] = (job_id, numbered)

    def insert_job(self, job: JobRecord) -> None:
        """Add a new job (its edges and events are added separately)."""
        self.jobs[job.job_id] = job

    def remove_job(self, job_id: str) -> None:
        """Delete a job with its history and every edge that touches it."""
        del self.jobs[job_id]
        for event in self.events.pop(job_id, []):
            del self.event_log[event.id]
        for parent in self.parents.pop(job_id, []):
            self.children[parent].remove(job_id)
        for child in self.children.pop(job_id, []):
            self.parents[child].remove(job_id)

    def out(self, job: JobRecord) -> JobOut:
        """A fresh output model of ``job`` that shares nothing mutable with the store."""
        values = {name: getattr(job, name) for name in OUT_FIELDS}
        for name in (*JSON_FIELDS, *NULLABLE_JSON_FIELDS):
            values[name] = copy.deepcopy(values[name])
        values["parents"] = list(self.parents.get(job.job_id, []))
        return JobOut.model_validate(values, context=STORED)

    def history(self, job_id: str) -> list[EventOut]:
        """A job's events as fresh output models, oldest first."""
        return [
            EventOut(
                job_id=job_id,
                timestamp=e.timestamp,
                from_state=e.from_state,
                to_state=e.to_state,
                message=e.message,
            )
            for e in self.events.get(job_id, [])
        ]

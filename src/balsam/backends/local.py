"""LocalBackend: Balsam's services on an SQL engine (SQLite file or PostgreSQL server)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine

from balsam.domain.batchjobs import BatchJobState
from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate, AppOut, AppUpdate
from balsam.schemas.batchjobs import (
    BatchJobCreate,
    BatchJobEventOut,
    BatchJobOut,
    BatchJobUpdate,
)
from balsam.schemas.jobs import (
    BulkCreated,
    EventOut,
    EventPage,
    JobCreate,
    JobOut,
    JobShape,
    StateUpdate,
    UpdateResult,
)
from balsam.schemas.queries import Clause, JobQuery
from balsam.schemas.service import ServiceLockOut
from balsam.schemas.sessions import ClaimRequest, RecordedAndClaimed, SessionOut
from balsam.services import apps, batchjobs, jobs, service_lock, sessions
from balsam.services.changes import ChangeSignal
from balsam.services.eventlog import EventLog
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade


class LocalBackend:
    """A Backend that runs the services in this process against ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._changes = ChangeSignal(engine)
        self._log = EventLog(engine)

    @classmethod
    def from_url(cls, url: str, migrate: bool = False) -> LocalBackend:
        """Connect to ``url``; with ``migrate``, bring the schema up to date first."""
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine)

    def create_app(self, spec: AppCreate) -> AppOut:
        return apps.create_app(self.engine, spec)

    def list_apps(self, clauses: list[Clause] | None = None) -> list[AppOut]:
        return apps.list_apps(self.engine, clauses)

    def get_app(self, name: str) -> AppOut:
        return apps.get_app(self.engine, name)

    def update_app(self, name: str, changes: AppUpdate) -> AppOut:
        return apps.update_app(self.engine, name, changes)

    def delete_app(self, name: str) -> None:
        apps.delete_app(self.engine, name)

    def create_jobs(self, specs: list[JobCreate]) -> list[JobOut]:
        return jobs.create_jobs(self.engine, specs)

    def bulk_create_jobs(self, specs: Iterable[JobCreate]) -> BulkCreated:
        return jobs.bulk_create_jobs(self.engine, specs)

    def query_jobs(self, query: JobQuery) -> list[JobOut]:
        return jobs.query_jobs(self.engine, query)

    def count_jobs(self, query: JobQuery) -> int:
        return jobs.count_jobs(self.engine, query)

    def count_by_state(self, query: JobQuery) -> dict[str, int]:
        return jobs.count_by_state(self.engine, query)

    def job_shapes(self, query: JobQuery) -> list[JobShape]:
        return jobs.job_shapes(self.engine, query)

    def get_job(self, job_id: str) -> JobOut:
        return jobs.get_job(self.engine, job_id)

    def resolve_job_id(self, prefix: str) -> str:
        return jobs.resolve_job_id(self.engine, prefix)

    def update_jobs(self, query: JobQuery, values: dict[str, Any]) -> int:
        return jobs.update_jobs(self.engine, query, values)

    def set_state(self, job_id: str, state: JobState, message: str = "") -> JobOut:
        return jobs.set_state(self.engine, job_id, state, message)

    def delete_jobs(self, query: JobQuery) -> int:
        return jobs.delete_jobs(self.engine, query)

    def add_dependency(self, parent_id: str, child_id: str) -> None:
        jobs.add_dependency(self.engine, parent_id, child_id)

    def remove_dependency(self, parent_id: str, child_id: str) -> None:
        jobs.remove_dependency(self.engine, parent_id, child_id)

    def children_of(self, job_id: str) -> list[str]:
        return jobs.children_of(self.engine, job_id)

    def kill_jobs(self, job_id: str, recursive: bool = False) -> list[str]:
        return jobs.kill_jobs(self.engine, job_id, recursive)

    def note_jobs(self, job_ids: list[str], message: str) -> int:
        return jobs.note_jobs(self.engine, job_ids, message)

    def history(self, job_id: str) -> list[EventOut]:
        return jobs.history(self.engine, job_id)

    def events(self, query: JobQuery) -> list[EventOut]:
        return jobs.events(self.engine, query)

    def events_since(self, after: int, limit: int = 500, workflow: str | None = None) -> EventPage:
        return self._log.since(after, limit, workflow)

    def open_session(
        self,
        label: str,
        hostname: str,
        pid: int,
        client_key: str | None = None,
        batch_job: str | None = None,
    ) -> SessionOut:
        return sessions.open_session(self.engine, label, hostname, pid, client_key, batch_job)

    def heartbeat(self, session_id: int) -> list[str]:
        return sessions.heartbeat(self.engine, session_id)

    def close_session(self, session_id: int) -> None:
        sessions.close_session(self.engine, session_id)

    def ended_held_jobs(self, session_id: int) -> list[str]:
        return sessions.ended_held_jobs(self.engine, session_id)

    def list_sessions(self) -> list[SessionOut]:
        return sessions.list_sessions(self.engine)

    def expire_sessions(self, lease_seconds: float, dead: list[int] | None = None) -> list[int]:
        return sessions.expire_sessions(self.engine, lease_seconds, dead)

    def claim_jobs(self, session_id: int, request: ClaimRequest) -> list[JobOut]:
        return sessions.claim_jobs(self.engine, session_id, request)

    def record_updates(self, session_id: int, updates: list[StateUpdate]) -> list[UpdateResult]:
        return sessions.record_updates(self.engine, session_id, updates)

    def record_and_claim(
        self, session_id: int, updates: list[StateUpdate], request: ClaimRequest
    ) -> RecordedAndClaimed:
        return sessions.record_and_claim(self.engine, session_id, updates, request)

    def release_jobs(self, session_id: int, job_ids: list[str], seq: int = 0) -> None:
        sessions.release_jobs(self.engine, session_id, job_ids, seq)

    def create_batch_job(self, spec: BatchJobCreate) -> BatchJobOut:
        return batchjobs.create_batch_job(self.engine, spec)

    def update_batch_job(self, batch_id: int, changes: BatchJobUpdate) -> BatchJobOut:
        return batchjobs.update_batch_job(self.engine, batch_id, changes)

    def get_batch_job(self, batch_id: int) -> BatchJobOut:
        return batchjobs.get_batch_job(self.engine, batch_id)

    def list_batch_jobs(self, states: list[BatchJobState] | None = None) -> list[BatchJobOut]:
        return batchjobs.list_batch_jobs(self.engine, states)

    def batch_job_history(self, batch_id: int) -> list[BatchJobEventOut]:
        return batchjobs.batch_job_history(self.engine, batch_id)

    def acquire_service_lock(
        self,
        name: str,
        holder: str,
        *,
        hostname: str,
        pid: int,
        lease_seconds: float,
        take_from: str | None = None,
    ) -> ServiceLockOut:
        return service_lock.acquire_lock(
            self.engine,
            name,
            holder,
            hostname=hostname,
            pid=pid,
            lease_seconds=lease_seconds,
            take_from=take_from,
        )

    def renew_service_lock(
        self, name: str, holder: str, *, lease_seconds: float, status: str
    ) -> ServiceLockOut:
        return service_lock.renew_lock(
            self.engine, name, holder, lease_seconds=lease_seconds, status=status
        )

    def release_service_lock(self, name: str, holder: str) -> None:
        service_lock.release_lock(self.engine, name, holder)

    def get_service_lock(self, name: str) -> ServiceLockOut | None:
        return service_lock.get_lock(self.engine, name)

    def request_service_stop(self, name: str) -> ServiceLockOut | None:
        return service_lock.request_stop(self.engine, name)

    def change_marker(self) -> int:
        return self._changes.marker()

    def wait_for_change(self, after: int, timeout: float) -> int:
        return self._changes.wait_for_change(after, timeout)

    def close(self) -> None:
        self._changes.close()
        self.engine.dispose()

"""MemoryBackend: the whole Backend protocol in memory, for unit tests of its callers.

It behaves as :class:`balsam.backends.local.LocalBackend` does on SQLite and PostgreSQL for
everything the contract suite (tests/contract) checks, which runs on all three: the same state
machine (``balsam.domain.states``), the same refusals with the same errors, the same ordering
of claims and listings, the same answers to repeated calls. It shares no code with the SQL
backend beyond the domain and the schemas.

It fails loudly rather than guess: a query on an unknown field raises ValidationError as the
SQL backend does, and whatever SQLite and PostgreSQL disagree on (text compared with a number,
a NUL byte, NULLs in an ordering, ...) raises NotImplementedError naming it.

Every call holds one lock, so launchers' threads may share a backend. Results are fresh
models: changing one never changes the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

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
from balsam.testing import memapps, membatch, memjobs, memservice, memsessions
from balsam.testing.memstore import Store


class MemoryBackend:
    """A Backend whose workflow database is a few dicts in this process."""

    def __init__(self) -> None:
        self._store = Store()
        self._lock = threading.Lock()
        #: Notified (under the lock) when a call moved the change marker.
        self._changed = threading.Condition(self._lock)
        self._owner: int | None = None

    @contextmanager
    def _locked(self) -> Iterator[Store]:
        """The store, held for one call (a call made from inside another is refused)."""
        if self._owner == threading.get_ident():
            # E.g. a create_jobs spec iterator calling the backend: it would deadlock.
            raise NotImplementedError("MemoryBackend called from inside one of its own calls")
        with self._lock:
            self._owner = threading.get_ident()
            marker = self._store.last_event_id
            try:
                yield self._store
            finally:
                self._owner = None
                if self._store.last_event_id != marker:
                    self._changed.notify_all()

    # apps

    def create_app(self, spec: AppCreate) -> AppOut:
        """Register an app (AlreadyExists if the name is taken)."""
        with self._locked() as store:
            return memapps.create_app(store, spec)

    def list_apps(self, clauses: list[Clause] | None = None) -> list[AppOut]:
        """Apps matching ``clauses``, by name."""
        with self._locked() as store:
            return memapps.list_apps(store, clauses)

    def get_app(self, name: str) -> AppOut:
        """One app by name (NotFound)."""
        with self._locked() as store:
            return memapps.get_app(store, name)

    def update_app(self, name: str, changes: AppUpdate) -> AppOut:
        """Change an app."""
        with self._locked() as store:
            return memapps.update_app(store, name, changes)

    def delete_app(self, name: str) -> None:
        """Remove an app no job uses."""
        with self._locked() as store:
            memapps.delete_app(store, name)

    # jobs

    def create_jobs(self, specs: list[JobCreate]) -> list[JobOut]:
        """Add jobs, all or nothing; returns them in order."""
        with self._locked() as store:
            return memjobs.create_jobs(store, specs)

    def bulk_create_jobs(self, specs: Iterable[JobCreate]) -> BulkCreated:
        """Add many jobs (read one chunk at a time), all or nothing; returns ids and states."""
        with self._locked() as store:
            return memjobs.bulk_create_jobs(store, specs)

    def query_jobs(self, query: JobQuery) -> list[JobOut]:
        """Jobs matching ``query``."""
        with self._locked() as store:
            return memjobs.query_jobs(store, query)

    def count_jobs(self, query: JobQuery) -> int:
        """How many jobs match (order, limit and offset ignored)."""
        with self._locked() as store:
            return len(memjobs.matching(store, query))

    def count_by_state(self, query: JobQuery) -> dict[str, int]:
        """Matching jobs per state."""
        with self._locked() as store:
            return memjobs.count_by_state(store, query)

    def job_shapes(self, query: JobQuery) -> list[JobShape]:
        """Matching jobs per size, largest first."""
        with self._locked() as store:
            return memjobs.job_shapes(store, query)

    def get_job(self, job_id: str) -> JobOut:
        """One job by full id."""
        with self._locked() as store:
            return store.out(store.job(job_id))

    def resolve_job_id(self, prefix: str) -> str:
        """The full id of the one job whose id starts with ``prefix``."""
        with self._locked() as store:
            return memjobs.resolve_job_id(store, prefix)

    def update_jobs(self, query: JobQuery, values: dict[str, Any]) -> int:
        """Change fields of matching jobs (not the state), ordered and paged as asked."""
        with self._locked() as store:
            return memjobs.update_jobs(store, query, values)

    def set_state(self, job_id: str, state: JobState, message: str = "") -> JobOut:
        """A user's validated state change."""
        with self._locked() as store:
            return memjobs.set_state(store, job_id, state, message)

    def delete_jobs(self, query: JobQuery) -> int:
        """Delete matching jobs (not running ones), ordered and paged as asked."""
        with self._locked() as store:
            return memjobs.delete_jobs(store, query)

    def add_dependency(self, parent_id: str, child_id: str) -> None:
        """Make ``child_id`` wait for ``parent_id``."""
        with self._locked() as store:
            memjobs.add_dependency(store, parent_id, child_id)

    def remove_dependency(self, parent_id: str, child_id: str) -> None:
        """Stop ``child_id`` waiting for ``parent_id``."""
        with self._locked() as store:
            memjobs.remove_dependency(store, parent_id, child_id)

    def children_of(self, job_id: str) -> list[str]:
        """Ids of a job's children."""
        with self._locked() as store:
            return memjobs.children_of(store, job_id)

    def kill_jobs(self, job_id: str, recursive: bool = False) -> list[str]:
        """Kill a job (and its descendants); returns the ids killed."""
        with self._locked() as store:
            return memjobs.kill_jobs(store, job_id, recursive)

    def note_jobs(self, job_ids: list[str], message: str) -> int:
        """Add a message to jobs' histories, state unchanged (not twice in a row)."""
        with self._locked() as store:
            return memjobs.note_jobs(store, job_ids, message)

    def history(self, job_id: str) -> list[EventOut]:
        """A job's state changes, oldest first."""
        with self._locked() as store:
            return memjobs.history(store, job_id)

    def events(self, query: JobQuery) -> list[EventOut]:
        """The state changes of every job ``query`` selects, oldest first."""
        with self._locked() as store:
            return memjobs.events(store, query)

    def events_since(self, after: int, limit: int = 500, workflow: str | None = None) -> EventPage:
        """Job events after id ``after``, in id order (see ``Backend.events_since``)."""
        with self._locked() as store:
            return memjobs.events_since(store, after, limit, workflow)

    # launcher sessions

    def open_session(
        self,
        label: str,
        hostname: str,
        pid: int,
        client_key: str | None = None,
        batch_job: str | None = None,
    ) -> SessionOut:
        """Start a launcher lease (the same one again for a repeated ``client_key``)."""
        with self._locked() as store:
            return memsessions.open_session(store, label, hostname, pid, client_key, batch_job)

    def heartbeat(self, session_id: int) -> list[str]:
        """Renew a lease; returns held job ids a user killed."""
        with self._locked() as store:
            return memsessions.heartbeat(store, session_id)

    def close_session(self, session_id: int) -> None:
        """End a lease, handing back held jobs (a lease that is gone already: nothing)."""
        with self._locked() as store:
            memsessions.close_session(store, session_id)

    def ended_held_jobs(self, session_id: int) -> list[str]:
        """Held job ids a user killed meanwhile, without renewing the lease."""
        with self._locked() as store:
            return memsessions.ended_held_jobs(store, session_id)

    def list_sessions(self) -> list[SessionOut]:
        """Every open launcher session, oldest first."""
        with self._locked() as store:
            return memsessions.list_sessions(store)

    def expire_sessions(self, lease_seconds: float, dead: list[int] | None = None) -> list[int]:
        """Recover jobs of leases older than ``lease_seconds`` and of the sessions in ``dead``."""
        with self._locked() as store:
            return memsessions.expire_sessions(store, lease_seconds, dead)

    def claim_jobs(self, session_id: int, request: ClaimRequest) -> list[JobOut]:
        """Hold and return jobs that fit the launcher (NotFound: the lease expired)."""
        with self._locked() as store:
            return memsessions.claim_jobs(store, session_id, request)

    def record_updates(self, session_id: int, updates: list[StateUpdate]) -> list[UpdateResult]:
        """Apply buffered state changes; one result per update, in order."""
        with self._locked() as store:
            return memsessions.record_updates(store, session_id, updates)

    def record_and_claim(
        self, session_id: int, updates: list[StateUpdate], request: ClaimRequest
    ) -> RecordedAndClaimed:
        """Apply buffered state changes, then claim, at once (NotFound: neither was done)."""
        with self._locked() as store:
            store.session(session_id)
            results = memsessions.record_updates(store, session_id, updates)
            jobs = memsessions.claim_jobs(store, session_id, request)
            return RecordedAndClaimed(results=results, jobs=jobs)

    def release_jobs(self, session_id: int, job_ids: list[str], seq: int = 0) -> None:
        """Stop holding jobs (``seq``: the call's number; jobs claimed since keep their hold)."""
        with self._locked() as store:
            memsessions.release_jobs(store, session_id, job_ids, seq)

    # launcher batch jobs

    def create_batch_job(self, spec: BatchJobCreate) -> BatchJobOut:
        """Record a batch job (the same row again for a repeated ``client_key``)."""
        with self._locked() as store:
            return membatch.create_batch_job(store, spec)

    def update_batch_job(self, batch_id: int, changes: BatchJobUpdate) -> BatchJobOut:
        """Change a batch job's set fields (NotFound)."""
        with self._locked() as store:
            return membatch.update_batch_job(store, batch_id, changes)

    def get_batch_job(self, batch_id: int) -> BatchJobOut:
        """One batch job by id (NotFound)."""
        with self._locked() as store:
            return membatch.get_batch_job(store, batch_id)

    def list_batch_jobs(self, states: list[BatchJobState] | None = None) -> list[BatchJobOut]:
        """Batch jobs (in ``states``, when given), oldest first."""
        with self._locked() as store:
            return membatch.list_batch_jobs(store, states)

    def batch_job_history(self, batch_id: int) -> list[BatchJobEventOut]:
        """The states a batch job entered, oldest first."""
        with self._locked() as store:
            return membatch.batch_job_history(store, batch_id)

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
        """Take the lock if free, expired, or held by ``take_from``."""
        with self._locked() as store:
            return memservice.acquire_lock(
                store,
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
        """Extend ``holder``'s lock and store its report."""
        with self._locked() as store:
            return memservice.renew_lock(
                store, name, holder, lease_seconds=lease_seconds, status=status
            )

    def release_service_lock(self, name: str, holder: str) -> None:
        """Give the lock up."""
        with self._locked() as store:
            memservice.release_lock(store, name, holder)

    def get_service_lock(self, name: str) -> ServiceLockOut | None:
        """The lock, None when unheld."""
        with self._locked() as store:
            return memservice.get_lock(store, name)

    def request_service_stop(self, name: str) -> ServiceLockOut | None:
        """Ask the lock's holder to stop."""
        with self._locked() as store:
            return memservice.request_stop(store, name)

    # the change signal

    def change_marker(self) -> int:
        """The id of the newest job event (0 when none)."""
        with self._locked() as store:
            return store.last_event_id

    def wait_for_change(self, after: int, timeout: float) -> int:
        """The marker, as soon as it differs from ``after`` or once ``timeout`` s passed."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            while self._store.last_event_id == after:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._store.last_event_id

    def close(self) -> None:
        """Nothing to release: like LocalBackend's, the backend still works afterwards."""


if TYPE_CHECKING:
    from balsam.backends.base import Backend

    # mypy checks here that MemoryBackend has every method of the protocol, typed alike.
    _IS_A_BACKEND: Backend = MemoryBackend()

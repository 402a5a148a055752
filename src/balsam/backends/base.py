"""The Backend protocol: everything the CLI, the API, the launcher and the service may ask.

Implementations: :class:`balsam.backends.local.LocalBackend` (services on an SQL engine),
:class:`balsam.testing.MemoryBackend` (in memory, for unit tests) and
:class:`balsam.backends.remote.RemoteBackend` (HTTP to ``balsam server``). Arguments and
results are the pydantic models of :mod:`balsam.schemas`, so every implementation moves the
same data; one contract suite (tests/contract) runs on each.

Every call may be sent twice with the effect of once, because an answer can be lost after the
work was committed (a dropped connection, a server restarting):

* reads, heartbeats, releases, closing a session, expiring leases and notes are idempotent
  by nature (a note is not written twice in a row);
* ``create_jobs`` with client-chosen ids (``JobCreate.job_id``) returns the jobs the first
  call made;
* ``open_session`` with a ``client_key`` returns the session the first call opened;
* ``create_batch_job`` with a ``client_key`` returns the row the first call made, and
  ``update_batch_job`` sets values (a repeat sets them again);
* ``claim_jobs``, ``record_updates``, ``record_and_claim`` and ``release_jobs`` carry a
  number from the session's call counter (``ClaimRequest.claim_seq``, ``StateUpdate.seq``,
  ``seq``): a repeated claim returns what the first took, a repeated update is reported as
  a duplicate (see :class:`UpdateResult`), and a repeated release leaves alone a job claimed
  again since.

Failures raise :class:`~balsam.errors.BalsamError`; those that a repeat may cure are
:class:`~balsam.errors.TransientError` (see :mod:`balsam.errors`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

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


class Backend(Protocol):
    """Operations on one workflow database."""

    # apps
    def create_app(self, spec: AppCreate) -> AppOut:
        """Register an app (AlreadyExists if the name is taken)."""
        ...

    def list_apps(self, clauses: list[Clause] | None = None) -> list[AppOut]:
        """Apps matching ``clauses``."""
        ...

    def get_app(self, name: str) -> AppOut:
        """One app by name (NotFound)."""
        ...

    def update_app(self, name: str, changes: AppUpdate) -> AppOut:
        """Change an app."""
        ...

    def delete_app(self, name: str) -> None:
        """Remove an app no job uses."""
        ...

    # jobs
    def create_jobs(self, specs: list[JobCreate]) -> list[JobOut]:
        """Add jobs, all or nothing; returns them in order."""
        ...

    def bulk_create_jobs(self, specs: Iterable[JobCreate]) -> BulkCreated:
        """Add many jobs (read one chunk at a time), all or nothing; returns ids and states."""
        ...

    def query_jobs(self, query: JobQuery) -> list[JobOut]:
        """Jobs matching ``query``."""
        ...

    def count_jobs(self, query: JobQuery) -> int:
        """How many jobs match."""
        ...

    def count_by_state(self, query: JobQuery) -> dict[str, int]:
        """Matching jobs per state."""
        ...

    def job_shapes(self, query: JobQuery) -> list[JobShape]:
        """Matching jobs per size (nodes, node packing, wall time), largest first."""
        ...

    def get_job(self, job_id: str) -> JobOut:
        """One job by full id."""
        ...

    def resolve_job_id(self, prefix: str) -> str:
        """The full id of the one job whose id starts with ``prefix``."""
        ...

    def update_jobs(self, query: JobQuery, values: dict[str, Any]) -> int:
        """Change fields of matching jobs (not the state)."""
        ...

    def set_state(self, job_id: str, state: JobState, message: str = "") -> JobOut:
        """A user's validated state change."""
        ...

    def delete_jobs(self, query: JobQuery) -> int:
        """Delete matching jobs (not running ones)."""
        ...

    def add_dependency(self, parent_id: str, child_id: str) -> None:
        """Make ``child_id`` wait for ``parent_id``."""
        ...

    def remove_dependency(self, parent_id: str, child_id: str) -> None:
        """Stop ``child_id`` waiting for ``parent_id`` (NotFound without that edge;
        InvalidTransition once a launcher holds or ran the child)."""
        ...

    def children_of(self, job_id: str) -> list[str]:
        """Ids of a job's children."""
        ...

    def kill_jobs(self, job_id: str, recursive: bool = False) -> list[str]:
        """Kill a job (and its descendants); returns the ids killed."""
        ...

    def note_jobs(self, job_ids: list[str], message: str) -> int:
        """Add a message to jobs' histories, state unchanged (not twice in a row)."""
        ...

    def history(self, job_id: str) -> list[EventOut]:
        """A job's state changes, oldest first."""
        ...

    def events(self, query: JobQuery) -> list[EventOut]:
        """The state changes of every job ``query`` selects, oldest first (one read)."""
        ...

    def events_since(self, after: int, limit: int = 500, workflow: str | None = None) -> EventPage:
        """Job events with ids above ``after``, in id order, at most ``limit`` (1 to
        :data:`~balsam.schemas.jobs.MAX_EVENT_PAGE`), of ``workflow``'s jobs only when given;
        the page's ``cursor`` is the ``after`` of the next read. Reading on from each page's
        cursor returns every event exactly once, in id order, however many writers commit
        meanwhile (see :class:`~balsam.schemas.jobs.EventPage` and docs/server.md)."""
        ...

    # launcher sessions
    def open_session(
        self,
        label: str,
        hostname: str,
        pid: int,
        client_key: str | None = None,
        batch_job: str | None = None,
    ) -> SessionOut:
        """Start a launcher lease (the same one again for a repeated ``client_key``), in the
        scheduler's batch job ``batch_job`` if any."""
        ...

    def heartbeat(self, session_id: int) -> list[str]:
        """Renew a lease; returns held job ids a user killed."""
        ...

    def close_session(self, session_id: int) -> None:
        """End a lease, handing back held jobs (a lease that is gone already: nothing)."""
        ...

    def ended_held_jobs(self, session_id: int) -> list[str]:
        """Held job ids a user killed meanwhile, without renewing the lease (read-only)."""
        ...

    def list_sessions(self) -> list[SessionOut]:
        """Every open launcher session."""
        ...

    def expire_sessions(self, lease_seconds: float, dead: list[int] | None = None) -> list[int]:
        """Recover jobs of leases older than ``lease_seconds`` and of the sessions in ``dead``."""
        ...

    def claim_jobs(self, session_id: int, request: ClaimRequest) -> list[JobOut]:
        """Hold and return jobs that fit the launcher (NotFound: the lease expired)."""
        ...

    def record_updates(self, session_id: int, updates: list[StateUpdate]) -> list[UpdateResult]:
        """Apply buffered state changes; one result per update, in order."""
        ...

    def record_and_claim(
        self, session_id: int, updates: list[StateUpdate], request: ClaimRequest
    ) -> RecordedAndClaimed:
        """``record_updates`` then ``claim_jobs`` in one call and one transaction (NotFound:
        the lease expired, and neither part was done)."""
        ...

    def release_jobs(self, session_id: int, job_ids: list[str], seq: int = 0) -> None:
        """Stop holding jobs (``seq``: the call's number; jobs claimed since keep their hold)."""
        ...

    # launcher batch jobs
    def create_batch_job(self, spec: BatchJobCreate) -> BatchJobOut:
        """Record a batch job (the same row again for a repeated ``client_key``)."""
        ...

    def update_batch_job(self, batch_id: int, changes: BatchJobUpdate) -> BatchJobOut:
        """Change a batch job's set fields (NotFound)."""
        ...

    def get_batch_job(self, batch_id: int) -> BatchJobOut:
        """One batch job by id (NotFound)."""
        ...

    def list_batch_jobs(self, states: list[BatchJobState] | None = None) -> list[BatchJobOut]:
        """Batch jobs (in ``states``, when given), oldest first."""
        ...

    def batch_job_history(self, batch_id: int) -> list[BatchJobEventOut]:
        """The states a batch job entered, oldest first."""
        ...

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
        """Take the lock ``name`` if free, expired, or held by ``take_from``; the lock as it
        stands after (its ``holder`` is the caller's on success)."""
        ...

    def renew_service_lock(
        self, name: str, holder: str, *, lease_seconds: float, status: str
    ) -> ServiceLockOut:
        """Extend ``holder``'s lock and store its report (NotFound: it lost the lock)."""
        ...

    def release_service_lock(self, name: str, holder: str) -> None:
        """Give the lock up (a no-op when ``holder`` does not hold it)."""
        ...

    def get_service_lock(self, name: str) -> ServiceLockOut | None:
        """The lock ``name``, None when nobody holds it."""
        ...

    def request_service_stop(self, name: str) -> ServiceLockOut | None:
        """Ask the holder of ``name`` to stop; the lock, None when unheld."""
        ...

    # the change signal
    def change_marker(self) -> int:
        """The id of the newest job event (0 when none): it moves whenever any job's state
        changes (one index lookup, cheap enough to read on every launcher turn)."""
        ...

    def wait_for_change(self, after: int, timeout: float) -> int:
        """Block until the marker differs from ``after`` (returns the new marker) or for
        ``timeout`` seconds (returns the marker then); see docs/waiting.md."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

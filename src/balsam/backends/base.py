"""The Backend protocol: everything the CLI, the API, the launcher and the service may ask.

Implementations: :class:`balsam.backends.local.LocalBackend` (services on an SQL engine) and,
later, a remote backend over HTTP. Arguments and results are the pydantic models of
:mod:`balsam.schemas`, so every implementation moves the same data.
"""

from __future__ import annotations

from typing import Any, Protocol

from balsam.domain.states import JobState
from balsam.schemas.apps import AppCreate, AppOut, AppUpdate
from balsam.schemas.jobs import EventOut, JobCreate, JobOut, StateUpdate
from balsam.schemas.queries import Clause, JobQuery
from balsam.schemas.sessions import ClaimRequest, SessionOut


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
        """Add jobs, all or nothing."""
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

    # launcher sessions
    def open_session(self, label: str, hostname: str, pid: int) -> SessionOut:
        """Start a launcher lease."""
        ...

    def heartbeat(self, session_id: int) -> list[str]:
        """Renew a lease; returns held job ids a user killed."""
        ...

    def close_session(self, session_id: int) -> None:
        """End a lease, handing back held jobs."""
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
        """Hold and return jobs a launcher can run."""
        ...

    def record_updates(self, session_id: int, updates: list[StateUpdate]) -> list[str]:
        """Apply buffered state changes; returns the rejected ones."""
        ...

    def release_jobs(self, session_id: int, job_ids: list[str]) -> None:
        """Stop holding jobs."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

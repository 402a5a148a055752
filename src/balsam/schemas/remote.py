"""Request envelopes of the edge service: the arguments of one Backend call that takes more
than one model, shared by the server's routers and :mod:`balsam.backends.remote`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from balsam.domain.batchjobs import BatchJobState
from balsam.domain.states import JobState
from balsam.schemas.jobs import INT_MAX, StateUpdate
from balsam.schemas.queries import Clause, JobQuery
from balsam.schemas.sessions import ClaimRequest

#: A lease in seconds: 0 up to about 68 years (longer ones overflow the date arithmetic).
LeaseSeconds = Annotated[float, Field(ge=0, le=INT_MAX, allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppFilter(_Body):
    """``list_apps``."""

    clauses: list[Clause] | None = None


class JobValues(_Body):
    """``update_jobs``: which jobs, and the values to set."""

    query: JobQuery
    values: dict[str, Any]


class StateChange(_Body):
    """``set_state``."""

    state: JobState
    message: str = ""


class Edge(_Body):
    """``add_dependency`` and ``remove_dependency``."""

    parent_id: str
    child_id: str


class KillRequest(_Body):
    """``kill_jobs``."""

    recursive: bool = False


class Notes(_Body):
    """``note_jobs``."""

    job_ids: list[str]
    message: str


class SessionOpen(_Body):
    """``open_session``."""

    label: str
    hostname: str
    pid: int
    client_key: str | None = None
    batch_job: str | None = None


class ExpireRequest(_Body):
    """``expire_sessions``."""

    lease_seconds: LeaseSeconds
    dead: list[int] | None = None


class RecordAndClaim(_Body):
    """``record_and_claim``."""

    updates: list[StateUpdate]
    request: ClaimRequest


class Release(_Body):
    """``release_jobs``."""

    job_ids: list[str]
    seq: int = 0


class BatchJobFilter(_Body):
    """``list_batch_jobs``."""

    states: list[BatchJobState] | None = None


class LockAcquire(_Body):
    """``acquire_service_lock``."""

    holder: str
    hostname: str
    pid: int
    lease_seconds: LeaseSeconds
    take_from: str | None = None


class LockRenew(_Body):
    """``renew_service_lock``."""

    holder: str
    lease_seconds: LeaseSeconds
    status: str


class LockHolder(_Body):
    """``release_service_lock``."""

    holder: str


class Identity(BaseModel):
    """``whoami``: who a token belongs to and what it may do on the database."""

    user: str
    role: str
    database: str
    #: When the token sent expires (None: not known to the server any more).
    token_expires: datetime | None = None


class GrantHolder(_Body):
    """Whose role (``revoke``)."""

    user: str = Field(min_length=1, max_length=128)


class Grant(GrantHolder):
    """A user's role on one database (``grants``, ``grant``)."""

    role: Literal["owner", "submitter", "viewer"]

"""What every route depends on: the caller's token, its role on the database, the Backend.

Every route under ``/db/{name}`` takes one of :data:`Viewer`, :data:`Submitter` or
:data:`Owner`: a missing, unknown, expired or revoked token is a 401; a user without the role
on ``name`` (or with no grant on it, whether or not it is served) a 403. Each denial is a line
in the ``balsam.server.audit`` log and a row in the auth store's audit table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from anyio import CapacityLimiter
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from balsam.backends.base import Backend
from balsam.schemas.queries import JobQuery
from balsam.server.auth import AuditEvent, AuthStore, Principal, Role

audit = logging.getLogger("balsam.server.audit")
_bearer = HTTPBearer(auto_error=False, description="an API token from `balsam server add-user`")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may carry or wait for."""

    #: Bytes of a request body (413 above).
    max_body_bytes: int = 32 * 1024 * 1024
    #: Jobs in one create or bulk create, updates in one record call (413 above).
    max_items: int = 20_000
    #: Jobs one query answers: a query must ask at most these (``limit``), and pages on
    #: with a cursor (``after``), so that no request makes the server build a million jobs.
    max_page: int = 10_000
    #: Longest ``wait_for_change`` long-poll, seconds (longer asks are cut to this).
    max_wait_seconds: float = 25.0
    #: Long-polls waiting at once, in threads of their own (more get the marker at once),
    #: so waiters never take the threads that heartbeats and claims need.
    max_waiters: int = 64
    #: Event streams open at once (``/events/stream``; a 503 with Retry-After above).
    max_streams: int = 256
    #: A stream with nothing to send sends a comment this often, so proxies keep it open.
    stream_heartbeat_seconds: float = 15.0


@dataclass
class ServerState:
    """The databases served by name, the auth store and the limits."""

    databases: dict[str, Backend]
    auth: AuthStore
    limits: Limits = field(default_factory=Limits)
    #: Made on the event loop by the first long-poll (see :func:`wait_limiter`).
    waiters: CapacityLimiter | None = None


def wait_limiter(state: ServerState) -> CapacityLimiter:
    """The threads long-polls wait in (apart from anyio's default pool)."""
    if state.waiters is None:
        state.waiters = CapacityLimiter(state.limits.max_waiters)
    return state.waiters


def server_state(request: Request) -> ServerState:
    """The state :func:`balsam.server.app.create_app` was given."""
    state: ServerState = request.app.state.balsam
    return state


def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The token's owner, or a 401 (audited)."""
    challenge = {"WWW-Authenticate": "Bearer"}
    auth = server_state(request).auth
    if credentials is None or credentials.scheme.lower() != "bearer":
        _deny(request, 401, "missing bearer token")
        raise HTTPException(401, "missing bearer token", headers=challenge)
    principal = auth.authenticate(credentials.credentials)
    if principal is None:
        # An expired or revoked token is still someone's: the row says whose.
        known = auth.owner_of(credentials.credentials)
        _deny(request, 401, "invalid, expired or revoked token", known)
        raise HTTPException(401, "invalid, expired or revoked token", headers=challenge)
    return principal


def _deny(
    request: Request,
    status: int,
    detail: str,
    principal: Principal | None = None,
    role: Role | None = None,
    needed: str | None = None,
) -> None:
    """The audit line and row of a denial (the token itself is never written)."""
    name = request.path_params.get("name")
    user = principal.user if principal else None
    audit.warning(
        "denied user=%s db=%s role=%s needed=%s %s %s status=%d",
        user, name, role, needed, request.method, request.url.path, status,
    )  # fmt: skip
    server_state(request).auth.record(
        AuditEvent(
            "denied", status=status, user=user, db=name, role=role and role.value,
            needed=needed, method=request.method, path=request.url.path,
            token_id=principal.token_id if principal else None, detail=detail,
        )
    )  # fmt: skip


@dataclass(frozen=True)
class Caller:
    """An authorized caller of ``/db/{name}``: the database's Backend, who, and their role."""

    backend: Backend
    name: str
    principal: Principal
    role: Role

    @property
    def user(self) -> str:
        """The caller's user name."""
        return self.principal.user

    @property
    def token_id(self) -> int:
        """The id of the token the caller sent (never the token)."""
        return self.principal.token_id

    @property
    def changes_any_job(self) -> bool:
        """Whether the caller may change jobs others made (owners; submitters change their
        own only)."""
        return self.role.allows(Role.OWNER)


def deny(
    request: Request, principal: Principal, name: str, role: Role | None, needed: str
) -> HTTPException:
    """The 403 for ``principal`` lacking ``needed`` on ``name``, audited."""
    detail = f"user {principal.user!r} needs role {needed} on {name!r}"
    _deny(request, 403, detail, principal, role, needed)
    return HTTPException(403, detail)


def authorize(request: Request, name: str, principal: Principal, needed: Role) -> Caller:
    """The caller of ``/db/{name}`` when it holds ``needed`` or more there (403, 404 else)."""
    state = server_state(request)
    role = state.auth.role_of(principal.user, name)
    if role is None or not role.allows(needed):
        raise deny(request, principal, name, role, needed.value)
    backend = state.databases.get(name)
    if backend is None:
        raise HTTPException(404, f"workflow database {name!r} is not served here")
    return Caller(backend, name, principal, role)


def allow(needed: Role) -> Callable[..., Backend]:
    """A dependency giving the Backend of ``/db/{name}`` to callers with ``needed`` or more."""

    def dependency(
        request: Request,
        name: str,
        principal: Annotated[Principal, Depends(authenticated)],
    ) -> Backend:
        return authorize(request, name, principal, needed).backend

    return dependency


def allow_caller(needed: Role) -> Callable[..., Caller]:
    """As :func:`allow`, giving the whole :class:`Caller` (for routes that check ownership)."""

    def dependency(
        request: Request,
        name: str,
        principal: Annotated[Principal, Depends(authenticated)],
    ) -> Caller:
        return authorize(request, name, principal, needed)

    return dependency


Viewer = Annotated[Backend, Depends(allow(Role.VIEWER))]
Submitter = Annotated[Backend, Depends(allow(Role.SUBMITTER))]
Owner = Annotated[Backend, Depends(allow(Role.OWNER))]
#: A submitter or owner, for the routes where a submitter may touch only its own jobs.
JobChanger = Annotated[Caller, Depends(allow_caller(Role.SUBMITTER))]


def check_creator(request: Request, caller: Caller, creators: list[str | None]) -> None:
    """A 403 (and an audit line) when a submitter would change a job another user made."""
    if not caller.changes_any_job and any(creator != caller.user for creator in creators):
        raise not_yours(request, caller)


def not_yours(request: Request, caller: Caller) -> HTTPException:
    """The 403 for a submitter changing jobs another user made, after its audit line."""
    return deny(
        request, caller.principal, caller.name, caller.role, "owner (a job not made by you)"
    )


def check_items(request: Request, count: int) -> None:
    """A 413 when a request carries more items than the limit."""
    limit = server_state(request).limits.max_items
    if count > limit:
        raise HTTPException(413, f"{count} items in one request; the limit is {limit}")


def check_page(request: Request, query: JobQuery) -> None:
    """A 413 for a job query without a ``limit`` or with one above the server's page."""
    page = server_state(request).limits.max_page
    if query.limit is None or query.limit > page:
        raise HTTPException(
            413,
            f"a query through the server answers at most {page} jobs: give a limit of at "
            "most that, and page on with the cursor of the last job (after)",
        )

"""What every route depends on: the caller's token, its role on the database, the Backend.

Every route under ``/db/{name}`` takes one of :data:`Viewer`, :data:`Submitter` or
:data:`Owner`: a missing, unknown, expired or revoked token is a 401; a user without the role
on ``name`` (or with no grant on it, whether or not it is served) a 403 with an audit line.
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
from balsam.server.auth import AuthStore, Principal, Role

audit = logging.getLogger("balsam.server.audit")
_bearer = HTTPBearer(auto_error=False, description="an API token from `balsam server add-user`")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may carry or wait for."""

    #: Bytes of a request body (413 above).
    max_body_bytes: int = 32 * 1024 * 1024
    #: Jobs in one create or bulk create, updates in one record call (413 above).
    max_items: int = 20_000
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
    """The token's owner, or a 401."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers=challenge)
    principal = server_state(request).auth.authenticate(credentials.credentials)
    if principal is None:
        raise HTTPException(401, "invalid, expired or revoked token", headers=challenge)
    return principal


def allow(needed: Role) -> Callable[..., Backend]:
    """A dependency giving the Backend of ``/db/{name}`` to callers with ``needed`` or more."""

    def dependency(
        request: Request,
        name: str,
        principal: Annotated[Principal, Depends(authenticated)],
    ) -> Backend:
        state = server_state(request)
        role = state.auth.role_of(principal.user, name)
        if role is None or not role.allows(needed):
            audit.warning(
                "denied user=%s db=%s role=%s needed=%s %s %s",
                principal.user, name, role, needed, request.method, request.url.path,
            )  # fmt: skip
            raise HTTPException(403, f"user {principal.user!r} needs role {needed} on {name!r}")
        backend = state.databases.get(name)
        if backend is None:
            raise HTTPException(404, f"workflow database {name!r} is not served here")
        return backend

    return dependency


Viewer = Annotated[Backend, Depends(allow(Role.VIEWER))]
Submitter = Annotated[Backend, Depends(allow(Role.SUBMITTER))]
Owner = Annotated[Backend, Depends(allow(Role.OWNER))]


def check_items(request: Request, count: int) -> None:
    """A 413 when a request carries more items than the limit."""
    limit = server_state(request).limits.max_items
    if count > limit:
        raise HTTPException(413, f"{count} items in one request; the limit is {limit}")

"""Who the caller is on a database (what ``balsam login`` checks a token with), and the grants
an owner of the database gives and takes away (``balsam grant``, ``balsam revoke``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from balsam.errors import NotFound
from balsam.schemas.remote import Grant, GrantHolder, Identity
from balsam.server.auth import Role
from balsam.server.deps import Caller, allow_caller, server_state
from balsam.server.responses import DB_ROUTE

router = APIRouter(prefix="/db/{name}", tags=["account"], responses=DB_ROUTE)


@router.get("/whoami", response_model=Identity)
def whoami(
    caller: Annotated[Caller, Depends(allow_caller(Role.VIEWER))],
    request: Request,
) -> Identity:
    """The caller's user, role on this database, and when the token it sent expires."""
    tokens = server_state(request).auth.list_tokens(caller.user)
    expires = next((t.expires_at for t in tokens if t.id == caller.token_id), None)
    return Identity(
        user=caller.user, role=caller.role.value, database=caller.name, token_expires=expires
    )


OwnerCaller = Annotated[Caller, Depends(allow_caller(Role.OWNER))]


@router.get("/grants", response_model=list[Grant])
def list_grants(caller: OwnerCaller, request: Request) -> list[Grant]:
    """Who holds which role on this database (its owners may see it)."""
    grants = server_state(request).auth.grants()
    return [Grant(user=u, role=r.value) for u, db, r in grants if db == caller.name]


@router.post("/grants", response_model=Grant)
def grant(caller: OwnerCaller, request: Request, body: Grant) -> Grant:
    """Give a user (made by the server's admin) a role on this database, replacing any."""
    auth = server_state(request).auth
    if body.user not in auth.users():
        raise NotFound(f"no user {body.user!r} on this server (its admin adds users)")
    auth.grant(body.user, Role(body.role), caller.name, by=caller.user)
    return body


@router.post("/grants/remove", response_model=None)
def revoke(caller: OwnerCaller, request: Request, body: GrantHolder) -> None:
    """Take a user's role on this database away (404 if it has none)."""
    server_state(request).auth.revoke_grant(body.user, caller.name, by=caller.user)

"""Who the caller is on a database: what ``balsam login`` checks a token with."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from balsam.schemas.remote import Identity
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

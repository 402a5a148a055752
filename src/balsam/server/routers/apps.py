"""Apps: viewers read them, owners register, change and delete them."""

from __future__ import annotations

from fastapi import APIRouter

from balsam.schemas.apps import AppCreate, AppOut, AppUpdate
from balsam.schemas.remote import AppFilter
from balsam.server.deps import Owner, Viewer
from balsam.server.responses import CONFLICT, DB_ROUTE

router = APIRouter(prefix="/db/{name}", tags=["apps"], responses=DB_ROUTE)


@router.post("/apps", response_model=AppOut, responses=CONFLICT)
def create_app(backend: Owner, spec: AppCreate) -> AppOut:
    """Register an app."""
    return backend.create_app(spec)


@router.post("/apps/list", response_model=list[AppOut])
def list_apps(backend: Viewer, body: AppFilter) -> list[AppOut]:
    """Apps matching the clauses."""
    return backend.list_apps(body.clauses)


@router.get("/apps/{app}", response_model=AppOut)
def get_app(backend: Viewer, app: str) -> AppOut:
    """One app by name."""
    return backend.get_app(app)


@router.patch("/apps/{app}", response_model=AppOut, responses=CONFLICT)
def update_app(backend: Owner, app: str, changes: AppUpdate) -> AppOut:
    """Change an app."""
    return backend.update_app(app, changes)


@router.delete("/apps/{app}", response_model=None, responses=CONFLICT)
def delete_app(backend: Owner, app: str) -> None:
    """Remove an app no job uses."""
    backend.delete_app(app)

"""App use cases: register, list, change, remove."""

from __future__ import annotations

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import Engine, func, select

from balsam.errors import AlreadyExists, InvalidTransition, NotFound, ValidationError
from balsam.schemas.apps import (
    AppCreate,
    AppOut,
    AppUpdate,
    stored_app_values,
    updated_app_values,
)
from balsam.schemas.problems import first_error
from balsam.schemas.queries import Clause
from balsam.store.engine import unit_of_work
from balsam.store.queries import where_sql
from balsam.store.tables import AppRow, JobRow


def create_app(engine: Engine, spec: AppCreate) -> AppOut:
    """Register a new app; its name must be unused (a repeat after a lost answer is told
    apart by the caller: :class:`balsam.backends.retry.RetryingBackend`)."""
    with unit_of_work(engine) as session:
        if session.scalar(select(AppRow.id).where(AppRow.name == spec.name)) is not None:
            raise AlreadyExists(f"an app named {spec.name!r} exists already")
        row = AppRow(**stored_app_values(spec))
        session.add(row)
        session.flush()
        return AppOut.model_validate(row)


def list_apps(engine: Engine, clauses: list[Clause] | None = None) -> list[AppOut]:
    """Apps matching ``clauses`` (all when empty), by name."""
    with unit_of_work(engine, write=False) as session:
        stmt = select(AppRow).where(where_sql(AppRow, clauses or [])).order_by(AppRow.name)
        return [AppOut.model_validate(r) for r in session.scalars(stmt)]


def get_app(engine: Engine, name: str) -> AppOut:
    """One app by name."""
    with unit_of_work(engine, write=False) as session:
        row = session.scalar(select(AppRow).where(AppRow.name == name))
        if row is None:
            raise NotFound(f"no application named {name!r}")
        return AppOut.model_validate(row)


def update_app(engine: Engine, name: str, changes: AppUpdate) -> AppOut:
    """Change an app's fields (its name stays)."""
    with unit_of_work(engine) as session:
        row = session.scalar(select(AppRow).where(AppRow.name == name))
        if row is None:
            raise NotFound(f"no application named {name!r}")
        current = AppOut.model_validate(row).model_dump(exclude={"id"})
        try:
            merged = AppCreate.model_validate(updated_app_values(current, changes))
        except PydanticValidationError as exc:
            raise ValidationError(first_error(exc)) from None
        for key, value in stored_app_values(merged).items():
            setattr(row, key, value)
        return AppOut.model_validate(row)


def delete_app(engine: Engine, name: str) -> None:
    """Remove an app that no job uses."""
    with unit_of_work(engine) as session:
        row = session.scalar(select(AppRow).where(AppRow.name == name))
        if row is None:
            raise NotFound(f"no application named {name!r}")
        used = session.scalar(
            select(func.count()).select_from(JobRow).where(JobRow.application == name)
        )
        if used:
            raise InvalidTransition(f"{used} job(s) use app {name!r}; remove them first")
        session.delete(row)

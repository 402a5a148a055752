"""App calls of :class:`~balsam.testing.MemoryBackend`, as :mod:`balsam.services.apps`."""

from __future__ import annotations

from balsam.errors import AlreadyExists, InvalidTransition
from balsam.schemas.apps import AppCreate, AppOut, AppUpdate, updated_app_values
from balsam.schemas.queries import Clause
from balsam.testing.memchecks import check_text
from balsam.testing.memquery import columns_of_model, where
from balsam.testing.memstore import Store

#: The queryable columns of an app: the SQL table's.
APP_COLUMNS = columns_of_model(AppOut)


def create_app(store: Store, spec: AppCreate) -> AppOut:
    """Register a new app; its name must be unused."""
    if spec.name in store.apps:
        raise AlreadyExists(f"an app named {spec.name!r} exists already")
    _check_storable(spec)
    store.last_app_id += 1
    app = AppOut(id=store.last_app_id, **spec.model_dump())
    store.apps[app.name] = app
    return app.model_copy()


def list_apps(store: Store, clauses: list[Clause] | None = None) -> list[AppOut]:
    """Apps matching ``clauses`` (all when empty), by name."""
    test = where(APP_COLUMNS, clauses or [])
    return [store.apps[name].model_copy() for name in sorted(store.apps) if test(store.apps[name])]


def get_app(store: Store, name: str) -> AppOut:
    """One app by name."""
    return store.app(name).model_copy()


def update_app(store: Store, name: str, changes: AppUpdate) -> AppOut:
    """Change an app's fields (its name stays)."""
    app = store.app(name)
    # Invalid changes raise pydantic's ValidationError here, as in balsam.services.apps.
    merged = AppCreate.model_validate(updated_app_values(app.model_dump(exclude={"id"}), changes))
    _check_storable(merged)
    store.apps[name] = AppOut(id=app.id, **merged.model_dump())
    return store.apps[name].model_copy()


def delete_app(store: Store, name: str) -> None:
    """Remove an app that no job uses."""
    store.app(name)
    used = sum(job.application == name for job in store.jobs.values())
    if used:
        raise InvalidTransition(f"{used} job(s) use app {name!r}; remove them first")
    del store.apps[name]


def _check_storable(spec: AppCreate) -> None:
    for field, value in spec.model_dump().items():
        check_text(value, f"the app's {field}")

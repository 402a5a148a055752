"""Apps as Python objects: Balsam's ``ApplicationDefinition``, backed by any Backend.

``App(name=..., executable=...)`` is unsaved until :meth:`App.save`. ``App.objects`` is a
small query set: the backend filters, and ordering and slicing happen here, since a workflow
database holds a handful of apps, not millions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, overload

from pydantic import ValidationError as PydanticValidationError

from balsam.api.context import get_backend
from balsam.api.lookups import (
    FetchedResults,
    UnknownField,
    build_clause,
    check_order,
    field_error,
    slice_of_window,
)
from balsam.errors import Ambiguous, NotFound, ValidationError
from balsam.schemas.apps import AppCreate, AppOut, AppUpdate
from balsam.schemas.problems import first_error
from balsam.schemas.queries import Clause

#: The fields a user sets on an app.
FIELDS: tuple[str, ...] = tuple(AppCreate.model_fields)
#: Fields an app query may filter and order on.
QUERY_FIELDS: frozenset[str] = frozenset(AppOut.model_fields)
ALIASES: dict[str, str] = {"pk": "id"}


class AppDoesNotExist(NotFound):
    """No app matches (``ApplicationDefinition.DoesNotExist``)."""


class AppMultipleObjectsReturned(Ambiguous):
    """``get()`` matched more than one app."""


class AppQuerySet(FetchedResults["App"]):
    """A lazy query over apps; narrowing returns a new one."""

    def __init__(
        self,
        clauses: Sequence[Clause] = (),
        order: Sequence[str] = (),
        window: tuple[int, int | None] = (0, None),
    ) -> None:
        self._clauses = tuple(clauses)
        self._order = tuple(order)
        self._window = window
        self._cache: list[App] | None = None

    def all(self) -> AppQuerySet:
        """A fresh copy of this query."""
        return AppQuerySet(self._clauses, self._order, self._window)

    def filter(self, **kwargs: Any) -> AppQuerySet:
        """Apps matching every ``field__lookup=value`` given."""
        return self._narrow(kwargs, negate=False)

    def exclude(self, **kwargs: Any) -> AppQuerySet:
        """Apps not matching all of ``field__lookup=value`` together."""
        return self._narrow(kwargs, negate=True)

    def _narrow(self, kwargs: dict[str, Any], negate: bool) -> AppQuerySet:
        self._refuse_if_sliced("filter")
        clause = build_clause(kwargs, QUERY_FIELDS, ALIASES, negate)
        return AppQuerySet((*self._clauses, clause), self._order)

    def order_by(self, *keys: str) -> AppQuerySet:
        """Order by ``keys`` (``"-name"`` for descending)."""
        self._refuse_if_sliced("order")
        return AppQuerySet(self._clauses, check_order(keys, QUERY_FIELDS, ALIASES))

    def _refuse_if_sliced(self, what: str) -> None:
        if self._window != (0, None):
            raise ValidationError(f"cannot {what} a query once a slice has been taken")

    def _fetch(self) -> list[App]:
        if self._cache is None:
            apps = [App.from_out(o) for o in get_backend().list_apps(list(self._clauses))]
            for key in reversed(self._order):
                apps.sort(key=_sort_key(key.removeprefix("-")), reverse=key.startswith("-"))
            offset, limit = self._window
            self._cache = apps[offset : None if limit is None else offset + limit]
        return self._cache

    @overload
    def __getitem__(self, index: int) -> App: ...

    @overload
    def __getitem__(self, index: slice) -> AppQuerySet: ...

    def __getitem__(self, index: int | slice) -> App | AppQuerySet:
        if isinstance(index, slice):
            window = slice_of_window(*self._window, index)
            return AppQuerySet(self._clauses, self._order, window)
        if index < 0:
            raise ValidationError("negative indexing is not supported in queries")
        apps = self._fetch()
        if index >= len(apps):
            raise IndexError(f"app index {index} out of range")
        return apps[index]

    def __repr__(self) -> str:
        return f"<AppQuerySet {self._fetch()!r}>"

    def count(self) -> int:
        """How many apps match."""
        return len(self._fetch())

    def exists(self) -> bool:
        """True when at least one app matches."""
        return bool(self._fetch())

    def first(self) -> App | None:
        """The first matching app (by name unless ordered), or None."""
        apps = self._fetch()
        return apps[0] if apps else None

    def get(self, **kwargs: Any) -> App:
        """The one app matching; ``App.DoesNotExist`` or ``App.MultipleObjectsReturned`` else."""
        found = (self.filter(**kwargs) if kwargs else self)._fetch()
        what = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "this query"
        if not found:
            raise AppDoesNotExist(f"no application matches {what}")
        if len(found) > 1:
            raise AppMultipleObjectsReturned(f"more than one application matches {what}")
        return found[0]

    def values_list(self, *fields: str, flat: bool = False) -> list[Any]:
        """Field values of the matching apps: tuples, or plain values with ``flat=True``."""
        if flat and len(fields) != 1:
            raise ValidationError("values_list(flat=True) takes exactly one field")
        names = [ALIASES.get(f, f) for f in fields] or sorted(QUERY_FIELDS)
        for name in names:
            if name not in QUERY_FIELDS:
                raise field_error(name, QUERY_FIELDS)
        if flat:
            return [getattr(a, names[0]) for a in self._fetch()]
        return [tuple(getattr(a, n) for n in names) for a in self._fetch()]

    def create(self, **fields: Any) -> App:
        """Make and save an app in one step."""
        app = App(**fields)
        app.save()
        return app

    def get_or_create(self, **fields: Any) -> tuple[App, bool]:
        """The app named ``fields["name"]``, or a new one from ``fields``; and whether it is new.

        A new app given no executable (nor function) is returned unsaved: Balsam 0.5 scripts
        set the executable next and then save() it, which creates it (an app needs one).
        ``defaults`` (Django's): more fields for a new app only.
        """
        if "name" not in fields:
            raise ValidationError("get_or_create needs the app's name")
        defaults = fields.pop("defaults", None) or {}
        try:
            return self.get(name=fields["name"]), False
        except AppDoesNotExist:
            fields = {**defaults, **fields}
            if not fields.get("executable") and not fields.get("function"):
                return App(**fields), True
            return self.create(**fields), True

    def delete(self) -> int:
        """Remove every matching app (refused for apps that jobs use); returns how many."""
        backend = get_backend()
        apps = self._fetch()
        for app in apps:
            backend.delete_app(app.name)
        self._cache = None
        return len(apps)


def _sort_key(field: str) -> Callable[[App], Any]:
    return lambda app: getattr(app, field)


class _Objects:
    """``App.objects``: a fresh query set over all apps on each access."""

    def __get__(self, obj: object, owner: type[Any]) -> AppQuerySet:
        return AppQuerySet()


class App:
    """A registered application (Balsam's ``ApplicationDefinition``)."""

    DoesNotExist = AppDoesNotExist
    MultipleObjectsReturned = AppMultipleObjectsReturned
    objects = _Objects()

    name: str
    executable: str
    description: str
    preprocess: str
    postprocess: str
    envscript: str
    container: str
    #: The Python function the app's jobs call, ``module:function`` ("": an executable app).
    function: str
    #: The interpreter that calls it ("": the workflow's Python).
    python: str
    id: int | None

    def __init__(self, **fields: Any) -> None:
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise UnknownField(
                f"unknown app field(s) {', '.join(unknown)}; fields are: {', '.join(FIELDS)}"
            )
        object.__setattr__(self, "id", None)
        self._saved: dict[str, Any] = {}
        for name in FIELDS:
            object.__setattr__(self, name, fields.get(name, ""))

    @classmethod
    def from_out(cls, out: AppOut) -> App:
        """A saved app built from the backend's output model."""
        app = cls.__new__(cls)
        app._load(out)
        return app

    def _load(self, out: AppOut) -> None:
        for name in (*FIELDS, "id"):
            object.__setattr__(self, name, getattr(out, name))
        object.__setattr__(self, "_saved", {n: getattr(out, n) for n in FIELDS})

    if not TYPE_CHECKING:
        # Hidden from type checkers so they still flag unknown attributes statically.
        def __setattr__(self, key: str, value: Any) -> None:
            if key.startswith("_") or key in FIELDS:
                object.__setattr__(self, key, value)
            elif key in ("id", "pk"):
                raise ValidationError(f"{key} is read-only")
            else:
                raise UnknownField(f"{key!r} is not an app field; fields are: {', '.join(FIELDS)}")

    @property
    def pk(self) -> int | None:
        """The app's database id, None before the first save."""
        return self.id

    @property
    def cute_id(self) -> str:
        """Balsam 0.5's short label of an app: ``[name | id]``."""
        return f"[{self.name} | {self.id}]"

    @classmethod
    def for_function(cls, fn: Callable[..., Any], name: str | None = None, python: str = "") -> App:
        """The saved app that calls the importable function ``fn``: the one registered with
        its import path (``module:qualname``) and ``python``, else a new one named ``name``
        (default: ``module.qualname``). docs/functions.md."""
        from balsam.api.functions import app_for

        return app_for(fn, name, python)

    def __str__(self) -> str:
        return f"{self.name}: {self._runs}"

    def __repr__(self) -> str:
        what = "function" if self.function else "executable"
        return f"<{type(self).__name__} name={self.name!r} {what}={self._runs!r}>"

    @property
    def _runs(self) -> str:
        """What the app runs: its executable, or its function."""
        return self.function or self.executable

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, App):
            return NotImplemented
        return self is other if self.id is None else self.id == other.id

    def __hash__(self) -> int:
        if self.id is None:
            raise TypeError("an unsaved app is unhashable (it has no id yet)")
        return hash(self.id)

    def save(self) -> None:
        """Register the app, or write the fields changed since it was loaded."""
        values = {n: getattr(self, n) for n in FIELDS}
        backend = get_backend()
        try:
            if self.id is None:
                self._load(backend.create_app(AppCreate.model_validate(values)))
                return
            changes = {n: v for n, v in values.items() if v != self._saved[n]}
            if "name" in changes:
                raise ValidationError("an app cannot be renamed; create a new one")
            if changes:
                AppCreate.model_validate(values)
                self._load(backend.update_app(self.name, AppUpdate.model_validate(changes)))
        except PydanticValidationError as exc:
            raise ValidationError(f"app {self.name!r}: {first_error(exc)}") from None

    def refresh_from_db(self) -> None:
        """Reload every value from the database (unsaved edits are dropped)."""
        if self.id is None:
            raise ValidationError(f"app {self.name!r} is not saved yet")
        found = get_backend().list_apps([build_clause({"id": self.id}, QUERY_FIELDS, ALIASES)])
        if not found:
            raise AppDoesNotExist(f"application {self._saved['name']!r} no longer exists")
        self._load(found[0])

    def delete(self) -> None:
        """Remove the app (refused while jobs use it); it becomes unsaved."""
        if self.id is None:
            raise ValidationError(f"app {self.name!r} is not saved, so it cannot be deleted")
        get_backend().delete_app(self._saved["name"])
        object.__setattr__(self, "id", None)

"""Turn Django-style keyword filters into the serialisable clauses a Backend understands.

``filter(name__icontains="hi", state__in=[...])`` becomes one :class:`Clause`. Field names are
checked here, before anything reaches a backend, so a typo fails at once with a message naming
the bad key and the fields that exist. Values are normalised: a saved job becomes its id, a
``uuid.UUID`` its text, a state name its :class:`JobState` (an unknown state name is an error
rather than a query that silently matches nothing).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from balsam.domain.states import JobState, parse_state
from balsam.errors import ValidationError
from balsam.schemas.jobs import INT_MAX
from balsam.schemas.queries import Clause, Condition, Lookup, parse_lookup, split_json_path

#: Lookups whose value is compared as a whole (so a state name in them can be checked).
_EQUALITY = (Lookup.EXACT, Lookup.IN)
#: The integers a query may compare with: those an integer column holds. PostgreSQL refuses
#: a bigger parameter for such a column, and SQLite's driver cannot send one beyond 64 bits.
QUERY_INT_MIN, QUERY_INT_MAX = -INT_MAX - 1, INT_MAX


T = TypeVar("T")


class UnknownField(ValidationError, AttributeError):
    """A name that is not a field of a job or an app (passed, assigned or queried)."""


def field_error(key: str, fields: Iterable[str]) -> UnknownField:
    """The error for an unknown field or lookup ``key``."""
    known = ", ".join(sorted(fields))
    return UnknownField(f"unknown field or lookup {key!r}; fields are: {known}")


def build_clause(
    kwargs: Mapping[str, Any],
    fields: Iterable[str],
    aliases: Mapping[str, str],
    negate: bool = False,
) -> Clause:
    """One clause (conditions AND'ed) from ``kwargs``; ``aliases`` maps e.g. ``pk`` to its field."""
    known = set(fields) | set(aliases)
    conditions = []
    for key, value in kwargs.items():
        field, lookup = parse_lookup(key)
        field, path = split_json_path(field)
        if field not in known:
            raise field_error(key, known)
        field = aliases.get(field, field)
        given = normalize(value) if path and lookup is not Lookup.IN else value
        checked = given if path else _value(field, lookup, value)
        conditions.append(Condition(field=field, lookup=lookup, value=checked, path=path))
    return Clause(conditions=conditions, negate=negate)


def _value(field: str, lookup: Lookup, value: Any) -> Any:
    if lookup is Lookup.ISNULL:
        return bool(value)
    if lookup is Lookup.IN:
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise ValidationError(f"{field}__in needs a list of values, got {value!r}")
        return [_value(field, Lookup.EXACT, v) for v in value]
    value = normalize(value)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not QUERY_INT_MIN <= value <= QUERY_INT_MAX
    ):
        raise ValidationError(
            f"{field}: {value} is out of range for a query "
            f"(integer fields hold {QUERY_INT_MIN} to {QUERY_INT_MAX})"
        )
    if field == "state" and lookup in _EQUALITY and isinstance(value, str):
        try:
            return parse_state(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
    return value


def normalize(value: Any) -> Any:
    """A query value as the backend stores it (jobs -> ids, UUIDs -> text)."""
    if isinstance(value, JobState):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "job_id") and not isinstance(value, str):
        if value.job_id is None:
            raise ValidationError("cannot query by a job that is not saved yet")
        return value.job_id
    return value


def check_order(
    keys: Iterable[str], fields: Iterable[str], aliases: Mapping[str, str]
) -> list[str]:
    """Validated ``order_by`` keys (``-name`` for descending), aliases resolved."""
    known = set(fields) | set(aliases)
    checked = []
    for key in keys:
        desc = key.startswith("-")
        field = key.removeprefix("-")
        if field not in known:
            raise field_error(key, known)
        checked.append(("-" if desc else "") + aliases.get(field, field))
    return checked


def slice_window(
    offset: int, limit: int | None, start: int | None, stop: int | None
) -> tuple[int, int | None]:
    """The ``(offset, limit)`` of ``[start:stop]`` taken from a window ``(offset, limit)``."""
    start = start or 0
    if start < 0 or (stop is not None and stop < 0):
        raise ValidationError("negative indexing is not supported in queries")
    if stop is None:
        new_limit = None if limit is None else max(0, limit - start)
    else:
        length = max(0, stop - start)
        new_limit = length if limit is None else max(0, min(length, limit - start))
    return offset + start, new_limit


def slice_of_window(offset: int, limit: int | None, index: slice) -> tuple[int, int | None]:
    """:func:`slice_window` for ``query[start:stop]`` (steps are refused)."""
    if index.step not in (None, 1):
        raise ValidationError("query slices cannot have a step")
    return slice_window(offset, limit, index.start, index.stop)


class FetchedResults(Generic[T]):
    """What every query set does with the objects it fetched: iterate, count, test."""

    def _fetch(self) -> list[T]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[T]:
        return iter(self._fetch())

    def __len__(self) -> int:
        return len(self._fetch())

    def __bool__(self) -> bool:
        return bool(self._fetch())

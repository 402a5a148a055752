"""The query language of :mod:`balsam.schemas.queries`, evaluated on records as SQL does.

A query is compiled before any record is read, so a bad field fails however few jobs there
are (as the SQL backend fails when building its statement). Conditions follow SQL's
three-valued logic: a comparison with NULL is unknown and so is its negation, so
``exclude(return_code=0)`` drops the jobs that have no return code, as both databases do.

Where SQLite and PostgreSQL answer differently (text compared with a number, ``contains`` on
an integer, case folding beyond ASCII, the place of NULLs in an ordering, a negative limit)
nothing can be copied: those raise NotImplementedError naming what was asked.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel

from balsam.errors import DatabaseError, ValidationError
from balsam.schemas.queries import (
    WHOLE_JSON_FIELDS,
    Clause,
    Condition,
    JobQuery,
    Lookup,
    cursor_values,
    order_keys,
)
from balsam.testing.memchecks import INT32_MAX, INT32_MIN, check_text, disagree
from balsam.testing.memstore import as_utc

#: SQL's truth values: True, False, or None for unknown (NULL).
Truth = bool | None
Predicate = Callable[[Any], Truth]
T = TypeVar("T")

_LIKE = frozenset(
    {
        Lookup.IEXACT,
        Lookup.CONTAINS,
        Lookup.ICONTAINS,
        Lookup.STARTSWITH,
        Lookup.ISTARTSWITH,
        Lookup.ENDSWITH,
    }
)
_COMPARE = {
    Lookup.GT: lambda a, b: a > b,
    Lookup.GTE: lambda a, b: a >= b,
    Lookup.LT: lambda a, b: a < b,
    Lookup.LTE: lambda a, b: a <= b,
}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Kind(Enum):
    """What a column holds, which decides the values it may be compared with."""

    TEXT = "text"
    INT = "integer"
    BOOL = "boolean"
    DATETIME = "timestamp"
    JSON = "JSON"


@dataclass(frozen=True)
class Column:
    """One queryable column."""

    kind: Kind
    nullable: bool


def _column(annotation: Any) -> Column:
    """The column of a field annotated ``annotation`` (``int | None``: nullable)."""
    args = get_args(annotation)
    nullable = get_origin(annotation) in (Union, types.UnionType) and type(None) in args
    if nullable:
        (annotation,) = [a for a in args if a is not type(None)]
    base = get_origin(annotation) or annotation
    # bool before int: a bool is an int to issubclass.
    for kind, python in (
        (Kind.JSON, dict),
        (Kind.JSON, list),
        (Kind.BOOL, bool),
        (Kind.INT, int),
        (Kind.DATETIME, datetime),
        (Kind.TEXT, str),
    ):
        if isinstance(base, type) and issubclass(base, python):
            return Column(kind, nullable)
    raise TypeError(f"no column kind for {annotation!r}")


def columns_of_record(cls: type) -> dict[str, Column]:
    """The columns of a record dataclass, from its annotations."""
    return {name: _column(hint) for name, hint in get_type_hints(cls).items()}


def columns_of_model(model: type[BaseModel]) -> dict[str, Column]:
    """The columns of a pydantic model, from its fields."""
    return {name: _column(info.annotation) for name, info in model.model_fields.items()}


def where(columns: dict[str, Column], clauses: Sequence[Clause]) -> Callable[[Any], bool]:
    """A test of records against every clause (AND); raises at once on a bad condition."""
    compiled = [_clause(columns, clause) for clause in clauses]
    return lambda record: all(test(record) is True for test in compiled)


def _clause(columns: dict[str, Column], clause: Clause) -> Predicate:
    conditions = [_condition(columns, cond) for cond in clause.conditions]

    def test(record: Any) -> Truth:
        result = _all(cond(record) for cond in conditions)
        return None if result is None else (result != clause.negate)

    return test


def _all(results: Iterable[Truth]) -> Truth:
    """SQL's AND: false if any is false, else unknown if any is unknown."""
    unknown = False
    for result in results:
        if result is False:
            return False
        unknown = unknown or result is None
    return None if unknown else True


def _condition(columns: dict[str, Column], cond: Condition) -> Predicate:
    name = cond.field
    column = columns.get(name)
    if column is None or name.startswith("_"):
        raise ValidationError(f"unknown field {name!r} in query")
    if cond.path:
        if column.kind is not Kind.JSON:
            raise ValidationError(f"{name!r} is not a JSON field: no key lookups into it")
        return json_predicate(name, cond.path, cond.lookup, cond.value)
    if name in WHOLE_JSON_FIELDS and cond.lookup is not Lookup.ISNULL:
        raise ValidationError(f"a query on JSON field {name!r} can only test isnull")
    if column.kind is Kind.JSON and cond.lookup is not Lookup.ISNULL:
        raise ValidationError(
            f"cannot filter on JSON field {name!r} as a whole; look up a key in it "
            f"({name}__KEY=VALUE)"
        )
    value = cond.value
    if cond.lookup is Lookup.ISNULL:
        wanted = bool(value)
        return lambda record: (getattr(record, name) is None) == wanted
    if cond.lookup is Lookup.EXACT and value is None:
        return lambda record: getattr(record, name) is None
    if cond.lookup in _LIKE:
        return _like(name, column, cond.lookup, value)
    if cond.lookup is Lookup.IN:
        return _in(name, column, value)
    if cond.lookup is Lookup.EXACT:
        return _compare(name, _operand(name, column, value), lambda a, b: a == b)
    if cond.lookup in _COMPARE:
        if value is None or isinstance(value, bool):
            # SQLAlchemy refuses to build the comparison, on both databases.
            raise DatabaseError(f"workflow database error: {name} {cond.lookup} {value!r}")
        return _compare(name, _operand(name, column, value), _COMPARE[cond.lookup])
    raise ValidationError(f"unsupported lookup {cond.lookup!r}")


def _compare(name: str, value: Any, op: Callable[[Any, Any], bool]) -> Predicate:
    def test(record: Any) -> Truth:
        current = getattr(record, name)
        return None if current is None else op(current, value)

    return test


def _in(name: str, column: Column, value: Any) -> Predicate:
    given = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
    if not given:
        return lambda record: False
    values = [_operand(name, column, v) for v in given if v is not None]
    has_null = len(values) < len(given)

    def test(record: Any) -> Truth:
        current = getattr(record, name)
        if current is None:
            return None
        if any(current == v for v in values):
            return True
        return None if has_null else False

    return test


def _operand(name: str, column: Column, value: Any) -> Any:
    """``value`` ready to compare with column ``name``, or an error where SQL would differ."""
    kind = column.kind
    if kind is Kind.DATETIME:
        if not isinstance(value, datetime):
            # Both backends fail converting the value for the timestamp column.
            raise DatabaseError(f"workflow database error: {name} needs a datetime, got {value!r}")
        return as_utc(value)
    if kind is Kind.TEXT and isinstance(value, str):
        check_text(value, f"a query on {name}")
        return value
    if kind is Kind.BOOL and isinstance(value, bool):
        return value
    if kind is Kind.INT and isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, int) and not INT32_MIN <= value <= INT32_MAX:
            raise disagree(f"comparing {name} with {value}", "finds nothing", "refuses it")
        return value
    raise disagree(
        f"comparing {kind.value} field {name!r} with {type(value).__name__} {value!r}",
        "converts one side",
        "refuses the comparison",
    )


def _like(name: str, column: Column, lookup: Lookup, value: Any) -> Predicate:
    if column.kind is Kind.DATETIME:
        raise DatabaseError(f"workflow database error: {name} needs a datetime, got {value!r}")
    if column.kind is not Kind.TEXT:
        raise disagree(
            f"{lookup} on {column.kind.value} field {name!r}",
            "matches its text form",
            "refuses it",
        )
    pattern = str(value)
    check_text(pattern, f"a query on {name}")
    folds = lookup in (Lookup.IEXACT, Lookup.ICONTAINS, Lookup.ISTARTSWITH)

    def test(record: Any) -> Truth:
        current = getattr(record, name)
        if current is None:
            return None
        if not folds:
            return _matches(lookup, current, pattern)
        return _folded_match(name, lookup, current, pattern)

    return test


def _matches(lookup: Lookup, text: str, pattern: str) -> bool:
    if lookup is Lookup.IEXACT:
        return text == pattern
    if lookup in (Lookup.CONTAINS, Lookup.ICONTAINS):
        return pattern in text
    if lookup in (Lookup.STARTSWITH, Lookup.ISTARTSWITH):
        return text.startswith(pattern)
    return text.endswith(pattern)


def _folded_match(name: str, lookup: Lookup, text: str, pattern: str) -> bool:
    """A case-insensitive match; SQLite folds ASCII letters only, PostgreSQL every letter."""
    ascii_only = _matches(lookup, text.translate(_ASCII_LOWER), pattern.translate(_ASCII_LOWER))
    unicode = _matches(lookup, text.lower(), pattern.lower())
    if ascii_only != unicode:
        raise disagree(
            f"{lookup} {pattern!r} on {name} value {text!r}",
            "folds ASCII letters only",
            "folds every letter",
        )
    return ascii_only


@dataclass(frozen=True)
class Ordering:
    """A validated ``order_by``: (field, descending) pairs, the first key first."""

    keys: tuple[tuple[str, bool], ...]


def ordering(columns: dict[str, Column], query: JobQuery) -> Ordering:
    """The query's order (default: created_at, then job_id), its fields checked."""
    keys = []
    for name, descending in order_keys(query):
        column = columns.get(name)
        if column is None or name.startswith("_"):
            raise ValidationError(f"unknown field {name!r} in query")
        if column.kind is Kind.JSON:
            raise disagree(f"ordering by JSON field {name!r}", "orders its text", "refuses it")
        if query.after is not None and column.nullable:
            raise ValidationError(f"cannot page by {name!r} with a cursor: it may be empty")
        keys.append((name, descending))
    if query.offset < 0 or (query.limit is not None and query.limit < 0):
        raise disagree("a negative limit or offset", "ignores it", "refuses it")
    return Ordering(tuple(keys))


def ordered(records: list[T], order: Ordering, query: JobQuery) -> list[T]:
    """``records`` sorted as ``order`` says, then paged by the query's offset and limit.

    The sort is stable over insertion order: ties come as SQLite's table scan gives them.
    """
    result = list(records)
    for name, descending in reversed(order.keys):
        values = [getattr(r, name) for r in result]
        nulls = sum(v is None for v in values)
        if nulls == len(values):
            continue
        if nulls:
            raise disagree(f"ordering by {name} with NULLs", "puts them first", "puts them last")
        result.sort(key=lambda r: getattr(r, name), reverse=descending)
    if query.after is not None:
        result = _after_cursor(result, query)
    end = None if query.limit is None else query.offset + query.limit
    return result[query.offset : end]


def _after_cursor(records: list[T], query: JobQuery) -> list[T]:
    """The sorted ``records`` past the query's cursor (the rule of the SQL keyset)."""
    keys = []
    for name, descending, value in cursor_values(query):
        if records and isinstance(getattr(records[0], name), datetime):
            try:
                value = as_utc(datetime.fromisoformat(str(value)))
            except ValueError:
                raise ValidationError(f"{name}: {value!r} is not an ISO 8601 time") from None
        keys.append((name, descending, value))

    def beyond(record: Any) -> bool:
        for name, descending, value in keys:
            mine = getattr(record, name)
            if mine != value:
                return bool(mine < value) if descending else bool(mine > value)
        return False  # the cursor's own job

    return [r for r in records if beyond(r)]


# ---- key lookups into JSON fields (the rules of balsam.store.jsonpath) ----------------------

_MISSING = object()


def _at(record: Any, name: str, path: list[str]) -> Any:
    value = getattr(record, name)
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _json_kind(value: Any) -> str | None:
    if value is _MISSING:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "object" if isinstance(value, dict) else "array"


def json_predicate(name: str, path: list[str], lookup: Lookup, value: Any) -> Predicate:
    """``record.name[path] <lookup> value``; ValidationError as the SQL backends raise it."""
    where = f"{'__'.join(path)}__{lookup.value}"
    if lookup is Lookup.ISNULL:
        wanted = bool(value)
        return lambda r: (_json_kind(_at(r, name, path)) in (None, "null")) == wanted
    if lookup in (Lookup.EXACT, Lookup.IN):
        given = (
            list(value)
            if lookup is Lookup.IN and isinstance(value, list | tuple | set)
            else [value]
        )
        tests = [_json_equals(name, path, v, where) for v in given]
        return lambda r: any(t(r) for t in tests)
    if lookup in _COMPARE:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"{where} compares numbers; got {value!r}")
        op: Callable[[Any, Any], bool] = _COMPARE[lookup]

        def compare(record: Any) -> Truth:
            found = _at(record, name, path)
            return op(found, value) if _json_kind(found) == "number" else None

        return compare
    if lookup in _LIKE:
        if not isinstance(value, str):
            raise ValidationError(f"{where} matches text; got {value!r}")
        folds = lookup in (Lookup.IEXACT, Lookup.ICONTAINS, Lookup.ISTARTSWITH)

        def like(record: Any) -> Truth:
            found = _at(record, name, path)
            if _json_kind(found) != "string":
                return None
            if folds:
                return _folded_match(name, lookup, found, value)
            return _matches(lookup, found, value)

        return like
    raise ValidationError(f"unsupported lookup {where!r}")


def _json_equals(name: str, path: list[str], value: Any, where: str) -> Callable[[Any], bool]:
    if value is None:
        return lambda r: _json_kind(_at(r, name, path)) in (None, "null")
    if isinstance(value, int | float | str):  # bool is an int
        kind = _json_kind(value)
        return lambda r: _json_kind(found := _at(r, name, path)) == kind and found == value
    raise ValidationError(f"{where} compares a text, a number, a boolean or None; got {value!r}")

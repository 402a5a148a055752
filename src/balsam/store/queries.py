"""Translate the serialisable query language (balsam.schemas.queries) into SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, and_, false, not_, or_, true
from sqlalchemy.orm import InstrumentedAttribute

from balsam.errors import ValidationError
from balsam.schemas.queries import (
    WHOLE_JSON_FIELDS,
    Clause,
    Condition,
    JobQuery,
    Lookup,
    cursor_values,
    order_keys,
)
from balsam.store.jsonpath import json_condition
from balsam.store.likes import LIKE_LOOKUPS, like_sql
from balsam.store.tables import Base, JobRow, UTCDateTime

#: Lookups valid on JSON columns: only equality and null checks make sense there.
_JSON_FIELDS = {"environ_vars", "data", "tags"}


def column_of(model: type[Base], field: str) -> InstrumentedAttribute[Any]:
    """The mapped column ``field`` of ``model`` or a ValidationError naming the bad field."""
    attr = getattr(model, field, None)
    if field.startswith("_") or not isinstance(attr, InstrumentedAttribute):
        raise ValidationError(f"unknown field {field!r} in query")
    return attr


def condition_sql(model: type[Base], cond: Condition) -> ColumnElement[bool]:
    """The SQL expression for one condition."""
    col = column_of(model, cond.field)
    value = cond.value
    if cond.path:
        if cond.field not in _JSON_FIELDS:
            raise ValidationError(f"{cond.field!r} is not a JSON field: no key lookups into it")
        return json_condition(col, cond.path, cond.lookup, value)
    if cond.field in WHOLE_JSON_FIELDS and cond.lookup is not Lookup.ISNULL:
        raise ValidationError(f"a query on JSON field {cond.field!r} can only test isnull")
    if cond.field in _JSON_FIELDS and cond.lookup not in (Lookup.ISNULL,):
        raise ValidationError(
            f"cannot filter on JSON field {cond.field!r} as a whole; look up a key in it "
            f"({cond.field}__KEY=VALUE)"
        )
    if isinstance(col.type, UTCDateTime):
        value = _as_datetimes(cond.field, value)
    match cond.lookup:
        case Lookup.EXACT:
            return col.is_(None) if value is None else col == value
        case lookup if lookup in LIKE_LOOKUPS:
            return like_sql(col, lookup, str(value))
        case Lookup.IN:
            values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
            return col.in_(values) if values else false()
        case Lookup.GT:
            return cast(ColumnElement[bool], col > value)
        case Lookup.GTE:
            return cast(ColumnElement[bool], col >= value)
        case Lookup.LT:
            return cast(ColumnElement[bool], col < value)
        case Lookup.LTE:
            return cast(ColumnElement[bool], col <= value)
        case Lookup.ISNULL:
            return col.is_(None) if value else col.is_not(None)
    raise ValidationError(f"unsupported lookup {cond.lookup!r}")


def _as_datetimes(field: str, value: Any) -> Any:
    """ISO 8601 text as datetimes, for a time column: a query that travelled as JSON (through
    the edge service) carries its datetimes as text, which the column type cannot bind."""
    if isinstance(value, list | tuple | set | frozenset):
        return [_as_datetimes(field, v) for v in value]
    if not isinstance(value, str):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{field}: {value!r} is not an ISO 8601 time") from None


def clause_sql(model: type[Base], clause: Clause) -> ColumnElement[bool]:
    """AND of a clause's conditions, negated for ``exclude``."""
    parts = [condition_sql(model, c) for c in clause.conditions]
    expr = and_(true(), *parts)
    return not_(expr) if clause.negate else expr


def where_sql(model: type[Base], clauses: list[Clause]) -> ColumnElement[bool]:
    """AND of every clause."""
    return and_(true(), *(clause_sql(model, c) for c in clauses))


def apply_job_query(stmt: Select[Any], query: JobQuery, paginate: bool = True) -> Select[Any]:
    """Filter, order and page ``stmt`` (a select over JobRow) as ``query`` says."""
    stmt = stmt.where(where_sql(JobRow, query.clauses))
    if not paginate:
        return stmt
    for name, desc in order_keys(query):
        col = column_of(JobRow, name)
        stmt = stmt.order_by(col.desc() if desc else col.asc())
    if query.after is not None:
        stmt = stmt.where(after_sql(query))
    if query.offset:
        stmt = stmt.offset(query.offset)
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    return stmt


def after_sql(query: JobQuery) -> ColumnElement[bool]:
    """The jobs after the query's cursor in its order: for keys k1..kn and the cursor's
    values v1..vn, (k1 beyond v1) or (k1 = v1 and k2 beyond v2) or ...; with k1 at or beyond
    v1 said first as well, so the database starts its index range scan there."""
    keys = []
    for name, desc, value in cursor_values(query):
        col = column_of(JobRow, name)
        if JobRow.__table__.c[name].nullable:
            raise ValidationError(f"cannot page by {name!r} with a cursor: it may be empty")
        if isinstance(col.type, UTCDateTime):
            value = _as_datetimes(name, value)
        keys.append((col, desc, value))
    beyond = []
    for i, (col, desc, value) in enumerate(keys):
        ties = [c == v for c, _, v in keys[:i]]
        beyond.append(and_(*ties, col < value if desc else col > value))
    first, first_desc, first_value = keys[0]
    start = first <= first_value if first_desc else first >= first_value
    return and_(start, or_(*beyond))


def any_of(exprs: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    """OR of ``exprs`` (false when empty)."""
    return or_(false(), *exprs)

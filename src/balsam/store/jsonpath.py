"""Lookups into JSON fields (``data__key__gt=2``) as SQL on SQLite and PostgreSQL.

A key path is read with each database's JSON functions and compared only with values of its
own JSON kind: ``data__n__gt=2`` matches jobs whose ``data["n"]`` is a number above 2 (a text
``"3"`` is not a number), ``data__name="x"`` those whose ``data["name"]`` is the text ``x``.
The extraction is guarded by a CASE on the kind, so PostgreSQL never casts text to a number.
The in-memory backend (balsam.testing.memquery) follows the same rules.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import String, and_, bindparam, false, or_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Float, Text

from balsam.errors import ValidationError
from balsam.schemas.queries import Lookup
from balsam.store.likes import LIKE_LOOKUPS, like_sql


class _JsonAt(FunctionElement[Any]):
    """A value read at ``path`` in a JSON column (see the subclasses)."""

    inherit_cache = True

    def __init__(
        self, column: ColumnElement[Any] | InstrumentedAttribute[Any], path: list[str]
    ) -> None:
        self.path = list(path)
        super().__init__(column)


class json_kind(_JsonAt):
    """The JSON kind at ``path``: number, string, true, false, null, object, array, or NULL
    when the key is missing."""

    type = Text()
    name = "json_kind"
    inherit_cache = True


class json_number(_JsonAt):
    """The number at ``path``, NULL when it holds anything else."""

    type = Float()
    name = "json_number"
    inherit_cache = True


class json_text(_JsonAt):
    """The text at ``path``, NULL when it holds anything else."""

    type = Text()
    name = "json_text"
    inherit_cache = True


def _column(element: _JsonAt, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element.clauses
    return compiler.process(column, **kw)


def _sqlite_path(element: _JsonAt, compiler: SQLCompiler, **kw: Any) -> str:
    path = "$" + "".join(f".{json.dumps(key)}" for key in element.path)
    return compiler.process(bindparam(None, path, type_=String()), **kw)


def _pg_path(element: _JsonAt, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(bindparam(None, element.path, type_=ARRAY(Text())), **kw)


@compiles(json_kind, "sqlite")
def _kind_sqlite(element: json_kind, compiler: SQLCompiler, **kw: Any) -> str:
    typed = (
        f"json_type({_column(element, compiler, **kw)}, {_sqlite_path(element, compiler, **kw)})"
    )
    return (
        f"(CASE {typed} WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' "
        f"WHEN 'text' THEN 'string' ELSE {typed} END)"
    )


@compiles(json_kind, "postgresql")
def _kind_pg(element: json_kind, compiler: SQLCompiler, **kw: Any) -> str:
    at = f"({_column(element, compiler, **kw)} #> {_pg_path(element, compiler, **kw)})"
    return (
        f"(CASE WHEN json_typeof({at}) = 'boolean' THEN {at} #>> '{{}}' ELSE json_typeof({at}) END)"
    )


@compiles(json_number, "sqlite")
def _number_sqlite(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    col, path = _column(element, compiler, **kw), _sqlite_path(element, compiler, **kw)
    return (
        f"(CASE WHEN json_type({col}, {path}) IN ('integer', 'real') "
        f"THEN json_extract({col}, {path}) END)"
    )


@compiles(json_number, "postgresql")
def _number_pg(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    col, path = _column(element, compiler, **kw), _pg_path(element, compiler, **kw)
    return (
        f"(CASE WHEN json_typeof({col} #> {path}) = 'number' "
        f"THEN CAST({col} #>> {path} AS DOUBLE PRECISION) END)"
    )


@compiles(json_text, "sqlite")
def _text_sqlite(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    col, path = _column(element, compiler, **kw), _sqlite_path(element, compiler, **kw)
    return f"(CASE WHEN json_type({col}, {path}) = 'text' THEN json_extract({col}, {path}) END)"


@compiles(json_text, "postgresql")
def _text_pg(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    col, path = _column(element, compiler, **kw), _pg_path(element, compiler, **kw)
    return f"(CASE WHEN json_typeof({col} #> {path}) = 'string' THEN {col} #>> {path} END)"


def json_condition(
    column: ColumnElement[Any] | InstrumentedAttribute[Any],
    path: list[str],
    lookup: Lookup,
    value: Any,
) -> ColumnElement[bool]:
    """``column[path] <lookup> value`` under the rules of the module docstring."""
    where = f"{'__'.join(path)}__{lookup.value}"
    if lookup is Lookup.ISNULL:
        return _is_null(column, path, bool(value))
    if lookup is Lookup.EXACT:
        return _equals(column, path, value, where)
    if lookup is Lookup.IN:
        values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
        return or_(false(), *(_equals(column, path, v, where) for v in values))
    if lookup in (Lookup.GT, Lookup.GTE, Lookup.LT, Lookup.LTE):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"{where} compares numbers; got {value!r}")
        number = json_number(column, path)
        compare = {Lookup.GT: number > value, Lookup.GTE: number >= value}
        compare.update({Lookup.LT: number < value, Lookup.LTE: number <= value})
        return compare[lookup]
    if lookup in LIKE_LOOKUPS:
        if not isinstance(value, str):
            raise ValidationError(f"{where} matches text; got {value!r}")
        return like_sql(json_text(column, path), lookup, value)
    raise ValidationError(f"unsupported lookup {where!r}")


def _is_null(
    column: ColumnElement[Any] | InstrumentedAttribute[Any], path: list[str], wanted: bool
) -> ColumnElement[bool]:
    kind = json_kind(column, path)
    if wanted:
        return or_(kind.is_(None), kind == "null")
    return and_(kind.is_not(None), kind != "null")


def _equals(
    column: ColumnElement[Any] | InstrumentedAttribute[Any], path: list[str], value: Any, where: str
) -> ColumnElement[bool]:
    if value is None:
        return _is_null(column, path, True)
    if isinstance(value, bool):
        return json_kind(column, path) == ("true" if value else "false")
    if isinstance(value, int | float):
        return json_number(column, path) == value
    if isinstance(value, str):
        return json_text(column, path) == value
    raise ValidationError(f"{where} compares a text, a number, a boolean or None; got {value!r}")

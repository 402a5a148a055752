"""A small, serialisable query language for jobs and apps (Django-style ``field__lookup``).

``filter(a=1, b__in=[2])`` becomes one :class:`Clause` of two :class:`Condition`; ``exclude``
adds a negated clause. Clauses are AND'ed. Being plain data, a query travels over HTTP as is.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from balsam.domain.text import text_problem
from balsam.errors import ValidationError
from balsam.schemas.problems import first_error


class Lookup(StrEnum):
    """Supported lookups (Django's names)."""

    EXACT = "exact"
    IEXACT = "iexact"
    CONTAINS = "contains"
    ICONTAINS = "icontains"
    STARTSWITH = "startswith"
    ISTARTSWITH = "istartswith"
    ENDSWITH = "endswith"
    IN = "in"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    ISNULL = "isnull"


class Condition(BaseModel):
    """``field <lookup> value``."""

    model_config = ConfigDict(extra="forbid")

    field: str
    lookup: Lookup = Lookup.EXACT
    value: Any = None
    #: Keys into a JSON field (``data__run__n`` -> field ``data``, path ``["run", "n"]``).
    path: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _text_can_be_sent(self) -> Condition:
        # A NUL byte or undecodable text cannot reach the database's driver (nor match
        # anything stored: such text is refused when jobs are written).
        values = self.value if isinstance(self.value, list | tuple | set) else [self.value]
        for text in (self.field, *values):
            if isinstance(text, str) and (problem := text_problem(text)):
                raise ValueError(f"{self.field}__{self.lookup.value}: {text!r} {problem}")
        return self


class Clause(BaseModel):
    """Conditions AND'ed together, optionally negated."""

    model_config = ConfigDict(extra="forbid")

    conditions: list[Condition] = Field(default_factory=list)
    negate: bool = False


class JobQuery(BaseModel):
    """Which jobs, in what order, how many."""

    model_config = ConfigDict(extra="forbid")

    clauses: list[Clause] = Field(default_factory=list)
    order_by: list[str] = Field(default_factory=list)
    limit: int | None = None
    offset: int = 0
    #: A cursor (:func:`cursor_after` of the last job of the page before): the jobs after that
    #: one in this order. Keyset paging: a page deep in a million jobs costs what the first
    #: does, where ``offset`` reads and drops every job before it.
    after: str | None = Field(default=None, max_length=4096)

    @model_validator(mode="after")
    def _cursor_or_offset(self) -> JobQuery:
        if self.after is not None and self.offset:
            raise ValueError("a query pages with a cursor (after) or an offset, not both")
        return self


#: The order of a query with no ``order_by``: oldest first.
DEFAULT_ORDER = ("created_at", "job_id")


def order_keys(query: JobQuery) -> list[tuple[str, bool]]:
    """The query's order as (field, descending) pairs, ``job_id`` last: a total order, so
    that pages never repeat or skip a job tied with another on every asked key."""
    keys = [(key.lstrip("-"), key.startswith("-")) for key in query.order_by or DEFAULT_ORDER]
    if all(name != "job_id" for name, _ in keys):
        keys.append(("job_id", False))
    return keys


def cursor_after(query: JobQuery, job: Any) -> str:
    """The cursor of the page after ``job`` (the last of a page of ``query``): its values of
    the order's fields, as URL-safe text (ValidationError for an order a cursor cannot keep:
    a field ``job`` has no value in, which SQL orders apart from all values)."""
    values = []
    for name, _ in order_keys(query):
        value = getattr(job, name, None)
        if value is None:
            raise ValidationError(f"cannot page by {name!r} with a cursor: it may be empty")
        values.append(value.isoformat() if isinstance(value, datetime) else value)
    # The order goes with the values, so a cursor given to another query's order is refused
    # rather than read as values of other fields.
    text = json.dumps([_order_text(query), values], separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _order_text(query: JobQuery) -> str:
    return ",".join(("-" if desc else "") + name for name, desc in order_keys(query))


def cursor_values(query: JobQuery) -> list[tuple[str, bool, Any]]:
    """(field, descending, value) of each order key for ``query.after`` (ValidationError for
    a cursor that is not one of this order's)."""
    assert query.after is not None
    keys = order_keys(query)
    try:
        padded = query.after + "=" * (-len(query.after) % 4)
        order, values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        raise ValidationError(f"not a job cursor: {query.after[:40]!r}") from None
    if order != _order_text(query) or not isinstance(values, list) or None in values:
        raise ValidationError(
            "the cursor is not one of this query's order: page again from the start"
        )
    return [(name, desc, value) for (name, desc), value in zip(keys, values, strict=True)]


def parse_lookup(key: str) -> tuple[str, Lookup]:
    """Split ``name__icontains`` into ``("name", Lookup.ICONTAINS)``; bare names are exact."""
    field, sep, lookup = key.rpartition("__")
    if not sep:
        return key, Lookup.EXACT
    try:
        return field, Lookup(lookup)
    except ValueError:
        return key, Lookup.EXACT


#: Fields holding JSON, into which ``FIELD__KEY`` looks up a key.
JSON_FIELDS = frozenset({"data", "tags", "environ_vars"})
#: JSON fields a query may only test with ``isnull``: a function job's call and outcome.
WHOLE_JSON_FIELDS = frozenset({"function_args", "function_kwargs", "function_outcome"})


def split_json_path(field: str) -> tuple[str, list[str]]:
    """``("data", ["a", "b"])`` for ``data__a__b``; a field that is not JSON stays whole."""
    head, _, rest = field.partition("__")
    if head in JSON_FIELDS and rest:
        return head, rest.split("__")
    return field, []


def clause_from_kwargs(kwargs: dict[str, Any], negate: bool = False) -> Clause:
    """Build a clause from Django-style keyword arguments (``data__key__gt=1`` included)."""
    conditions = []
    for key, value in kwargs.items():
        field, lookup = parse_lookup(key)
        field, path = split_json_path(field)
        try:
            conditions.append(Condition(field=field, lookup=lookup, value=value, path=path))
        except PydanticValidationError as exc:
            raise ValidationError(first_error(exc)) from None
    return Clause(conditions=conditions, negate=negate)

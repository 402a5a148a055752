"""Django's text lookups (``contains``, ``istartswith``, ...) as SQL LIKE / ILIKE, escaped.

One definition for plain columns (balsam.store.queries) and for text read from JSON fields
(balsam.store.jsonpath).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement

from balsam.schemas.queries import Lookup

#: The text lookups: (text before the value, text after it, case-insensitive).
LIKE_LOOKUPS: dict[Lookup, tuple[str, str, bool]] = {
    Lookup.IEXACT: ("", "", True),
    Lookup.CONTAINS: ("%", "%", False),
    Lookup.ICONTAINS: ("%", "%", True),
    Lookup.STARTSWITH: ("", "%", False),
    Lookup.ISTARTSWITH: ("", "%", True),
    Lookup.ENDSWITH: ("%", "", False),
}


def like_sql(expr: Any, lookup: Lookup, text: str) -> ColumnElement[bool]:
    """``expr <lookup> text`` for one of :data:`LIKE_LOOKUPS`, with ``%``, ``_`` and ``\\``
    in ``text`` matched as themselves."""
    before, after, fold = LIKE_LOOKUPS[lookup]
    pattern = f"{before}{_escape(text)}{after}"
    result: ColumnElement[bool] = (
        expr.ilike(pattern, escape="\\") if fold else expr.like(pattern, escape="\\")
    )
    return result


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

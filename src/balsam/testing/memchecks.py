"""Values SQLite stores but PostgreSQL refuses: the fake refuses them loudly.

The two databases disagree on these (a text with a NUL byte, an integer beyond 32 bits, a
too long session key, NaN in a JSON document): there is no one behaviour to copy, so the fake
raises NotImplementedError naming the value rather than pick one.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

#: The range of PostgreSQL's ``integer`` columns (SQLite's hold 64 bits).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def disagree(what: str, sqlite: str, postgres: str) -> NotImplementedError:
    """The error for ``what``, on which the two SQL backends behave differently."""
    return NotImplementedError(
        f"MemoryBackend does not emulate {what}: SQLite {sqlite}, PostgreSQL {postgres}"
    )


def check_int(value: int | None, what: str) -> None:
    """Refuse an integer an ``integer`` column of PostgreSQL cannot hold."""
    if value is not None and not INT32_MIN <= value <= INT32_MAX:
        raise disagree(f"{what}={value} (beyond 32 bits)", "stores it", "refuses it")


def check_text(value: str | None, what: str, max_length: int | None = None) -> None:
    """Refuse text PostgreSQL cannot store: a NUL byte, or longer than its column."""
    if value is None:
        return
    if "\x00" in value:
        raise disagree(f"a NUL byte in {what}", "stores it", "refuses it")
    if max_length is not None and len(value) > max_length:
        raise disagree(f"{what} longer than {max_length} characters", "stores it", "refuses it")


def stored_json(value: Any, what: str) -> Any:
    """``value`` as a JSON column gives it back (tuples become lists, keys text).

    Raises TypeError for what JSON cannot hold, as both SQL backends do on insert.
    """
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:
        json.dumps(value)  # anything but NaN or Infinity raises here as the SQL backends do
        raise disagree(f"NaN or Infinity in {what}", "stores it", "refuses it") from None
    return json.loads(text)


def check_known(model: BaseModel, known: frozenset[str]) -> None:
    """Refuse a request that uses a field the fake was not written for (a newer schema)."""
    for name, info in type(model).model_fields.items():
        if name not in known and getattr(model, name) != info.get_default(
            call_default_factory=True
        ):
            raise NotImplementedError(
                f"MemoryBackend does not know {type(model).__name__}.{name} yet"
            )

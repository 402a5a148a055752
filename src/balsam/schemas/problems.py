"""Pydantic's refusals in Balsam's words: one line, naming the field."""

from __future__ import annotations

from pydantic import ValidationError as PydanticValidationError


def first_error(exc: PydanticValidationError) -> str:
    """One line describing the first problem pydantic found (``field: why``, or ``why``)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg

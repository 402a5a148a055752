"""Balsam errors to HTTP statuses, in one place (the client maps them back).

The body is ``{"detail": message, "error": class name}``; the class name lets the client raise
the same :class:`~balsam.errors.BalsamError` subclass (409 covers several).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from balsam.errors import (
    AlreadyExists,
    Ambiguous,
    BalsamError,
    DatabaseError,
    DatabaseUnavailable,
    DependencyError,
    InvalidTransition,
    NotFound,
    ValidationError,
)

log = logging.getLogger(__name__)

#: Most specific first: DatabaseUnavailable is a DatabaseError.
STATUSES: tuple[tuple[type[BalsamError], int], ...] = (
    (NotFound, 404),
    (AlreadyExists, 409),
    (InvalidTransition, 409),
    (DependencyError, 409),
    (Ambiguous, 409),
    (ValidationError, 422),
    (DatabaseUnavailable, 503),
    (DatabaseError, 500),
)


def status_of(exc: BalsamError) -> int:
    """The HTTP status for ``exc`` (400 for any other refusal)."""
    return next((code for kind, code in STATUSES if isinstance(exc, kind)), 400)


async def _balsam_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BalsamError)
    status = status_of(exc)
    if status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status)


def install(app: FastAPI) -> None:
    """Register the mapping on ``app``."""
    app.add_exception_handler(BalsamError, _balsam_error)

"""Balsam errors to HTTP statuses, in one place (the client maps them back).

The body is ``{"detail": message, "error": class name}``; the class name lets the client raise
the same :class:`~balsam.errors.BalsamError` subclass (409 covers several). A 5xx says only
which incident of the server's log holds the database's error text.
"""

from __future__ import annotations

import logging
import secrets

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
    detail = str(exc)
    if status >= 500:
        # The database's own text (statements, hosts, constraint names) stays in the server's
        # log; the caller gets an incident id to quote.
        incident = secrets.token_hex(4)
        log.warning(
            "incident %s: %s %s: %s: %s",
            incident, request.method, request.url.path, type(exc).__name__, exc,
        )  # fmt: skip
        what = "unavailable" if status == 503 else "failed"
        detail = f"the workflow database {what} (incident {incident} in the server's log)"
    return JSONResponse({"detail": detail, "error": type(exc).__name__}, status_code=status)


def install(app: FastAPI) -> None:
    """Register the mapping on ``app``."""
    app.add_exception_handler(BalsamError, _balsam_error)

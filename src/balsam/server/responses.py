"""The error answers each route declares, so the OpenAPI document lists every status a caller
can get (tests/server/test_schemathesis.py holds the server to it).

Every route under ``/db/{name}`` may answer 400 (a body that cannot be parsed), 401 (no valid
token), 403 (no role, or too weak a one), 404 (the database, or the thing named in the path, is
not there), 413 (the body is over the limit: :class:`balsam.server.app.BodyLimit` reads every
request), 422 (a malformed request, or Balsam's own ValidationError), 500 and 503 (the database
failed or is unavailable; the body names an incident, see :mod:`balsam.server.errors`). Routes
that can be refused by the database's state (AlreadyExists, InvalidTransition,
DependencyError, Ambiguous) also declare 409 with :data:`CONFLICT`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    """An error answer: what went wrong, and the Balsam error class it was (when one was)."""

    detail: str
    #: The :class:`~balsam.errors.BalsamError` subclass (``NotFound``, ``InvalidTransition``,
    #: ...); absent on 401, 403 and 413, which come from authorization and limits.
    error: str | None = None


class FieldProblems(BaseModel):
    """A request the schema refused (FastAPI's 422): one entry per problem, each with the
    location (``loc``), the message (``msg``) and the kind (``type``)."""

    detail: list[dict[str, Any]]


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


#: What every route of a database may answer besides its success.
DB_ROUTE: dict[int | str, dict[str, Any]] = {
    400: _problem("The body cannot be parsed (bytes that are not UTF-8 JSON)."),
    401: _problem("Missing, unknown, expired or revoked token."),
    403: _problem("The token's user lacks the role this route needs on the database."),
    404: _problem("The database is not served here, or the thing named is not in it."),
    413: _problem("The request body, or the number of items in it, is over the limit."),
    422: {
        # Union: FastAPI's own list of schema problems, or Balsam's ValidationError (one line).
        "model": FieldProblems | Problem,
        "description": "The request is malformed, or Balsam refused its values.",
    },
    500: _problem("The database failed; the detail names an incident in the server's log."),
    503: _problem("The database is unavailable for now; the call may be repeated."),
}

#: Added by routes that can be refused by the database's state.
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _problem(
        "Refused by the database's state: AlreadyExists, InvalidTransition, DependencyError or "
        "Ambiguous (named in error)."
    ),
}

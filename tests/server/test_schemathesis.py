"""schemathesis against the edge service's own OpenAPI document: property-based requests to
every operation, generated from the document, each answer checked against it.

Checks, on every answer: no 5xx (``not_a_server_error``), the status is one the operation
documents (``status_code_conformance``), the body fits the schema documented for that status
(``response_schema_conformance``) and so does its content type (``content_type_conformance``).

Passes: an owner token, with valid requests (positive) and invalid ones (negative: wrong
types, missing fields, undecodable bodies), in process on a real SQLite workflow database; a
viewer token, whose calls of the routes that need more than a viewer must be 403 and of the
others never 401/403; and a smaller owner run on a real uvicorn on loopback, over HTTP.

Deterministic (``derandomize``: the same cases every run, so a failure is reproducible and
CI cannot pass by luck) and bounded (a fixed number of examples per operation).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from balsam.backends.factory import init_site
from balsam.backends.local import LocalBackend
from balsam.config import SQLITE_FILE
from balsam.schemas.apps import AppCreate
from balsam.schemas.batchjobs import BatchJobCreate
from balsam.schemas.jobs import JobCreate
from balsam.server.app import create_app
from balsam.server.auth import AuthStore, Role
from balsam.server.deps import Limits
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from server.test_authorization import POLICY, ROUTERS
from serverkit import uvicorn_server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
#: The long-poll cap of the servers under test: schemathesis picks ``after`` equal to the
#: marker now and then, and each such call waits the whole cap.
WAIT_CAP = 0.2


def _seed(backend: LocalBackend) -> None:
    """Rows for the reads to return, so their bodies (not only empty lists) meet the schema."""
    backend.create_app(AppCreate(name="hello", executable="echo"))
    a, b = backend.create_jobs(
        [
            JobCreate(workflow="w", application="hello", name="a", args="x", tags={"k": "v"}),
            JobCreate(workflow="w", application="hello", name="b", num_nodes=2),
        ]
    )
    backend.add_dependency(a.job_id, b.job_id)
    backend.open_session("seed", "localhost", 1)
    backend.create_batch_job(
        BatchJobCreate(scheduler="local", num_nodes=1, wall_time_minutes=5, job_mode="serial")
    )


def _role_needed() -> dict[tuple[str, str], Role]:
    """The role each operation (method, path) needs, from the authorization policy."""
    return {
        (method, route.path): POLICY[route.name]
        for module in ROUTERS
        for route in module.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }


Extra = Callable[[str, str, GenerationMode, int], str | None]


def _run(
    schema: Any,
    token: str,
    examples: dict[GenerationMode, int],
    base_url: str | None = None,
    extra: Extra | None = None,
) -> list[str]:
    """Every operation of ``schema`` called with ``examples[mode]`` generated cases of each
    mode, as the user of ``token`` on database ``site``; one entry per failing operation and
    mode."""
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, count in examples.items():
            strategy = operation.as_strategy(
                generation_mode=mode,
                path_parameters={"name": "site"} if "{name}" in operation.path else None,
                headers={"Authorization": f"Bearer {token}"},
            )
            problem = _explore(operation.path, strategy, mode, count, base_url, extra)
            if problem is not None:
                failures.append(f"{operation.label} ({mode.value}): {problem}")
    return failures


def _explore(
    path: str,
    strategy: Any,
    mode: GenerationMode,
    examples: int,
    base_url: str | None,
    extra: Extra | None,
) -> str | None:
    """Call one operation with the cases of ``strategy``; the first failure, or None."""

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        # No shrinking: the first failing case is reported as generated, which keeps a
        # failing run short; the message carries its curl command.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def call(case: Any) -> None:
        if path.endswith("/events/stream"):
            # A followed stream is a live feed that never ends by itself, and a case's answer
            # is read to its end: the cases ask for the events there are. Following is tested
            # against a real uvicorn in tests/e2e/test_event_stream_remote.py.
            case.query = {**(case.query or {}), "follow": "false"}
        response = case.call_and_validate(base_url=base_url, checks=CHECKS)
        if extra is not None:
            problem = extra(case.method, path, mode, response.status_code)
            assert problem is None, f"{problem}: {case.as_curl_command()}"

    try:
        call()
    except Unsatisfiable:
        # Negative cases of an operation without parameters or a body cannot be made.
        assert mode is GenerationMode.NEGATIVE, path
    except (FailureGroup, AssertionError) as exc:
        return str(exc)
    return None


def _sqlite(path: Path) -> LocalBackend:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return LocalBackend(engine)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[FastAPI, AuthStore]]:
    """The app over a seeded SQLite database ``site``, with its auth store."""
    backend = _sqlite(tmp_path / "site.db")
    _seed(backend)
    auth = AuthStore.open(tmp_path / "state")
    yield create_app({"site": backend}, auth, Limits(max_wait_seconds=WAIT_CAP)), auth
    backend.close()


def _never_denied(method: str, path: str, mode: GenerationMode, status: int) -> str | None:
    return f"{status} for an owner" if status in (401, 403) else None


def test_owner_in_process(app: tuple[FastAPI, AuthStore]) -> None:
    asgi, auth = app
    token = auth.add_user("alice")
    auth.grant("alice", Role.OWNER, "site")
    schema = schemathesis.openapi.from_asgi("/openapi.json", asgi)
    examples = {GenerationMode.POSITIVE: 50, GenerationMode.NEGATIVE: 30}
    failures = _run(schema, token, examples, extra=_never_denied)
    assert not failures, "\n\n".join(failures)


def test_viewer_in_process(app: tuple[FastAPI, AuthStore]) -> None:
    asgi, auth = app
    token = auth.add_user("val")
    auth.grant("val", Role.VIEWER, "site")
    needed = _role_needed()

    def denied_exactly_when_needed(
        method: str, path: str, mode: GenerationMode, status: int
    ) -> str | None:
        role = needed.get((method.upper(), path))
        if role is None:  # /health and the like: open
            return f"{status} on an open route" if status in (401, 403) else None
        if not Role.VIEWER.allows(role):
            return None if status == 403 else f"{status} for a viewer on a {role} route"
        return f"{status} for a viewer on a read" if status in (401, 403) else None

    schema = schemathesis.openapi.from_asgi("/openapi.json", asgi)
    failures = _run(schema, token, {GenerationMode.POSITIVE: 25}, extra=denied_exactly_when_needed)
    assert not failures, "\n\n".join(failures)
    assert needed, "no route under /db/ was found"


def test_owner_on_uvicorn(tmp_path: Path) -> None:
    site = init_site(tmp_path / "site").path
    seeded = LocalBackend(make_engine(f"sqlite:///{site / SQLITE_FILE}"))
    _seed(seeded)
    seeded.close()
    auth = AuthStore.open(tmp_path / "state")
    token = auth.add_user("alice")
    auth.grant("alice", Role.OWNER, "site")
    args = ("--max-wait", str(WAIT_CAP))
    with uvicorn_server([site], tmp_path / "state", args=args) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        assert re.match(r"http://127\.0\.0\.1:\d+$", base)
        failures = _run(
            schema, token, {GenerationMode.POSITIVE: 12}, base_url=base, extra=_never_denied
        )
    assert not failures, "\n\n".join(failures)

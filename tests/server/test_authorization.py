"""Every route of the edge service, by every role, no token, a bad token, and a user whose grant
is on another database: 401 without a valid token, 403 (and an audit line) without the role,
anything but 401/403 with it. The table below is the authorization policy, written out; a
route missing from it fails the test, so no route can be added without deciding who may call it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from balsam.backends.local import LocalBackend
from balsam.server.app import create_app
from balsam.server.auth import AuthStore, Role
from balsam.server.routers import account, apps, batchjobs, jobs, service, sessions, stream
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from serverkit import in_process

V, S, OWN = Role.VIEWER, Role.SUBMITTER, Role.OWNER
POLICY: dict[str, Role] = {
    # apps
    "create_app": OWN, "list_apps": V, "get_app": V, "update_app": OWN, "delete_app": OWN,
    # jobs
    "create_jobs": S, "bulk_create_jobs": S, "query_jobs": V, "count_jobs": V,
    "count_by_state": V, "job_shapes": V, "update_jobs": S, "delete_jobs": OWN, "note_jobs": S,
    "resolve_job_id": V, "get_job": V, "set_state": S, "kill_jobs": S, "children_of": V,
    "history": V, "events": V, "add_dependency": S, "remove_dependency": S,
    # launcher sessions
    "open_session": S, "list_sessions": V, "expire_sessions": S, "heartbeat": S,
    "close_session": S, "ended_held_jobs": V, "claim_jobs": S, "record_updates": S,
    "record_and_claim": S, "release_jobs": S,
    # batch jobs
    "create_batch_job": S, "list_batch_jobs": V, "get_batch_job": V, "update_batch_job": S,
    "batch_job_history": V,
    # service locks and the change signal
    "acquire_service_lock": OWN, "renew_service_lock": OWN, "release_service_lock": OWN,
    "get_service_lock": V, "request_service_stop": OWN, "change_marker": V, "wait_for_change": V,
    # the event log and its stream
    "events_since": V, "stream_events": V,
    # the caller, and the grants an owner gives
    "whoami": V, "list_grants": OWN, "grant": OWN, "revoke": OWN,
}  # fmt: skip
ROUTERS = (account, apps, batchjobs, jobs, service, sessions, stream)
CALLERS = ["none", "bad", "viewer", "submitter", "owner", "other"]


def _sqlite(path: Path) -> LocalBackend:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return LocalBackend(engine)


def _routes() -> list[APIRoute]:
    """The routes of every router the app includes (checked against its OpenAPI paths)."""
    routes = [r for m in ROUTERS for r in m.router.routes if isinstance(r, APIRoute)]
    app = create_app({}, AuthStore(Path("/nonexistent")))
    served = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert {(m, r.path) for r in routes for m in r.methods} == {
        (m, p) for m, p in served if p.startswith("/db/")
    }
    return routes


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """One server over databases ``site`` and ``elsewhere``; a token per caller."""
    tmp = tmp_path_factory.mktemp("authz")
    site, elsewhere = _sqlite(tmp / "site.db"), _sqlite(tmp / "elsewhere.db")
    with in_process({"site": site, "elsewhere": elsewhere}, tmp / "state") as (client, auth):
        tokens = {"bad": "not-a-token"}
        for role in Role:
            tokens[role.value] = auth.add_user(role.value)
            auth.grant(role.value, role, "site")
        tokens["other"] = auth.add_user("other")
        auth.grant("other", Role.OWNER, "elsewhere")
        yield client, tokens
    site.close()
    elsewhere.close()


def test_every_route_is_in_the_policy() -> None:
    names = sorted(r.name for r in _routes())
    assert names == sorted(POLICY), "a route without a decided role (or a stale entry)"


def _url(route: APIRoute) -> str:
    path = re.sub(r"\{name\}", "site", route.path, count=1)
    path = re.sub(r"\{(session_id|batch_id)\}", "1", path)
    path = re.sub(r"\{after\}", "0", path)
    # A stream that ends once it sent what there is (in process, a response is read whole).
    query = {"wait_for_change": "?after=0", "stream_events": "?follow=false"}
    return re.sub(r"\{[a-z_]+\}", "x", path) + query.get(route.name, "")


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", _routes(), ids=lambda r: r.name)
def test_route_by_caller(
    served: tuple[httpx.Client, dict[str, str]],
    route: APIRoute,
    caller: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, tokens = served
    (method,) = route.methods
    headers = {} if caller == "none" else {"Authorization": f"Bearer {tokens[caller]}"}
    body = None if method in ("GET", "DELETE") else {}
    with caplog.at_level(logging.WARNING, logger="balsam.server.audit"):
        response = client.request(method, _url(route), json=body, headers=headers)
    needed = POLICY[route.name]
    if caller in ("none", "bad"):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
    elif caller == "other" or not Role(caller).allows(needed):
        assert response.status_code == 403, response.text
        assert "needs role" in response.json()["detail"]
        (line,) = [r.getMessage() for r in caplog.records if r.name == "balsam.server.audit"]
        assert "db=site" in line and f"needed={needed}" in line
    else:
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text


def test_a_grant_on_an_unserved_database_is_404_not_a_leak(tmp_path: Path) -> None:
    with in_process({}, tmp_path / "state") as (client, auth):
        token = auth.add_user("u")
        auth.grant("u", Role.OWNER, "gone")
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/db/gone/changes/marker", headers=headers).status_code == 404
        # No grant: 403 whether or not the database exists.
        assert client.get("/db/nosuch/changes/marker", headers=headers).status_code == 403


def test_open_routes_say_nothing_about_databases(tmp_path: Path) -> None:
    with in_process({}, tmp_path / "state") as (client, _):
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/openapi.json").status_code == 200

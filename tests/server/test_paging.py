"""Queries through the server come in pages: the server answers at most its page of jobs
(413 without a limit, or above it), and RemoteBackend.query_jobs walks the pages itself (by
cursor, or by offset for an order a cursor cannot keep), so a caller still gets every job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from balsam.backends import remote as remote_module
from balsam.backends.local import LocalBackend
from balsam.backends.remote import RemoteBackend
from balsam.schemas import AppCreate, JobCreate, JobQuery
from balsam.server.deps import Limits
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from serverkit import in_process, owner_token, remote


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LocalBackend, RemoteBackend, httpx.Client, str]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'site.db'}")
    upgrade(engine)
    local = LocalBackend(engine)
    local.create_app(AppCreate(name="A", executable="true"))
    for batch in range(3):  # three calls: three created_at values, ties within each
        local.create_jobs(
            [JobCreate(name=f"j{batch}{i}", application="A", num_nodes=1 + i % 2) for i in range(8)]
        )
    monkeypatch.setattr(remote_module, "QUERY_PAGE", 5)
    with in_process({"site": local}, tmp_path / "state", Limits(max_page=7)) as (client, auth):
        token = owner_token(auth, "u", "site")
        yield local, remote(client, "http://testserver", "site", token), client, token
    local.close()


def test_the_server_answers_one_page_at_most(
    served: tuple[LocalBackend, RemoteBackend, httpx.Client, str],
) -> None:
    _, _, client, token = served
    headers = {"Authorization": f"Bearer {token}"}
    for body in ({}, {"limit": 8}):
        refused = client.post("/db/site/jobs/query", json=body, headers=headers)
        assert refused.status_code == 413 and "at most 7 jobs" in refused.json()["detail"]
    assert len(client.post("/db/site/jobs/query", json={"limit": 7}, headers=headers).json()) == 7


@pytest.mark.parametrize(
    "query",
    [
        JobQuery(),
        JobQuery(order_by=["-num_nodes"]),
        JobQuery(order_by=["return_code"]),  # may be empty: paged by offset
        JobQuery(limit=12),
        JobQuery(offset=3, order_by=["name"]),
        JobQuery(offset=2, limit=9, order_by=["-created_at"]),
    ],
    ids=["all", "by-nodes", "nullable-order", "limit", "offset", "offset-limit"],
)
def test_a_remote_query_gets_every_job_of_a_local_one(
    served: tuple[LocalBackend, RemoteBackend, httpx.Client, str], query: JobQuery
) -> None:
    local, far, _, _ = served
    expected = [j.job_id for j in local.query_jobs(query)]
    assert expected and len(expected) == min(24 - query.offset, query.limit or 24)
    assert [j.job_id for j in far.query_jobs(query)] == expected

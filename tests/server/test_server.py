"""The edge service in process: limits, errors across the wire, the long-poll cap, the
checked-in OpenAPI document, and RemoteBackend's handling of failures."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.from_thread
import httpx
import pytest

from balsam.backends.local import LocalBackend
from balsam.backends.remote import RemoteBackend, remote_from_env
from balsam.domain.states import JobState
from balsam.errors import (
    AccessDenied,
    AlreadyExists,
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    DependencyError,
    InvalidTransition,
    NotFound,
    ValidationError,
)
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import JobQuery
from balsam.server.app import create_app
from balsam.server.auth import AuthStore
from balsam.server.deps import Limits
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from serverkit import PortalTransport, in_process, owner_token, remote

OPENAPI = Path(__file__).parents[2] / "docs" / "openapi.json"
LIMITS = Limits(max_body_bytes=64 * 1024, max_items=5, max_wait_seconds=0.5)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalBackend]:
    engine = make_engine(f"sqlite:///{tmp_path / 'site.db'}")
    upgrade(engine)
    backend = LocalBackend(engine)
    yield backend
    backend.close()


@pytest.fixture
def served(local: LocalBackend, tmp_path: Path) -> Iterator[tuple[httpx.Client, RemoteBackend]]:
    with in_process({"site": local}, tmp_path / "state", LIMITS) as (client, auth):
        be = remote(client, "http://testserver", "site", owner_token(auth, "alice", "site"))
        be.create_app(AppCreate(name="hello", executable="echo"))
        yield client, be


def _job(**fields: object) -> JobCreate:
    return JobCreate.model_validate({"workflow": "w", "application": "hello", **fields})


def test_errors_keep_their_class_and_message(served: tuple[httpx.Client, RemoteBackend]) -> None:
    _, be = served
    with pytest.raises(AlreadyExists, match="hello"):
        be.create_app(AppCreate(name="hello", executable="echo"))
    with pytest.raises(NotFound):
        be.get_job("0" * 32)
    a, b = be.create_jobs([_job(name="a"), _job(name="b")])
    be.add_dependency(a.job_id, b.job_id)
    with pytest.raises(DependencyError):
        be.add_dependency(b.job_id, a.job_id)
    be.kill_jobs(a.job_id)
    with pytest.raises(InvalidTransition, match="already"):
        be.kill_jobs(a.job_id)
    assert be.get_job(a.job_id).state is JobState.USER_KILLED
    with pytest.raises(ValidationError, match="num_nodes"):
        be._send("POST", "/jobs", [{"workflow": "w", "application": "hello", "num_nodes": -1}])


def test_item_and_body_limits_are_413(served: tuple[httpx.Client, RemoteBackend]) -> None:
    client, be = served
    with pytest.raises(ValidationError, match="limit is 5"):
        be.create_jobs([_job(name=str(i)) for i in range(6)])
    with pytest.raises(ValidationError, match="limit is 5"):
        be.bulk_create_jobs(_job(name=str(i)) for i in range(6))
    big = json.dumps([{"workflow": "w", "application": "hello", "name": "x" * 70_000}])
    headers = be._headers | {"content-type": "application/json"}
    response = client.post("/db/site/jobs", content=big, headers=headers)
    assert response.status_code == 413

    assert be.count_jobs(JobQuery()) == 0


def test_a_streamed_body_is_counted(local: LocalBackend, tmp_path: Path) -> None:
    """Without a content-length the limit is applied to the bytes as they arrive."""
    app = create_app({"site": local}, AuthStore.open(tmp_path / "state"), LIMITS)

    async def post() -> int:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"x" * 1024

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post("/db/site/jobs", content=chunks())
            return response.status_code

    assert anyio.run(post) == 413


def test_long_poll_is_capped(served: tuple[httpx.Client, RemoteBackend]) -> None:
    _, be = served
    marker = be.change_marker()
    started = time.monotonic()
    assert be.wait_for_change(marker, 60) == marker
    assert time.monotonic() - started < 5


def test_tokens_refused_are_access_denied(local: LocalBackend, tmp_path: Path) -> None:
    with in_process({"site": local}, tmp_path / "state") as (client, auth):
        token = owner_token(auth, "alice", "site")
        with pytest.raises(AccessDenied, match="refused the token"):
            remote(client, "http://testserver", "site", "wrong").change_marker()
        (record,) = auth.list_tokens("alice")
        auth.revoke_token(record.id)
        with pytest.raises(AccessDenied):
            remote(client, "http://testserver", "site", token).change_marker()


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_statuses_are_transient(status: int) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text="down"))
    be = RemoteBackend("http://h/db/x", "t", client=httpx.Client(transport=transport))
    with pytest.raises(DatabaseUnavailable) as caught:
        be.change_marker()
    assert caught.value.transient


def test_a_server_error_is_permanent() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(500, json={"detail": "x"}))
    be = RemoteBackend("http://h/db/x", "t", client=httpx.Client(transport=transport))
    with pytest.raises(DatabaseError) as caught:
        be.change_marker()
    assert not caught.value.transient


def test_connection_refused_is_transient() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    be = RemoteBackend(f"http://127.0.0.1:{port}/db/x", "t", timeout=5)
    with pytest.raises(DatabaseUnavailable, match="cannot reach"):
        be.change_marker()
    be.close()


def test_url_and_token_come_together(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BALSAM_URL", "BALSAM_TOKEN", "BALSAM_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert remote_from_env() is None
    monkeypatch.setenv("BALSAM_URL", "http://127.0.0.1:1/db/x")
    with pytest.raises(ConfigError, match="BALSAM_TOKEN"):
        remote_from_env()
    monkeypatch.setenv("BALSAM_TOKEN", "t")
    backend = remote_from_env()
    assert isinstance(backend, RemoteBackend)
    backend.close()
    with pytest.raises(ConfigError, match="/db/NAME"):
        RemoteBackend("ftp://x", "t")


def test_path_segments_cannot_escape(served: tuple[httpx.Client, RemoteBackend]) -> None:
    _, be = served
    for name in ("..", "../../health", "a/b", "."):
        with pytest.raises(NotFound):
            be.get_app(name)


def test_openapi_document_is_checked_in(tmp_path: Path) -> None:
    """docs/openapi.json is the served document; after a deliberate API change, rewrite it
    with ``BALSAM_WRITE_OPENAPI=1 pytest tests/server/test_server.py`` and commit it."""
    document = openapi_text()
    if os.environ.get("BALSAM_WRITE_OPENAPI") == "1":
        OPENAPI.write_text(document)
    assert OPENAPI.read_text() == document, (
        "the API changed: run BALSAM_WRITE_OPENAPI=1 pytest tests/server/test_server.py "
        "and commit docs/openapi.json"
    )


def openapi_text() -> str:
    app = create_app({}, AuthStore(Path("/nonexistent")))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def test_long_polls_wait_apart_and_overflow_returns_at_once(
    local: LocalBackend, tmp_path: Path
) -> None:
    """One waiter allowed: a second gets the marker at once, other calls are not held up,
    and a change wakes the first."""
    limits = Limits(max_waiters=1, max_wait_seconds=20)
    auth = AuthStore.open(tmp_path / "state")
    app = create_app({"site": local}, auth, limits)
    token = owner_token(auth, "alice", "site")
    with anyio.from_thread.start_blocking_portal() as portal:
        client = httpx.Client(transport=PortalTransport(app, portal), base_url="http://testserver")
        be = remote(client, "http://testserver", "site", token)
        be.create_app(AppCreate(name="hello", executable="echo"))
        marker = be.change_marker()
        woke: list[int] = []
        first = threading.Thread(target=lambda: woke.append(be.wait_for_change(marker, 20)))
        first.start()
        state = app.state.balsam
        deadline = time.monotonic() + 10
        while state.waiters is None or state.waiters.available_tokens > 0:
            assert time.monotonic() < deadline, "the first wait never started"
            time.sleep(0.01)
        started = time.monotonic()
        assert be.wait_for_change(marker, 20) == marker
        assert be.count_jobs(JobQuery()) == 0
        assert time.monotonic() - started < 5
        be.create_jobs([_job(name="wake")])
        first.join(timeout=20)
        assert woke and woke[0] != marker
        client.close()


def test_a_token_replaced_in_its_file_is_picked_up(local: LocalBackend, tmp_path: Path) -> None:
    """The token file is read again on a 401: revoking the old token and writing a new one
    into the file keeps a running client going, with no restart."""
    file = tmp_path / "token"
    with in_process({"site": local}, tmp_path / "state") as (client, auth):
        first = owner_token(auth, "alice", "site")
        file.write_text(first + "\n")
        file.chmod(0o600)
        be = RemoteBackend("http://testserver/db/site", "", client=client, token_file=file)
        assert be.change_marker() == 0
        (record,) = auth.list_tokens("alice")
        auth.revoke_token(record.id)
        with pytest.raises(AccessDenied):  # the file still holds the revoked token
            be.change_marker()
        _, second = auth.create_token("alice")
        file.write_text(second)
        assert be.change_marker() == 0
        assert be.change_marker() == 0  # and it keeps the new one


def test_a_token_file_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "token"
    file.write_text("abc\n")
    file.chmod(0o644)
    monkeypatch.delenv("BALSAM_TOKEN", raising=False)
    monkeypatch.setenv("BALSAM_URL", "http://127.0.0.1:1/db/x")
    monkeypatch.setenv("BALSAM_TOKEN_FILE", str(file))
    with pytest.raises(ConfigError, match="chmod 600"):
        remote_from_env()
    file.chmod(0o600)
    backend = remote_from_env()
    assert backend is not None and backend._headers["Authorization"] == "Bearer abc"
    backend.close()
    file.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        remote_from_env()


def test_a_database_failure_is_an_incident_not_its_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database's own error text stays in the server's log; the client gets the class
    (DatabaseError, permanent) and an incident id found in that log."""

    class Broken(LocalBackend):
        def change_marker(self) -> int:
            raise DatabaseError("workflow database error: secret_table constraint on host db7")

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(engine)
    with in_process({"site": Broken(engine)}, tmp_path / "state") as (client, auth):
        be = remote(client, "http://testserver", "site", owner_token(auth, "alice", "site"))
        logged = caplog.at_level(logging.WARNING, logger="balsam.server.errors")
        with logged, pytest.raises(DatabaseError) as caught:
            be.change_marker()
    message = str(caught.value)
    assert "secret_table" not in message and "incident" in message
    incident = message.split("incident ")[1].split()[0]
    assert any(
        incident in r.getMessage() and "secret_table" in r.getMessage() for r in caplog.records
    )
    engine.dispose()


def test_an_answer_that_is_not_json_is_a_database_error() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>proxy"))
    be = RemoteBackend("http://h/db/x", "t", client=httpx.Client(transport=transport))
    with pytest.raises(DatabaseError, match="other than JSON"):
        be.change_marker()


def test_an_answer_that_does_not_fit_is_a_database_error() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"id": "x"}))
    be = RemoteBackend("http://h/db/x", "t", client=httpx.Client(transport=transport))
    with pytest.raises(DatabaseError, match="does not fit"):
        be.get_app("a")

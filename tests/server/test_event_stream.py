"""``/events/stream`` in process: the SSE format, where a stream starts (Last-Event-ID before
``after``, else now), the workflow filter, refusals (a bad id, too many streams, a stopping
server), and the ``/events/since`` page. In process a response is read whole, so these streams
use ``follow=false``; tests/e2e/test_event_stream_remote.py follows live ones on uvicorn."""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from balsam.backends.local import LocalBackend
from balsam.backends.stream import EventStream
from balsam.domain.states import JobState
from balsam.schemas import AppCreate, JobCreate
from balsam.schemas.jobs import StreamEvent
from balsam.server.deps import Limits
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from serverkit import in_process, owner_token

Served = tuple[httpx.Client, dict[str, str], LocalBackend]


def _served(tmp_path: Path, limits: Limits | None = None) -> Iterator[Served]:
    engine = make_engine(f"sqlite:///{tmp_path / 'site.db'}")
    upgrade(engine)
    local = LocalBackend(engine)
    local.create_app(AppCreate(name="A", executable="true"))
    with in_process({"site": local}, tmp_path / "state", limits) as (client, auth):
        token = owner_token(auth, "alice", "site")
        yield client, {"Authorization": f"Bearer {token}"}, local
    local.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from _served(tmp_path)


def _messages(body: str) -> list[dict[str, str]]:
    """The SSE blocks of ``body`` as field -> value (comments dropped)."""
    blocks = []
    for block in body.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            blocks.append(fields)
    return blocks


def _events(body: str) -> list[StreamEvent]:
    return [StreamEvent.model_validate_json(m["data"]) for m in _messages(body) if "data" in m]


def test_each_event_is_an_id_a_type_and_json_data(served: Served) -> None:
    client, auth, local = served
    (job,) = local.create_jobs([JobCreate(name="j", workflow="w", application="A")])
    local.set_state(job.job_id, JobState.USER_KILLED, "stop\nnow")
    response = client.get("/db/site/events/stream?after=0&follow=false", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    first, *rest = _messages(response.text)
    assert first == {"retry": "2000", "id": "0"}  # the start, before any event
    assert all(m["event"] == "state" for m in rest)
    assert [int(m["id"]) for m in rest] == [json.loads(m["data"])["id"] for m in rest]
    events = _events(response.text)
    assert [(e.from_state, e.to_state) for e in events][-1] == ("PREPROCESSED", "USER_KILLED")
    assert events[-1].message == "stop\nnow" and events[-1].workflow == "w"
    assert [e.id for e in events] == list(range(1, local.change_marker() + 1))


def test_last_event_id_comes_before_after_and_nothing_means_now(served: Served) -> None:
    client, auth, local = served
    local.create_jobs([JobCreate(name=n, workflow="w", application="A") for n in "ab"])
    url = "/db/site/events/stream?follow=false"
    resumed = client.get(url + "&after=0", headers={**auth, "Last-Event-ID": "6"})
    assert [e.id for e in _events(resumed.text)] == [7, 8]
    now = client.get(url, headers=auth)
    assert _messages(now.text) == [{"retry": "2000", "id": str(local.change_marker())}]
    blank = client.get(url + "&after=5", headers={**auth, "Last-Event-ID": " "})
    assert [e.id for e in _events(blank.text)] == [6, 7, 8]


def test_a_workflow_filter_streams_that_workflow_only(served: Served) -> None:
    client, auth, local = served
    a, _ = local.create_jobs([JobCreate(name=n, workflow=n, application="A") for n in "ab"])
    body = client.get("/db/site/events/stream?after=0&follow=false&workflow=a", headers=auth).text
    assert {(e.job_id, e.workflow) for e in _events(body)} == {(a.job_id, "a")}


@pytest.mark.parametrize("value", ["x", "-1", "1.5", "9" * 30 + "z", "9" * 30, "²"])
def test_a_last_event_id_that_is_no_id_is_refused(served: Served, value: str) -> None:
    client, auth, _ = served
    # Bytes: sent as they are (httpx encodes text headers as ASCII only).
    headers = {k.encode(): v.encode() for k, v in auth.items()} | {b"Last-Event-ID": value.encode()}
    response = client.get("/db/site/events/stream", headers=headers)
    assert response.status_code == 422 and "Last-Event-ID" in response.json()["detail"]


def test_bad_parameters_are_refused(served: Served) -> None:
    client, auth, _ = served
    assert client.get("/db/site/events/stream?after=-1", headers=auth).status_code == 422
    huge = "9" * 30
    assert client.get(f"/db/site/events/stream?after={huge}", headers=auth).status_code == 422
    assert client.get(f"/db/site/events/since?after={huge}", headers=auth).status_code == 422
    assert client.get("/db/site/events/since?limit=0", headers=auth).status_code == 422
    assert client.get("/db/site/events/since?limit=5001", headers=auth).status_code == 422


def test_over_the_stream_limit_is_503_with_retry_after(tmp_path: Path) -> None:
    for client, auth, _ in _served(tmp_path, Limits(max_streams=0)):
        response = client.get("/db/site/events/stream?follow=false", headers=auth)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "limit is 0" in response.json()["detail"]


def test_a_stopping_server_refuses_new_streams(served: Served) -> None:
    client, auth, _ = served
    from balsam.server.routers.stream import Streams

    app = client._transport._inner.app  # type: ignore[attr-defined]
    streams: Streams = app.state.balsam_streams
    assert streams.open == 0  # every earlier stream gave its slot back
    streams.close()
    response = client.get("/db/site/events/stream?follow=false", headers=auth)
    assert response.status_code == 503 and "shutting down" in response.json()["detail"]


def test_the_page_route_matches_the_backend(served: Served) -> None:
    client, auth, local = served
    local.create_jobs([JobCreate(name=n, workflow=n, application="A") for n in "ab"])
    body = client.get("/db/site/events/since?after=2&limit=3&workflow=b", headers=auth).json()
    assert body == json.loads(local.events_since(2, 3, "b").model_dump_json())


def test_the_client_parses_ids_alone_and_skips_comments() -> None:
    lines = iter(
        ["retry: 2000", "id: 4", "", ": keepalive", "", "id: 5", "event: state",
         'data: {"id": 5, "job_id": "j", "workflow": "w", "timestamp": "2026-01-01T00:00:00Z",',
         'data:  "from_state": "A", "to_state": "B", "message": ""}', "",
         "id: 6", "event: state", "data: {"]  # cut off mid-message: not delivered
    )  # fmt: skip
    stream = EventStream.__new__(EventStream)
    stream.last_id = None
    events = list(stream._events(lines))
    assert [e.id for e in events] == [5] and stream.last_id == 5


def test_a_live_stream_wakes_on_a_change_keeps_alive_and_ends_on_disconnect(
    tmp_path: Path,
) -> None:
    """The ASGI app called directly (in process, a response is otherwise read whole): a
    following stream sends keepalives, an event as soon as a job changes, and gives its slot
    back when the client disconnects."""
    import anyio
    import anyio.to_thread

    from balsam.server.app import create_app
    from balsam.server.auth import AuthStore

    engine = make_engine(f"sqlite:///{tmp_path / 'site.db'}")
    upgrade(engine)
    local = LocalBackend(engine)
    local.create_app(AppCreate(name="A", executable="true"))
    (job,) = local.create_jobs([JobCreate(name="j", workflow="w", application="A")])
    auth = AuthStore.open(tmp_path / "state")
    token = owner_token(auth, "alice", "site")
    app = create_app({"site": local}, auth, Limits(stream_heartbeat_seconds=0.2))
    body = bytearray()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/db/site/events/stream", "raw_path": b"/db/site/events/stream",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
    }  # fmt: skip

    async def until(text: bytes) -> None:
        with anyio.fail_after(20):
            while text not in body:
                await anyio.sleep(0.01)

    async def main() -> None:
        gone = anyio.Event()
        requested = False

        async def receive() -> MutableMapping[str, Any]:
            nonlocal requested
            if not requested:  # the (empty) request body, then nothing until the client goes
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(app, scope, receive, send)
            await until(b": keepalive\n\n")
            assert b"event: state" not in body  # from now on: nothing yet
            await anyio.to_thread.run_sync(local.set_state, job.job_id, JobState.USER_KILLED)
            await until(b"event: state")
            gone.set()  # the client goes away; the app must return
            with anyio.fail_after(20):
                while app.state.balsam_streams.open:
                    await anyio.sleep(0.01)

    anyio.run(main)
    (event,) = _events(body.decode())
    assert (event.job_id, event.to_state) == (job.job_id, "USER_KILLED")
    local.close()

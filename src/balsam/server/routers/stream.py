"""Job events in id order: one page (``/events/since``) or a live Server-Sent Events stream
(``/events/stream``), both for viewers.

A stream sends each event as ``id: N``, ``event: state``, ``data: {json}`` and resumes after
the ``Last-Event-ID`` header (what browsers send when they reconnect) or the ``after``
parameter; without either it starts at the newest event (live changes only). It reads pages
of ``Backend.events_since`` from its cursor, so it delivers every event once, in id order,
whatever it is woken by.

Waiting costs no thread per stream: a :class:`ChangeHub` per database has one stream at a
time (the *leader*) wait for the change marker in a thread of the hub's own limiter, and wakes
every other stream of that database when it moves. Pages are read in threads of a small limiter
of their own, once for all the streams at the same position (every live stream is at the
newest event). So streams never take the threads of anyio's default pool that claims and
heartbeats run in, and opening many costs coroutines, not threads, and one read per change.

A stream ends when the client goes away (starlette cancels it), and when the server shuts down
(:meth:`Streams.close`, called by :func:`balsam.server.app.serve` before uvicorn waits for
connections to finish; clients reconnect with their last id).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import anyio
import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from balsam.backends.base import Backend
from balsam.errors import BalsamError
from balsam.schemas.jobs import MAX_EVENT_ID, MAX_EVENT_PAGE, EventPage, StreamEvent
from balsam.server.deps import Limits, Viewer, server_state
from balsam.server.responses import DB_ROUTE

log = logging.getLogger(__name__)
router = APIRouter(prefix="/db/{name}", tags=["events"], responses=DB_ROUTE)

#: How long the hub's leader waits for the marker per call. Short: a wait in a thread cannot
#: be cut off, so a stopping server waits for one (and the marker is polled or re-read about
#: this often during a wait anyway: docs/waiting.md).
HUB_WAIT_SECONDS = 1.0
#: Threads the hubs wait in, over all databases (more leaders wait for one, asleep).
HUB_THREADS = 16
#: Threads streams read pages in, over all databases.
READER_THREADS = 8
#: Events per page a stream reads.
STREAM_PAGE = 500
#: The pause before reading again when a page was held back by a transaction in flight.
HELD_FIRST, HELD_LONGEST = 0.02, 1.0
#: What a browser's EventSource waits before reconnecting, milliseconds (sent at the start).
RETRY_MS = 2000
#: What a 503 of a server with every stream taken tells the client to wait, seconds.
BUSY_RETRY_SECONDS = 5
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _SharedRead:
    """One page read that every stream asking for it at once waits for."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.page: EventPage | None = None
        self.error: BalsamError | None = None


class ChangeHub:
    """Wakes every stream of one database when its change marker moves (one thread waits),
    and reads a page once for all the streams at the same position (live streams all are)."""

    def __init__(self, backend: Backend, threads: CapacityLimiter) -> None:
        self.backend = backend
        self.marker: int | None = None
        self.closed = False
        self._threads = threads
        self._moved = anyio.Event()
        self._leading = False
        self._reads: dict[tuple[int, str | None, int | None], _SharedRead] = {}

    async def page(self, cursor: int, workflow: str | None, readers: CapacityLimiter) -> EventPage:
        """``events_since(cursor)``, read once for the streams that ask it while the marker
        stands. Sound because the read starts after the hub saw the marker: anything committed
        since moves the marker, and that wakes every stream to read again."""
        key = (cursor, workflow, self.marker)
        while True:
            shared = self._reads.get(key)
            if shared is None:
                return await self._read(key, readers)
            await shared.done.wait()
            if shared.error is not None:
                raise shared.error
            if shared.page is not None:
                return shared.page
            # The reader was cancelled (its client left): read here.

    async def _read(
        self, key: tuple[int, str | None, int | None], readers: CapacityLimiter
    ) -> EventPage:
        for old in [k for k, r in self._reads.items() if k[2] != self.marker and r.done.is_set()]:
            del self._reads[old]
        shared = self._reads[key] = _SharedRead()
        try:
            shared.page = await anyio.to_thread.run_sync(
                self.backend.events_since, key[0], STREAM_PAGE, key[1], limiter=readers
            )
            return shared.page
        except BalsamError as exc:
            shared.error = exc
            raise
        finally:
            shared.done.set()
            # Not kept: a failed read, or a page held back by a transaction in flight (whoever
            # asks again must read again: the marker does not move when that transaction ends).
            if shared.page is None or shared.page.more:
                del self._reads[key]

    async def wait(self, seen: int | None, timeout: float) -> int | None:
        """The marker as soon as it differs from ``seen`` (a marker this hub gave, or None),
        else ``seen`` after ``timeout`` s or once the hub closed."""
        with anyio.move_on_after(timeout):
            while not self.closed and (self.marker is None or self.marker == seen):
                if self._leading:
                    await self._moved.wait()
                else:
                    await self._lead()
        return self.marker if self.marker is not None and self.marker != seen else seen

    async def _lead(self) -> None:
        self._leading = True
        try:
            if self.marker is None:
                self.marker = await self._in_thread(self.backend.change_marker)
            else:
                self.marker = await self._in_thread(
                    self.backend.wait_for_change, self.marker, HUB_WAIT_SECONDS
                )
        except BalsamError as exc:  # the database is away: streams keep waiting, quietly
            log.warning("event streams cannot wait for changes: %s", exc)
            await anyio.sleep(1.0)
        finally:
            # Woken also when this leader was cancelled (its client left): another takes over.
            self._leading = False
            self._wake()

    async def _in_thread(self, call: Callable[..., int], *args: object) -> int:
        # Abandoned on cancel: a leader whose client left must not wait out the wait.
        result: int = await anyio.to_thread.run_sync(
            call, *args, limiter=self._threads, abandon_on_cancel=True
        )
        return result

    def _wake(self) -> None:
        moved, self._moved = self._moved, anyio.Event()
        moved.set()

    def close(self) -> None:
        """End every wait now and from now on."""
        self.closed = True
        self._wake()


class Streams:
    """The open streams of one application: their count, hubs and threads."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open = 0
        self.closing = False
        self._hubs: dict[str, ChangeHub] = {}
        # Made on the event loop, at first use (anyio's primitives belong to one).
        self._hub_threads: CapacityLimiter | None = None
        self._readers: CapacityLimiter | None = None

    def hub(self, name: str, backend: Backend) -> ChangeHub:
        """The hub of database ``name``."""
        if self._hub_threads is None:
            self._hub_threads = CapacityLimiter(HUB_THREADS)
        found = self._hubs.get(name)
        if found is None:
            found = self._hubs[name] = ChangeHub(backend, self._hub_threads)
            found.closed = self.closing
        return found

    def readers(self) -> CapacityLimiter:
        """The threads pages are read in."""
        if self._readers is None:
            self._readers = CapacityLimiter(READER_THREADS)
        return self._readers

    def close(self) -> None:
        """Shutting down: every stream ends at its next step, and new ones are refused."""
        self.closing = True
        for hub in self._hubs.values():
            hub.close()


def streams_of(request: Request) -> Streams:
    """The :class:`Streams` of the application serving ``request``."""
    found = getattr(request.app.state, "balsam_streams", None)
    if found is None:
        found = request.app.state.balsam_streams = Streams(server_state(request).limits)
    assert isinstance(found, Streams)
    return found


def encode(events: list[StreamEvent]) -> bytes:
    """Events as SSE messages (``id``, ``event: state``, one ``data`` line of JSON)."""
    return b"".join(
        b"id: %d\nevent: state\ndata: %s\n\n" % (e.id, e.model_dump_json().encode()) for e in events
    )


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` that gives its slot back however the stream ends."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], streams: Streams) -> None:
        super().__init__(content, headers=SSE_HEADERS)
        self._streams = streams

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._streams.open -= 1


@router.get("/events/since", response_model=EventPage)
def events_since(
    backend: Viewer,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENT_PAGE)] = 500,
    workflow: str | None = None,
) -> EventPage:
    """Job events with ids above ``after``, in id order (one page; see ``cursor``)."""
    return backend.events_since(after, limit, workflow)


#: One message of the stream, as SSE fields: a state change (``id``, ``event: state``,
#: ``data``: a StreamEvent as JSON), the opening ``retry`` with the starting ``id``, or a
#: keepalive (a comment, with the ``id`` the stream has read up to when a filter skipped).
SSE_MESSAGE = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "enum": ["state"]},
        "data": {"type": "string", "description": "a StreamEvent as JSON"},
        "retry": {"type": "integer"},
    },
}


@router.get(
    "/events/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": SSE_MESSAGE}},
            "description": "the events (`id`, `event: state`, `data`: a StreamEvent as JSON)",
        },
        503: {"description": "every stream slot is taken, or the server is shutting down"},
    },
)
async def stream_events(
    backend: Viewer,
    request: Request,
    name: str,
    after: Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID)] = None,
    workflow: str | None = None,
    follow: bool = True,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventStreamResponse:
    """Job events as Server-Sent Events, from after ``Last-Event-ID`` (or ``after``; else
    from now on), of ``workflow``'s jobs when given; with ``follow=false`` the events there
    are now, then the end."""
    streams = streams_of(request)
    if streams.closing or streams.open >= streams.limits.max_streams:
        raise HTTPException(
            503,
            "the server is shutting down"
            if streams.closing
            else f"{streams.open} event streams are open; the limit is "
            f"{streams.limits.max_streams}",
            headers={"Retry-After": str(BUSY_RETRY_SECONDS)},
        )
    start = _resume_point(last_event_id, after)
    streams.open += 1  # taken before any wait, so concurrent requests cannot pass the limit
    try:
        if start is None:
            start = await anyio.to_thread.run_sync(backend.change_marker, limiter=streams.readers())
    except BaseException:
        streams.open -= 1
        raise
    hub = streams.hub(name, backend)
    return EventStreamResponse(_stream(hub, streams, start, workflow, follow), streams)


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    """Where to start: ``Last-Event-ID`` (a reconnect) before ``after`` (422 if not an id)."""
    if last_event_id is None or not last_event_id.strip():
        return after
    text = last_event_id.strip()
    if not (text.isascii() and text.isdigit() and int(text) <= MAX_EVENT_ID):
        raise HTTPException(422, f"Last-Event-ID must be an event id (got {text[:40]!r})")
    return int(text)


async def _stream(
    hub: ChangeHub,
    streams: Streams,
    cursor: int,
    workflow: str | None,
    follow: bool,
) -> AsyncIterator[bytes]:
    # The start as an id alone (no data: no event): a client that loses the connection before
    # the first event still resumes from here, not from "now" again.
    yield b"retry: %d\nid: %d\n\n" % (RETRY_MS, cursor)
    heartbeat = streams.limits.stream_heartbeat_seconds
    seen: int | None = None
    held = HELD_FIRST
    sent = cursor
    while not streams.closing:
        try:
            page = await hub.page(cursor, workflow, streams.readers())
        except BalsamError as exc:
            # Ended cleanly: the client reconnects from its last id, with backoff.
            log.warning("event stream ended: %s", exc)
            return
        if page.events:
            yield encode(page.events)
            sent = page.events[-1].id
        cursor = page.cursor
        if page.more:
            if not page.events:  # a transaction in flight holds the next id: it ends soon
                await anyio.sleep(held)
                held = min(HELD_LONGEST, held * 2)
            continue
        held = HELD_FIRST
        if not follow:
            return
        while not streams.closing:
            marker = await hub.wait(seen, heartbeat)
            if marker != seen:
                seen = marker
                break
            # With the cursor when a filter skipped events: a resume need not scan them again.
            yield b": keepalive\n%s\n" % (b"id: %d\n" % cursor if cursor != sent else b"")
            sent = cursor

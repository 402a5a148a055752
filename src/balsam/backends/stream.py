"""Following job events: over Server-Sent Events from a server (:class:`EventStream`), or by
paging ``events_since`` on any Backend (:func:`follow_events`), and waking a redraw loop
when something changed (:func:`change_waiter`, for ``balsam ls --watch``).

:class:`EventStream` reads ``GET /db/NAME/events/stream`` and reconnects whenever the
connection is lost (refused, reset, a read that hears nothing, not even the server's
keepalive, for :data:`READ_TIMEOUT` s; 502, 503 and 504; the server ending the stream as it
shuts down) after a pause that doubles up to :data:`LONGEST_PAUSE`, sending the id of the last
event it delivered as ``Last-Event-ID``, so it misses none and repeats none. The server names
the stream's starting point in its first message, so even a stream dropped before its first
event resumes where it began. A refused token (401, 403) or a request the server rejects is
raised at once: repeating cannot help.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import httpx
from pydantic import ValidationError as PydanticValidationError

from balsam.backends.base import Backend
from balsam.errors import BalsamError, DatabaseError, DatabaseUnavailable, TransientError
from balsam.schemas.jobs import StreamEvent

if TYPE_CHECKING:
    from balsam.backends.remote import RemoteBackend

log = logging.getLogger(__name__)

#: Pauses between reconnections: the first, and the longest (doubling, with jitter).
FIRST_PAUSE = 0.2
LONGEST_PAUSE = 10.0
#: A stream that hears nothing this long is taken as lost (the server sends a keepalive
#: every 15 s by default).
READ_TIMEOUT = 45.0
#: Events per page when following a local backend.
PAGE = 500


class EventStream:
    """Job events of a RemoteBackend's database as they happen, in id order, each once.

    ``after``: the id to start after (None: from the newest event at connection, i.e. new
    events only); ``workflow``: only that workflow's jobs. Iterating blocks; it ends only by
    an exception (a permanent error) or when ``stop`` is set (checked between events and
    reconnections).
    """

    def __init__(
        self,
        remote: RemoteBackend,
        after: int | None = None,
        workflow: str | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.remote = remote
        #: The id of the last event delivered (or the start the server named).
        self.last_id = after
        self.workflow = workflow
        #: How many times the stream connected (1 + reconnections).
        self.connections = 0
        self._stop = stop or threading.Event()
        self._sleep = sleep
        self._response: httpx.Response | None = None

    def __iter__(self) -> Iterator[StreamEvent]:
        failures = 0
        while not self._stop.is_set():
            try:
                for event in self._connect():
                    failures = 0
                    yield event
                    if self._stop.is_set():
                        return
                failures = 0  # the server ended the stream (it is stopping): come back soon
            except TransientError as exc:
                if self._stop.is_set():
                    return  # closed under the read
                failures += 1
                log.warning("event stream lost (%s); reconnecting", exc)
            pause = min(LONGEST_PAUSE, FIRST_PAUSE * 2.0 ** max(0, failures - 1))
            self._sleep(pause * random.uniform(0.75, 1.0))

    def _connect(self) -> Iterator[StreamEvent]:
        remote = self.remote
        params: dict[str, str] = {}
        if self.workflow is not None:
            params["workflow"] = self.workflow
        timeout = httpx.Timeout(remote.timeout, read=READ_TIMEOUT)
        for attempt in (1, 2):
            headers = dict(remote.headers)
            if self.last_id is not None:
                headers["Last-Event-ID"] = str(self.last_id)
            try:
                with remote.client.stream(
                    "GET",
                    remote.url + "/events/stream",
                    params=params,
                    headers=headers,
                    timeout=timeout,
                ) as response:
                    if response.status_code == 401 and attempt == 1 and remote.renewed_token():
                        continue
                    if not response.is_success:
                        response.read()
                        raise remote_error(response)
                    self.connections += 1
                    self._response = response
                    try:
                        yield from self._events(response.iter_lines())
                    finally:
                        self._response = None
                    return
            except httpx.TransportError as exc:
                raise DatabaseUnavailable(
                    f"event stream from {remote.url} interrupted: {exc or type(exc).__name__}"
                ) from exc

    def close(self) -> None:
        """Stop, from any thread: a read blocked in the stream ends now (its socket is shut
        down), and iterating ends."""
        self._stop.set()
        response = self._response
        if response is None:
            return
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # closed already
                sock.shutdown(socket.SHUT_RDWR)

    def _events(self, lines: Iterator[str]) -> Iterator[StreamEvent]:
        """Events of an SSE body (https://html.spec.whatwg.org/#event-stream-interpretation);
        ``last_id`` moves when a whole message arrived, never before."""
        data: list[str] = []
        block_id: str | None = None
        for line in lines:
            if not line:
                if block_id is not None and block_id.isascii() and block_id.isdigit():
                    if data:
                        event = _parse("\n".join(data))
                        self.last_id = event.id
                        yield event
                    else:  # an id alone: the stream's start, or a filter's cursor
                        self.last_id = int(block_id)
                data, block_id = [], None
                continue
            if line.startswith(":"):
                continue  # a comment: the keepalive
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "id":
                block_id = value
            elif field == "data":
                data.append(value)


def _parse(data: str) -> StreamEvent:
    try:
        return StreamEvent.model_validate_json(data)
    except PydanticValidationError as exc:
        raise DatabaseError(
            f"an event from the Balsam server does not fit this Balsam (another version?): "
            f"{exc.errors()[0].get('msg', exc)}"
        ) from None


def remote_error(response: httpx.Response) -> BalsamError:
    """The error a refused stream request stands for (as any other call's)."""
    from balsam.backends.remote import error_for

    return error_for(response)


def remote_of(backend: Backend) -> RemoteBackend | None:
    """The RemoteBackend behind ``backend`` (unwrapping the retry layer), None if local."""
    from balsam.backends.remote import RemoteBackend

    inner = getattr(backend, "inner", backend)
    return inner if isinstance(inner, RemoteBackend) else None


def follow_events(
    backend: Backend,
    after: int | None = None,
    workflow: str | None = None,
    stop: threading.Event | None = None,
) -> Iterator[StreamEvent]:
    """Job events from after ``after`` (None: from now on) as they happen, on any backend:
    the server's stream for a remote one, ``events_since`` pages woken by the change signal
    for a local one."""
    remote = remote_of(backend)
    if remote is not None:
        yield from EventStream(remote, after=after, workflow=workflow, stop=stop)
        return
    stop = stop or threading.Event()
    cursor = backend.change_marker() if after is None else after
    marker = backend.change_marker()
    while not stop.is_set():
        page = backend.events_since(cursor, PAGE, workflow)
        yield from page.events
        cursor = page.cursor
        if page.more:
            if not page.events:
                time.sleep(0.05)  # a transaction in flight holds the next id
            continue
        marker = backend.wait_for_change(marker, 30.0)


class ChangeWaiter(Protocol):
    """What :func:`change_waiter` returns."""

    def wait(self, timeout: float) -> None:
        """Until jobs changed since the last return (or since the waiter was made), or
        ``timeout`` s."""
        ...

    def close(self) -> None:
        """Stop listening."""
        ...


def change_waiter(backend: Backend) -> ChangeWaiter:
    """A waiter for job changes: remote, woken by the server's event stream (one connection,
    read in a thread); local, the change signal (``wait_for_change``). A permanent error of
    the stream is raised by the next ``wait``."""
    remote = remote_of(backend)
    marker = backend.change_marker()
    if remote is None:
        return SignalWaiter(backend, marker)
    return StreamWaker(remote, marker)


class SignalWaiter:
    """Waits on a backend's change signal."""

    def __init__(self, backend: Backend, marker: int) -> None:
        self.backend = backend
        self.marker = marker

    def wait(self, timeout: float) -> None:
        """Until the change marker moves, or ``timeout`` s."""
        self.marker = self.backend.wait_for_change(self.marker, timeout)

    def close(self) -> None:
        """Nothing to stop."""


class StreamWaker:
    """Sets a flag on every event of a remote stream (read in a daemon thread)."""

    def __init__(self, remote: RemoteBackend, after: int) -> None:
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._failure: BalsamError | None = None
        self.stream = EventStream(remote, after=after, stop=self._stop)
        threading.Thread(target=self._read, name="balsam-event-stream", daemon=True).start()

    def _read(self) -> None:
        try:
            for _ in self.stream:
                self._changed.set()
        except BalsamError as exc:
            self._failure = exc
            self._changed.set()
        except Exception:
            if not self._stop.is_set():  # after close, the client closed under the read
                raise

    def wait(self, timeout: float) -> None:
        """Until an event arrived since the last call, or ``timeout`` s."""
        self._changed.wait(timeout)
        self._changed.clear()
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """Stop reading (the thread's read is cut off)."""
        self.stream.close()

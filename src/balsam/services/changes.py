"""Waiting for job changes: the marker (newest job event id) and how to block until it moves.

``ChangeSignal.wait_for_change(after, timeout)`` returns as soon as the marker differs from
``after`` (it grows with every state change; it can also fall, when deleting jobs took the
newest events with them — that too is a change) or when ``timeout`` passes.

* PostgreSQL: blocks on ``LISTEN balsam_jobs`` (:class:`balsam.store.changes.JobChannel`),
  which every transaction that writes job events signals. The marker is read again on each
  notification and at least every :data:`RECHECK_SECONDS`, so a notification lost with a
  dropped connection delays a waiter by that much at most. A broken channel is closed and
  the rest of the wait polls; the next wait opens a new one. One thread at a time listens on
  a backend's channel; a second thread waiting at once polls.
* SQLite (and a PostgreSQL whose channel cannot be opened): reads the marker with a pause
  that starts at :data:`POLL_FIRST` and grows to :data:`POLL_LONGEST`; each read is one lookup
  at the end of an index.

Reading the marker raises :class:`~balsam.errors.DatabaseUnavailable` when the database cannot
be reached (a caller may repeat the wait: nothing was changed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from balsam.errors import DatabaseUnavailable
from balsam.store.changes import JobChannel, newest_event_id
from balsam.store.engine import is_sqlite

log = logging.getLogger(__name__)

#: The first and the longest pause between two reads of the marker when polling.
POLL_FIRST = 0.005
POLL_LONGEST = 0.25
#: How much each pause grows over the previous one.
POLL_GROWTH = 1.5
#: While listening, the marker is read at least this often (NOTIFY is only a hint).
RECHECK_SECONDS = 1.0


class ChangeSignal:
    """The change marker of one engine's workflow database, and waiting for it to move."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self._channel = None if is_sqlite(engine) else JobChannel(engine)
        self._listening = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def marker(self) -> int:
        """The newest job event id (0 when none)."""
        return newest_event_id(self.engine)

    def wait_for_change(self, after: int, timeout: float) -> int:
        """The marker, as soon as it differs from ``after`` or once ``timeout`` s passed."""
        deadline = self._clock() + max(0.0, timeout)
        if self._channel is not None and self._listening.acquire(blocking=False):
            try:
                return self._listen(self._channel, after, deadline)
            finally:
                self._listening.release()
        return self._poll(after, deadline)

    def close(self) -> None:
        """Close the listening connection, if any (a later wait opens a new one)."""
        if self._channel is not None:
            with self._listening:
                self._channel.close()

    def _poll(self, after: int, deadline: float) -> int:
        pause = POLL_FIRST
        while True:
            current = self.marker()
            left = deadline - self._clock()
            if current != after or left <= 0:
                return current
            self._sleep(min(pause, left))
            pause = min(POLL_LONGEST, pause * POLL_GROWTH)

    def _listen(self, channel: JobChannel, after: int, deadline: float) -> int:
        try:
            # LISTEN before the first read: a change committed after that read is announced.
            channel.listen()
        except DatabaseUnavailable as exc:
            log.warning("cannot listen for job changes (%s); polling instead", exc)
            return self._poll(after, deadline)
        while True:
            current = self.marker()
            left = deadline - self._clock()
            if current != after or left <= 0:
                return current
            try:
                channel.wait(min(left, RECHECK_SECONDS))
            except DatabaseUnavailable as exc:
                log.warning("lost the job change channel (%s); polling instead", exc)
                return self._poll(after, deadline)

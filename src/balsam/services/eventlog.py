"""The event log read in id order: :class:`EventLog`, behind ``Backend.events_since``.

A reader that resumes after the last id it saw misses nothing only if no event with a lower
id can still appear. On SQLite that holds: one writer at a time, and a row's id is taken
under the write lock, so ids become visible in order. On PostgreSQL it does not: ids come
from a sequence when a row is inserted, transactions commit in any order, so id 10 can be
visible while id 9 is still in flight (or will be rolled back, or was deleted long ago with
its job, leaving a gap for good).

So on PostgreSQL a page stops at the first *gap* (a missing id below a visible one) until it
is known to be final, and the page says ``more`` (read again shortly). A gap is final once
every transaction that could own it has ended:

1. first sighting at time t1: remembered, held;
2. the first read at least :data:`SETTLE_SECONDS` after t1 notes the transactions in flight
   then (a transaction that took the id before t1 has had its transaction id for long: both
   happen in one INSERT statement). None in flight: the gap is final;
3. later reads: final once none of those noted transactions is in flight any more.

A gap held for over :data:`PATIENCE_SECONDS` (a transaction left open for minutes, say, on
another database of the same cluster, which share transaction ids) is let go with a warning,
so a stream never stalls for good; an event committed later than that under the gap's id
would be missed. Balsam's own transactions last milliseconds to a few seconds.

The memory of gaps is per backend (the server's LocalBackend serves every stream of a
database, so one stream's sighting serves all) and bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from balsam.schemas.jobs import MAX_EVENT_ID, EventPage, check_event_limit
from balsam.store import eventlog
from balsam.store.engine import is_sqlite, unit_of_work

log = logging.getLogger(__name__)

#: See the module docstring, steps 2 and 3.
SETTLE_SECONDS = 0.05
PATIENCE_SECONDS = 60.0
#: Gaps remembered at most (the oldest is forgotten first; it is only seen again).
MAX_GAPS = 4096


class EventLog:
    """``events_since`` on one engine, with the gaps seen so far (PostgreSQL)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self._gapped = not is_sqlite(engine)
        self._clock = clock
        self._lock = threading.Lock()
        #: First missing id of a gap -> (first seen, transactions that may own it or None).
        self._gaps: dict[int, tuple[float, frozenset[int] | None]] = {}

    def since(self, after: int, limit: int, workflow: str | None) -> EventPage:
        """The page of events after ``after`` (see ``Backend.events_since``)."""
        check_event_limit(limit)
        after = min(max(0, after), MAX_EVENT_ID)  # beyond: no driver binds it
        with unit_of_work(self.engine, write=False) as session:
            if self._gapped:
                ids, running = eventlog.ids_after_and_running(session, after, limit)
            else:
                ids, running = eventlog.ids_after(session, after, limit), set()
            if not ids:
                # Newest below ``after``: the newest events went with deleted jobs (SQLite
                # then gives their ids out again) or ``after`` came from elsewhere; start
                # over at the newest, or new events under old ids would be skipped.
                return EventPage(cursor=min(after, eventlog.newest_id(session)))
            upto, held = self._horizon(after, ids, running)
            events = eventlog.events_between(session, after, upto, limit, workflow)
        return EventPage(events=events, cursor=upto, more=held or len(ids) == limit)

    def _horizon(self, after: int, ids: list[int], running: set[int]) -> tuple[int, bool]:
        """The highest id before the first gap not known final, and whether one held it."""
        if not self._gapped:
            return ids[-1], False
        prev = after
        with self._lock:
            now = self._clock()
            for i in ids:
                if i != prev + 1 and not self._final(prev + 1, running, now):
                    return prev, True
                prev = i
        return prev, False

    def _final(self, gap: int, running: set[int], now: float) -> bool:
        seen = self._gaps.get(gap)
        if seen is None:
            if len(self._gaps) >= MAX_GAPS:
                del self._gaps[next(iter(self._gaps))]
            self._gaps[gap] = (now, None)
            return False
        first, owners = seen
        if now - first > PATIENCE_SECONDS:
            log.warning("event id %d missing for %.0f s; streams go on past it", gap, now - first)
        elif owners is None:
            if now - first < SETTLE_SECONDS:
                return False
            if running:
                self._gaps[gap] = (first, frozenset(running))
                return False
        elif owners & running:
            return False
        del self._gaps[gap]
        return True

"""A launcher's session lease: renewing it, noticing kills, and recovering dead launchers.

Timers (``launcher`` settings):

* every ``heartbeat_seconds`` the lease is renewed, and the launcher looks after its peers:
  sessions whose heartbeat is older than ``lease_seconds - heartbeat_seconds`` are expired,
  and sessions of launchers on this host whose process is gone are recovered at once, after
  whatever they left running here is killed (:func:`balsam.platform.processes.kill_marked`);
* every ``kill_poll_seconds`` while jobs run, a read-only query asks which held jobs a user
  killed, so ``balsam kill`` takes effect within seconds.

A launcher that cannot renew its lease for ``lease_seconds - 2 x heartbeat_seconds`` (the
database is unreachable) must *fence* itself: stop its running jobs before its peers may
expire the lease and run them again. When the database answers again and the lease was
expired meanwhile, the launcher opens a new session and carries on.

The lease also numbers the session's calls (:meth:`Lease.next_seq`, one counter for claims and
state updates, see :mod:`balsam.backends.base`), and opens sessions with a key of its own so
that an open whose answer was lost, sent again, opens one session.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from balsam.backends.base import Backend
from balsam.config import LauncherSettings
from balsam.errors import BalsamError, NotFound
from balsam.platform.processes import kill_marked, launcher_mark, process_alive
from balsam.schemas.sessions import SessionOut

log = logging.getLogger(__name__)


@dataclass
class LeaseNews:
    """What one :meth:`Lease.tick` learned."""

    killed: list[str] = field(default_factory=list)
    #: The lease is gone (expired by peers): held jobs may run elsewhere now.
    lost: bool = False
    #: The lease could not be renewed for too long: stop running jobs now.
    fence: bool = False


class Lease:
    """One launcher's session on the workflow database."""

    def __init__(
        self,
        backend: Backend,
        settings: LauncherSettings,
        label: str,
        hostname: str,
        batch_job: str | None = None,
    ) -> None:
        self.backend = backend
        #: The scheduler's id of the batch job this launcher runs in, recorded with each session.
        self.batch_job = batch_job
        self.settings = settings
        self.label = label
        self.hostname = hostname
        self.pid = os.getpid()
        self.session_id = 0
        self.renewed_at = 0.0
        self.next_heartbeat = 0.0
        self.next_kill_poll = 0.0
        self._seq = itertools.count(1)
        #: The number most recently handed out.
        self.last_seq = 0
        #: The key of the open being tried, kept until it succeeds (a retry reuses it).
        self._open_key: str | None = None

    def next_seq(self) -> int:
        """The next number of this launcher's call counter (increasing across sessions)."""
        self.last_seq = next(self._seq)
        return self.last_seq

    @property
    def mark(self) -> str:
        """The mark this session's job processes carry."""
        return launcher_mark(self.hostname, self.pid, self.session_id)

    def open(self, now: float) -> SessionOut:
        """Open a new session (a BalsamError passes through; a retry reuses the key)."""
        self._open_key = self._open_key or uuid.uuid4().hex
        session = self.backend.open_session(
            self.label, self.hostname, self.pid, self._open_key, self.batch_job
        )
        self._open_key = None
        self.session_id = session.id
        self.renewed_at = now
        self.next_heartbeat = now + self.settings.heartbeat_seconds
        self.next_kill_poll = now + self.settings.kill_poll_seconds
        return session

    def due_at(self, polling: bool) -> float:
        """When :meth:`tick` has something to do (``polling``: jobs are running)."""
        return min(self.next_heartbeat, self.next_kill_poll) if polling else self.next_heartbeat

    def tick(self, now: float, polling: bool) -> LeaseNews:
        """Renew, poll for kills and recover peers as due."""
        news = LeaseNews()
        renew = now >= self.next_heartbeat
        poll = polling and now >= self.next_kill_poll
        # Both timers move on first: a database that fails must not make the loop spin.
        if renew:
            self.next_heartbeat = now + self.settings.heartbeat_seconds
        if poll or renew:
            self.next_kill_poll = now + self.settings.kill_poll_seconds
        try:
            if renew:
                news.killed = self.backend.heartbeat(self.session_id)
                self.renewed_at = now
                self.recover_peers()
            elif poll:
                news.killed = self.backend.ended_held_jobs(self.session_id)
        except NotFound:
            log.error("session %d expired: its jobs were handed to others", self.session_id)
            news.lost = True
        except BalsamError as exc:
            log.warning("cannot reach the workflow database, will retry: %s", exc)
            news.fence = now - self.renewed_at >= self.settings.fence_after_seconds
        return news

    def recover_peers(self) -> list[int]:
        """Hand back the jobs of launchers that are gone (a BalsamError passes through).

        Before the jobs of a launcher of this host are handed back, whatever it left running
        here is killed: that launcher died, or it hangs (stopped, swapped out) and let its
        lease expire. A hung launcher on another host cannot be reached; when it wakes up it
        finds its lease gone and kills its jobs itself.
        """
        here = [
            s
            for s in self.backend.list_sessions()
            if s.id != self.session_id and s.hostname == self.hostname
        ]
        alive = {s.id: _alive(s) for s in here}
        dead = [s for s in here if not alive[s.id]]
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.expire_after_seconds)
        hung = [s for s in here if alive[s.id] and s.heartbeat < cutoff]
        for session, why in [*((s, "is gone") for s in dead), *((s, "hangs") for s in hung)]:
            killed = kill_marked(launcher_mark(session.hostname, session.pid, session.id))
            log.warning(
                "launcher %d on this host (session %d) %s; %d leftover process(es) killed",
                session.pid,
                session.id,
                why,
                killed,
            )
        recovered = self.backend.expire_sessions(
            self.settings.expire_after_seconds, [s.id for s in dead]
        )
        if recovered:
            log.warning("recovered the jobs of lost launcher session(s) %s", recovered)
        return recovered

    def close(self) -> None:
        """End the session, handing back every job still held (a BalsamError passes through)."""
        self.backend.close_session(self.session_id)


def _alive(session: SessionOut) -> bool:
    """Whether the launcher of a session on this host still runs."""
    return process_alive(session.pid, session.created_at)

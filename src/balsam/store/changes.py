"""The change signal at the storage level: the newest job event id, and PostgreSQL's hint.

Every job state change appends an ``events`` row whose integer id only grows (a sequence on
PostgreSQL, the rowid on SQLite), so the newest id is a *marker* of the jobs table's history:
if it moved, some job changed. Reading it is one lookup at the end of the primary key index.

On PostgreSQL the services that write events also call :func:`notify_job_change` in their
transaction; the server delivers ``NOTIFY balsam_jobs`` at commit to every session that
listens, such as a :class:`JobChannel`. A notification is only a hint: whoever waits on one
still reads the marker (a notification can be lost with a dropped connection).
"""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from balsam.errors import DatabaseUnavailable
from balsam.store.engine import database_errors
from balsam.store.tables import EVENTS

#: The channel job changes are announced on.
JOB_CHANNEL = "balsam_jobs"
_NOTIFY = text(f"SELECT pg_notify('{JOB_CHANNEL}', '')")
_NEWEST = select(func.coalesce(func.max(EVENTS.c.id), 0))


def notify_job_change(session: Session) -> None:
    """Announce, at the commit of ``session``'s transaction, that jobs changed (PostgreSQL;
    nothing on SQLite, whose waiters read the marker)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_NOTIFY)


def newest_event_id(engine: Engine) -> int:
    """The id of the newest job event, 0 when there is none (one index lookup)."""
    with database_errors(), engine.connect() as conn:
        return int(conn.execute(_NEWEST).scalar_one())


class JobChannel:
    """A dedicated autocommit connection that LISTENs on :data:`JOB_CHANNEL` (PostgreSQL).

    Opened on first use from ``engine``'s own connection settings (a connection taken from
    its pool and detached, so it is never handed to anyone else); :meth:`close` ends it and
    the next :meth:`listen` opens a new one. A failure of the connection is a
    :class:`DatabaseUnavailable`, after which the channel is closed.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Any = None

    @property
    def is_open(self) -> bool:
        """Whether a listening connection is open now."""
        return self._conn is not None

    def listen(self) -> None:
        """Make sure a connection listens (opens one when there is none)."""
        if self._conn is not None:
            return
        with database_errors():
            pooled = self.engine.raw_connection()
        try:
            pooled.detach()
            conn = pooled.dbapi_connection
            assert conn is not None
            conn.autocommit = True
            conn.execute(f"LISTEN {JOB_CHANNEL}")
        except Exception as exc:
            pooled.close()
            raise _unavailable(exc) from exc
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        """Block until a notification arrives (True) or ``timeout`` seconds pass (False)."""
        if self._conn is None:
            raise DatabaseUnavailable("the job change channel is not open")
        try:
            got = any(True for _ in self._conn.notifies(timeout=max(0.0, timeout), stop_after=1))
            if got:  # Several commits in a row: one wake is enough for all of them.
                for _ in self._conn.notifies(timeout=0):
                    pass
            return got
        except Exception as exc:
            self.close()
            raise _unavailable(exc) from exc

    def close(self) -> None:
        """End the connection (a no-op when closed)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing to save
                conn.close()


def _unavailable(exc: BaseException) -> DatabaseUnavailable:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return DatabaseUnavailable(f"workflow database unavailable (change channel): {first}")

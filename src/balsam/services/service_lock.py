"""The service lock: one ``balsam service`` per workflow database, taken over when its holder
is gone.

A holder is a random token chosen by the service when it starts. :func:`acquire_lock` takes a
free lock, one whose ``expires_at`` has passed (its holder stopped renewing: killed, its host
lost), or one the caller has shown dead (``take_from``: the holder's pid is gone on this
host); a repeat by the same holder is a renewal. Every change is a compare-and-set on the
holder, so two services starting at once cannot both win. :func:`renew_lock` extends it and
stores the holder's report; it raises NotFound once another holder has taken it, and the
loser stops. Times are the callers' clocks (UTC): hosts that share a database must keep
their clocks in step to within a small part of ``lease_seconds``.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from balsam.errors import NotFound
from balsam.schemas.service import ServiceLockOut
from balsam.store.engine import unit_of_work
from balsam.store.tables import ServiceLockRow, utcnow


def acquire_lock(
    engine: Engine,
    name: str,
    holder: str,
    *,
    hostname: str,
    pid: int,
    lease_seconds: float,
    take_from: str | None = None,
) -> ServiceLockOut:
    """The lock as it stands after trying to take it: ``holder`` is the caller's on success."""
    now = utcnow()
    values = {
        "holder": holder,
        "hostname": hostname,
        "pid": pid,
        "acquired_at": now,
        "heartbeat": now,
        "expires_at": now + timedelta(seconds=lease_seconds),
        "stop_requested": False,
        "status": "",
    }
    try:
        with unit_of_work(engine) as session:
            row = session.get(ServiceLockRow, name)
            if row is None:
                session.add(ServiceLockRow(name=name, **values))
            else:
                _take_if_free(session, name, holder, take_from, values)
    except IntegrityError:
        pass  # another service inserted it first: it holds the lock
    return _current(engine, name)


def _take_if_free(
    session: Session, name: str, holder: str, take_from: str | None, values: dict[str, object]
) -> None:
    row = ServiceLockRow
    now = values["heartbeat"]
    free = (row.expires_at < now) | (row.holder == holder)
    if take_from:
        free = free | (row.holder == take_from)
    stmt = update(row).where(row.name == name, free)
    session.execute(stmt.values(**values).execution_options(synchronize_session=False))


def renew_lock(
    engine: Engine, name: str, holder: str, *, lease_seconds: float, status: str
) -> ServiceLockOut:
    """Extend ``holder``'s lock and store its report; NotFound when it holds it no longer."""
    now = utcnow()
    row = ServiceLockRow
    with unit_of_work(engine) as session:
        stmt = update(row).where(row.name == name, row.holder == holder)
        stmt = stmt.values(
            heartbeat=now, expires_at=now + timedelta(seconds=lease_seconds), status=status
        )
        done = session.execute(stmt.execution_options(synchronize_session=False))
        if not getattr(done, "rowcount", 0):
            raise NotFound(f"the {name} lock is no longer held by this service")
    return _current(engine, name)


def release_lock(engine: Engine, name: str, holder: str) -> None:
    """Give the lock up (nothing when ``holder`` does not hold it: a repeat is a no-op)."""
    row = ServiceLockRow
    with unit_of_work(engine) as session:
        session.execute(delete(row).where(row.name == name, row.holder == holder))


def get_lock(engine: Engine, name: str) -> ServiceLockOut | None:
    """The lock, None when nobody holds it."""
    with unit_of_work(engine, write=False) as session:
        found = session.scalar(select(ServiceLockRow).where(ServiceLockRow.name == name))
        return None if found is None else ServiceLockOut.model_validate(found)


def request_stop(engine: Engine, name: str) -> ServiceLockOut | None:
    """Ask the lock's holder to stop (it sees it on its next renewal); None when unheld."""
    with unit_of_work(engine) as session:
        stmt = update(ServiceLockRow).where(ServiceLockRow.name == name)
        session.execute(stmt.values(stop_requested=True))
    return get_lock(engine, name)


def _current(engine: Engine, name: str) -> ServiceLockOut:
    found = get_lock(engine, name)
    if found is None:
        raise NotFound(f"the {name} lock was released meanwhile")
    return found

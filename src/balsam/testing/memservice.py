"""Service locks of :class:`~balsam.testing.MemoryBackend`, as
:mod:`balsam.services.service_lock`. Each function is one call on a store the caller has locked."""

from __future__ import annotations

from datetime import timedelta

from balsam.errors import NotFound
from balsam.schemas.service import ServiceLockOut
from balsam.testing.memchecks import check_text
from balsam.testing.memstore import Store, utcnow


def acquire_lock(
    store: Store,
    name: str,
    holder: str,
    *,
    hostname: str,
    pid: int,
    lease_seconds: float,
    take_from: str | None = None,
) -> ServiceLockOut:
    """Take the lock when free, expired, already ours or held by ``take_from``."""
    check_text(name, "the lock name", 64)
    check_text(holder, "the lock holder", 64)
    check_text(hostname, "the hostname", 256)
    now = utcnow()
    found = store.service_locks.get(name)
    free = found is None or found.expires_at < now or found.holder in (holder, take_from)
    if free:
        store.service_locks[name] = ServiceLockOut(
            name=name,
            holder=holder,
            hostname=hostname,
            pid=pid,
            acquired_at=now,
            heartbeat=now,
            expires_at=now + timedelta(seconds=lease_seconds),
            stop_requested=False,
            status="",
        )
    return store.service_locks[name].model_copy()


def renew_lock(
    store: Store, name: str, holder: str, *, lease_seconds: float, status: str
) -> ServiceLockOut:
    """Extend ``holder``'s lock (NotFound when another holds it, or nobody)."""
    found = store.service_locks.get(name)
    if found is None or found.holder != holder:
        raise NotFound(f"the {name} lock is no longer held by this service")
    now = utcnow()
    renewed = found.model_copy(
        update={
            "heartbeat": now,
            "expires_at": now + timedelta(seconds=lease_seconds),
            "status": status,
        }
    )
    store.service_locks[name] = renewed
    return renewed.model_copy()


def release_lock(store: Store, name: str, holder: str) -> None:
    """Drop ``holder``'s lock (nothing when it is not the holder)."""
    found = store.service_locks.get(name)
    if found is not None and found.holder == holder:
        del store.service_locks[name]


def get_lock(store: Store, name: str) -> ServiceLockOut | None:
    """The lock, None when unheld."""
    found = store.service_locks.get(name)
    return None if found is None else found.model_copy()


def request_stop(store: Store, name: str) -> ServiceLockOut | None:
    """Mark the lock's holder asked to stop; None when unheld."""
    found = store.service_locks.get(name)
    if found is None:
        return None
    store.service_locks[name] = found.model_copy(update={"stop_requested": True})
    return store.service_locks[name].model_copy()

"""The service lock on every backend: one holder at a time, taken over once it expires."""

from __future__ import annotations

import pytest

from balsam.backends.base import Backend
from balsam.errors import NotFound
from balsam.schemas.service import SERVICE_LOCK


def take(backend: Backend, holder: str, lease: float = 60.0, **kw: str) -> str:
    """Try to take the lock as ``holder``; the holder after."""
    lock = backend.acquire_service_lock(
        SERVICE_LOCK, holder, hostname="host-a", pid=4242, lease_seconds=lease, **kw
    )
    return lock.holder


def test_the_first_service_holds_the_lock_and_a_second_does_not_get_it(backend: Backend) -> None:
    assert backend.get_service_lock(SERVICE_LOCK) is None
    assert take(backend, "first") == "first"
    assert take(backend, "second") == "first"
    lock = backend.get_service_lock(SERVICE_LOCK)
    assert lock is not None
    assert (lock.holder, lock.hostname, lock.pid, lock.stop_requested) == (
        "first",
        "host-a",
        4242,
        False,
    )
    assert lock.expires_at > lock.heartbeat


def test_taking_it_again_is_a_renewal_and_renewing_stores_the_report(backend: Backend) -> None:
    take(backend, "first")
    assert take(backend, "first") == "first"
    renewed = backend.renew_service_lock(
        SERVICE_LOCK, "first", lease_seconds=60.0, status='{"pass": 1}'
    )
    assert renewed.status == '{"pass": 1}'
    again = backend.get_service_lock(SERVICE_LOCK)
    assert again is not None and again.status == '{"pass": 1}'


def test_an_expired_lock_is_taken_over_and_its_old_holder_cannot_renew(backend: Backend) -> None:
    take(backend, "first", lease=0.0)
    assert take(backend, "second") == "second"
    with pytest.raises(NotFound):
        backend.renew_service_lock(SERVICE_LOCK, "first", lease_seconds=60.0, status="")
    backend.release_service_lock(SERVICE_LOCK, "first")  # not the holder: nothing happens
    lock = backend.get_service_lock(SERVICE_LOCK)
    assert lock is not None and lock.holder == "second"


def test_a_holder_shown_dead_is_taken_from_at_once(backend: Backend) -> None:
    take(backend, "first")
    assert take(backend, "second", take_from="someone-else") == "first"
    assert take(backend, "second", take_from="first") == "second"


def test_a_stop_request_reaches_the_holder_and_a_release_frees_the_lock(backend: Backend) -> None:
    assert backend.request_service_stop(SERVICE_LOCK) is None
    take(backend, "first")
    asked = backend.request_service_stop(SERVICE_LOCK)
    assert asked is not None and asked.stop_requested
    renewed = backend.renew_service_lock(SERVICE_LOCK, "first", lease_seconds=60.0, status="")
    assert renewed.stop_requested
    backend.release_service_lock(SERVICE_LOCK, "first")
    backend.release_service_lock(SERVICE_LOCK, "first")  # a repeat is a no-op
    assert backend.get_service_lock(SERVICE_LOCK) is None
    assert take(backend, "second") == "second"
    fresh = backend.get_service_lock(SERVICE_LOCK)
    assert fresh is not None and not fresh.stop_requested

"""The change signal (``change_marker``, ``wait_for_change``) on every backend.

Timing is asserted with generous bounds only: a wait that should return early must return
long before its timeout; a wait that should last its timeout must not return before it.
"""

from __future__ import annotations

import threading
import time

from balsam.backends.base import Backend
from balsam.domain.states import JobState
from balsam.schemas import AppCreate, ClaimRequest, JobCreate, StateUpdate

S = JobState


def _job(backend: Backend) -> str:
    backend.create_app(AppCreate(name="A", executable="true"))
    (job,) = backend.create_jobs([JobCreate(name="j", workflow="w", application="A")])
    return job.job_id


def test_the_marker_grows_with_every_state_change(backend: Backend) -> None:
    assert backend.change_marker() == 0
    job_id = _job(backend)
    created = backend.change_marker()
    assert created > 0
    session = backend.open_session("t", "h", 1)
    backend.claim_jobs(session.id, ClaimRequest(job_ids=[job_id]))
    assert backend.change_marker() == created  # a claim is no state change
    backend.record_updates(session.id, [StateUpdate(job_id=job_id, state=S.RUNNING)])
    running = backend.change_marker()
    assert running > created
    backend.kill_jobs(job_id)
    assert backend.change_marker() > running
    assert backend.change_marker() == backend.change_marker()  # reading changes nothing


def test_a_wait_returns_at_once_when_the_marker_moved_already(backend: Backend) -> None:
    before = backend.change_marker()
    _job(backend)
    started = time.monotonic()
    assert backend.wait_for_change(before, timeout=30) == backend.change_marker() > before
    assert time.monotonic() - started < 10
    # A zero timeout only reads the marker.
    assert backend.wait_for_change(backend.change_marker(), timeout=0) == backend.change_marker()


def test_a_wait_without_changes_lasts_its_timeout(backend: Backend) -> None:
    job_id = _job(backend)
    marker = backend.change_marker()
    started = time.monotonic()
    assert backend.wait_for_change(marker, timeout=0.4) == marker
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 10
    assert backend.get_job(job_id).state is S.PREPROCESSED  # nothing changed meanwhile


def test_a_wait_wakes_when_another_thread_changes_a_job(backend: Backend) -> None:
    job_id = _job(backend)
    marker = backend.change_marker()
    woke: list[tuple[int, float]] = []

    def waiter() -> None:
        started = time.monotonic()
        woke.append((backend.wait_for_change(marker, timeout=60), time.monotonic() - started))

    thread = threading.Thread(target=waiter)
    thread.start()
    backend.set_state(job_id, S.USER_KILLED, "from the other thread")
    thread.join(timeout=60)
    assert not thread.is_alive()
    (new, elapsed) = woke[0]
    assert new > marker and new == backend.change_marker()
    assert elapsed < 20  # far from its 60 s timeout

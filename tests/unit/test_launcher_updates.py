"""The UpdateBuffer on its own: numbered state changes and releases, sent again when lost.

It runs on a :class:`MemoryBackend`, through a :class:`LossyBackend` (the call takes effect,
the answer is lost) or a backend that is down (the call fails before it takes effect); the
session is opened by a real Lease, whose counter numbers the buffer's calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest

from balsam.backends.base import Backend
from balsam.config import LauncherSettings
from balsam.domain.states import JobState
from balsam.errors import DatabaseUnavailable
from balsam.launcher.lease import Lease
from balsam.launcher.updates import UpdateBuffer
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate, UpdateOutcome
from balsam.schemas.sessions import ClaimRequest
from balsam.testing import MemoryBackend
from balsam.testing.lossy import LossyBackend

S = JobState
SETTINGS = LauncherSettings()
INTERVAL = SETTINGS.flush_interval_seconds
NOW = 1000.0


class Unreachable:
    """A backend whose calls fail before they take effect while ``down``."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> object:
        if self.down:
            raise DatabaseUnavailable(f"{name}: connection refused")
        return getattr(self.inner, name)


@pytest.fixture
def memory() -> MemoryBackend:
    backend = MemoryBackend()
    backend.create_app(AppCreate(name="A", executable="true"))
    return backend


@pytest.fixture
def lease(memory: MemoryBackend) -> Lease:
    """An open session on ``memory``."""
    opened = Lease(memory, SETTINGS, "test", "n0")
    opened.open(NOW)
    return opened


BufferMaker = Callable[[object], UpdateBuffer]


@pytest.fixture
def make_buffer(lease: Lease) -> BufferMaker:
    """An UpdateBuffer of ``lease``'s session, writing through ``calls``."""

    def make(calls: object) -> UpdateBuffer:
        buffer = UpdateBuffer(cast(Backend, calls), INTERVAL, lease.next_seq)
        buffer.session_id = lease.session_id
        return buffer

    return make


def claimed(memory: MemoryBackend, lease: Lease, count: int = 1) -> list[str]:
    """Jobs made and claimed by ``lease``'s session (PREPROCESSED, held)."""
    specs = [JobCreate(name=f"j{i}", workflow="w", application="A") for i in range(count)]
    ids = [job.job_id for job in memory.create_jobs(specs)]
    request = ClaimRequest(limit=count, job_ids=ids, claim_seq=lease.next_seq())
    assert len(memory.claim_jobs(lease.session_id, request)) == count
    return ids


def to_states(memory: MemoryBackend, job_id: str) -> list[str]:
    return [e.to_state for e in memory.history(job_id)]


def test_an_empty_buffer_sends_nothing_and_is_never_due(make_buffer: BufferMaker) -> None:
    down = Unreachable(MemoryBackend())
    down.down = True
    buffer = make_buffer(down)
    assert buffer.due_at() is None
    result = buffer.flush(NOW)
    assert (result.results, result.failed) == ([], False)


def test_updates_are_due_a_flush_interval_after_the_first(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    (job,) = claimed(memory, lease)
    buffer = make_buffer(memory)
    buffer.record(job, S.RUNNING, S.PREPROCESSED, NOW)
    buffer.record(job, S.RUN_DONE, S.RUNNING, NOW + 0.1)
    assert buffer.due_at() == NOW + INTERVAL
    buffer.hurry(NOW + 0.1)
    assert buffer.due_at() == NOW + 0.1


def test_updates_are_numbered_in_order_from_the_session_s_counter(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    (job,) = claimed(memory, lease)
    buffer = make_buffer(memory)
    first = buffer.record(job, S.RUNNING, S.PREPROCESSED, NOW)
    between = lease.next_seq()  # a claim, say: one counter for every call
    second = buffer.record(job, S.RUN_DONE, S.RUNNING, NOW)
    assert first < between < second
    result = buffer.flush(NOW)
    assert [(r.seq, r.outcome) for r in result.results] == [
        (first, UpdateOutcome.APPLIED),
        (second, UpdateOutcome.APPLIED),
    ]
    assert len(buffer) == 0 and buffer.due_at() is None


def test_a_flush_whose_answer_was_lost_is_sent_again_unchanged_and_applied_once(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    (job,) = claimed(memory, lease)
    lossy = LossyBackend(memory, loss=1.0, methods=frozenset({"record_updates"}))
    buffer = make_buffer(lossy)
    seq = buffer.record(job, S.RUNNING, S.PREPROCESSED, NOW, "attempt 1")
    result = buffer.flush(NOW)
    assert result.failed and result.results == [] and not result.broken
    # It took effect; the buffer does not know, keeps it and waits a backoff.
    assert memory.get_job(job).state is S.RUNNING
    assert [u.seq for u in buffer.pending] == [seq]
    due = buffer.due_at()
    assert due is not None and due > NOW
    lossy.loss = 0.0
    again = buffer.flush(due)
    assert [(r.seq, r.outcome, r.state) for r in again.results] == [
        (seq, UpdateOutcome.DUPLICATE, S.RUNNING)
    ]
    assert again.results[0].ok and again.results[0].held
    assert to_states(memory, job).count(S.RUNNING) == 1
    assert len(buffer) == 0


def test_updates_recorded_after_a_failed_flush_go_behind_the_kept_ones(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    a, b = claimed(memory, lease, 2)
    down = Unreachable(memory)
    buffer = make_buffer(down)
    buffer.record(a, S.RUNNING, S.PREPROCESSED, NOW)
    down.down = True
    assert buffer.flush(NOW).failed
    buffer.record(b, S.RUNNING, S.PREPROCESSED, NOW + 1)
    buffer.record(a, S.RUN_DONE, S.RUNNING, NOW + 1, release=True)
    assert [(u.job_id, u.state) for u in buffer.pending] == [
        (a, S.RUNNING),
        (b, S.RUNNING),
        (a, S.RUN_DONE),
    ]
    down.down = False
    result = buffer.flush(NOW + 2)
    assert all(r.outcome is UpdateOutcome.APPLIED for r in result.results)
    assert to_states(memory, a)[-4:] == [S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.JOB_FINISHED]
    assert memory.get_job(a).session_id is None
    assert memory.get_job(b).session_id == lease.session_id


def test_failures_back_off_and_a_success_resets_the_backoff(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    (job,) = claimed(memory, lease)
    down = Unreachable(memory)
    buffer = make_buffer(down)
    buffer.record(job, S.RUNNING, S.PREPROCESSED, NOW)
    down.down = True
    waits = []
    for _ in range(3):
        due = buffer.due_at()
        assert due is not None
        now = max(due, NOW)
        assert buffer.flush(now).failed
        after = buffer.due_at()
        assert after is not None
        waits.append(after - now)
    assert waits[0] < waits[1] < waits[2]
    # A task waiting for an answer does not cut the backoff short.
    buffer.hurry(NOW)
    assert buffer.due_at() == buffer.backoff.next_at
    down.down = False
    assert not buffer.flush(buffer.backoff.next_at).failed
    assert buffer.backoff.failures == 0


def test_releases_go_after_the_updates_of_the_same_flush(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    a, b = claimed(memory, lease, 2)
    buffer = make_buffer(memory)
    buffer.release([a], NOW)
    buffer.record(a, S.RUNNING, S.PREPROCESSED, NOW)
    result = buffer.flush(NOW)
    # Released after: the update still found the job held.
    assert [r.outcome for r in result.results] == [UpdateOutcome.APPLIED]
    assert memory.get_job(a).session_id is None
    assert memory.get_job(b).session_id == lease.session_id


def test_a_release_whose_answer_was_lost_keeps_its_number_and_spares_a_job_claimed_since(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    (job,) = claimed(memory, lease)
    lossy = LossyBackend(memory, loss=1.0, methods=frozenset({"release_jobs"}))
    buffer = make_buffer(lossy)
    buffer.release([job], NOW)
    assert buffer.flush(NOW).results == []
    assert buffer.sending is not None
    seq = buffer.sending[0]
    assert memory.get_job(job).session_id is None, "the release took effect"
    # The same session claims the job again before the release is repeated.
    request = ClaimRequest(job_ids=[job], claim_seq=lease.next_seq())
    assert len(memory.claim_jobs(lease.session_id, request)) == 1
    lossy.loss = 0.0
    buffer.flush(NOW + 1)
    assert lossy.calls["release_jobs"] == 2 and buffer.sending is None
    assert seq < request.claim_seq
    assert memory.get_job(job).session_id == lease.session_id


def test_a_release_decided_before_a_claim_took_the_job_again_spares_the_new_hold(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    """The hold a claim gives is never undone by a release queued (or being repeated) from
    before it: the release's number is taken when it is first sent, so without ``keep`` it
    would be later than the claim, and the job, running here, would be let go of."""
    queued, in_flight = claimed(memory, lease, count=2)
    lossy = LossyBackend(memory, loss=1.0, methods=frozenset({"release_jobs"}))
    buffer = make_buffer(lossy)
    # One release is sent and fails before it takes effect; the other waits behind it.
    down = Unreachable(memory)
    buffer.backend = cast(Backend, down)
    buffer.release([in_flight], NOW)
    down.down = True
    buffer.flush(NOW)
    assert buffer.sending is not None
    buffer.release([queued], NOW)
    # Both jobs were let go of by an earlier call and claimed again (as a release that
    # crossed a claim leaves them): the launcher holds them anew.
    memory.release_jobs(lease.session_id, [queued, in_flight], lease.next_seq())
    request = ClaimRequest(job_ids=[queued, in_flight], limit=2, claim_seq=lease.next_seq())
    assert len(memory.claim_jobs(lease.session_id, request)) == 2
    buffer.keep([queued, in_flight])
    down.down = False
    buffer.backend = cast(Backend, memory)
    buffer.flush(NOW + 10)
    assert len(buffer) == 0
    assert memory.get_job(queued).session_id == lease.session_id
    assert memory.get_job(in_flight).session_id == lease.session_id


def test_a_release_that_failed_before_it_took_effect_is_sent_again(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    (job,) = claimed(memory, lease)
    down = Unreachable(memory)
    buffer = make_buffer(down)
    buffer.release([job], NOW)
    down.down = True
    buffer.flush(NOW)
    assert len(buffer) == 1 and buffer.sending is not None
    due = buffer.due_at()
    assert due is not None and due > NOW
    down.down = False
    buffer.flush(due)
    assert len(buffer) == 0
    assert memory.get_job(job).session_id is None


def test_drop_forgets_one_job_s_updates_and_clear_forgets_everything(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    a, b = claimed(memory, lease, 2)
    buffer = make_buffer(memory)
    buffer.record(a, S.RUNNING, S.PREPROCESSED, NOW)
    buffer.record(b, S.RUNNING, S.PREPROCESSED, NOW)
    buffer.drop(a)
    assert [u.job_id for u in buffer.pending] == [b]
    buffer.release([a], NOW)
    buffer.clear()
    assert len(buffer) == 0 and buffer.due_at() is None
    assert buffer.flush(NOW).results == []
    assert memory.get_job(a).state is S.PREPROCESSED


def test_a_refused_update_is_reported_with_where_the_job_stands(
    make_buffer: BufferMaker, memory: MemoryBackend, lease: Lease
) -> None:
    (job,) = claimed(memory, lease)
    memory.kill_jobs(job)
    buffer = make_buffer(memory)
    buffer.record(job, S.RUNNING, S.PREPROCESSED, NOW)
    (result,) = buffer.flush(NOW).results
    assert not result.ok
    assert (result.state, result.held) == (S.USER_KILLED, True)
    assert len(buffer) == 0, "a refusal is an answer: nothing is sent again"

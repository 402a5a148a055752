"""What a launcher claims and where its jobs fit: the Claimer and the NodePool on their own.

The Claimer runs on a :class:`MemoryBackend` (through a :class:`LossyBackend` where answers
are lost) with a real Lease and NodePool; time is a float the test moves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from fractions import Fraction
from typing import Any, cast

import pytest

from balsam.backends.base import Backend
from balsam.config import LauncherSettings
from balsam.domain.resources import NodeSpec, ResourceRequest
from balsam.domain.states import JobState
from balsam.errors import DatabaseUnavailable
from balsam.launcher.claims import IDLE_POLL_SECONDS, WAKE_CHECK_SECONDS, Capacity, Claimer
from balsam.launcher.lease import Lease
from balsam.launcher.options import LauncherOptions
from balsam.launcher.placement import NodePool, Placement
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate, StateUpdate
from balsam.schemas.sessions import ClaimRequest
from balsam.testing import MemoryBackend
from balsam.testing.lossy import LossyBackend

S = JobState
SETTINGS = LauncherSettings()
NOW = 1000.0


@pytest.fixture
def memory() -> MemoryBackend:
    backend = MemoryBackend()
    backend.create_app(AppCreate(name="A", executable="true"))
    return backend


def add(backend: MemoryBackend, count: int, **fields: Any) -> list[str]:
    specs = [JobCreate(name=f"j{i}", workflow="w", application="A", **fields) for i in range(count)]
    return [job.job_id for job in backend.create_jobs(specs)]


def held_by(backend: MemoryBackend, session_id: int, job_ids: list[str]) -> list[str]:
    return sorted(j for j in job_ids if backend.get_job(j).session_id == session_id)


class Unreachable:
    """A backend whose calls fail before they take effect while ``down``."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> object:
        if self.down:
            raise DatabaseUnavailable(f"{name}: connection refused")
        return getattr(self.inner, name)


ClaimerMaker = Callable[..., tuple[Claimer, Lease]]


@pytest.fixture
def make_claimer(memory: MemoryBackend) -> ClaimerMaker:
    """A Claimer for one node of ``cpus`` CPUs, its lease open on ``memory``."""

    def make(
        calls: object = None, cpus: int = 2, minutes: float | None = None
    ) -> tuple[Claimer, Lease]:
        lease = Lease(memory, SETTINGS, "test", "n0")
        lease.open(NOW)
        pool = NodePool([NodeSpec("n0", cpus=cpus)])
        capacity = Capacity(
            nodes=1, cpus_per_node=cpus, gpus_per_node=0, has_mpi=False, serial=True
        )
        backend = cast(Backend, calls) if calls is not None else memory
        claimer = Claimer(
            backend, lease, SETTINGS, LauncherOptions(), pool, capacity, lambda now: minutes
        )
        return claimer, lease

    return make


# ---- claims ----------------------------------------------------------------------------------


def test_a_claim_whose_answer_was_lost_is_repeated_and_returns_the_same_jobs(
    make_claimer: ClaimerMaker, memory: MemoryBackend
) -> None:
    lossy = LossyBackend(memory, loss=1.0, methods=frozenset({"claim_jobs"}))
    claimer, lease = make_claimer(lossy)
    jobs = add(memory, 6)
    first = claimer.request(NOW, 4).claim_seq
    assert claimer.claim(NOW, 0) == []
    assert not claimer.answered
    taken = held_by(memory, lease.session_id, jobs)
    assert len(taken) == 4, "the lost claim took jobs all the same"
    # Kept until answered: asking again names the same claim.
    assert claimer.request(NOW, 4).claim_seq == first
    lossy.loss = 0.0
    again = claimer.claim(NOW + 1, 0)
    assert again is not None and sorted(j.job_id for j in again) == taken
    assert claimer.answered
    assert held_by(memory, lease.session_id, jobs) == taken, "the repeat took more jobs"
    assert claimer.request(NOW + 1, 4).claim_seq > first


def test_a_claim_lost_twice_is_still_the_same_claim(
    make_claimer: ClaimerMaker, memory: MemoryBackend
) -> None:
    lossy = LossyBackend(memory, loss=1.0, methods=frozenset({"claim_jobs"}))
    claimer, lease = make_claimer(lossy)
    jobs = add(memory, 6)
    for attempt in range(3):
        assert claimer.claim(NOW + attempt, 0) == []
    assert len(held_by(memory, lease.session_id, jobs)) == 4
    lossy.loss = 0.0
    again = claimer.claim(NOW + 3, 0)
    assert again is not None and len(again) == 4


def test_answered_claims_take_new_jobs(make_claimer: ClaimerMaker, memory: MemoryBackend) -> None:
    claimer, lease = make_claimer()
    jobs = add(memory, 6)
    first = claimer.claim(NOW, 0)
    assert first is not None and len(first) == 4
    second = claimer.claim(NOW, 0)
    assert second is not None
    assert {j.job_id for j in second}.isdisjoint(j.job_id for j in first)
    assert len(held_by(memory, lease.session_id, jobs)) == 6


def test_a_claim_that_failed_before_it_took_effect_is_retried_after_a_backoff(
    make_claimer: ClaimerMaker, memory: MemoryBackend
) -> None:
    down = Unreachable(memory)
    claimer, _ = make_claimer(down)
    jobs = add(memory, 2)
    down.down = True
    assert claimer.claim(NOW, 0) == []
    assert not claimer.answered and claimer.next_claim > NOW
    assert not claimer.due(NOW, 0) and claimer.due(claimer.next_claim, 0)
    down.down = False
    got = claimer.claim(claimer.next_claim, 0)
    assert got is not None and sorted(j.job_id for j in got) == sorted(jobs)
    assert claimer.answered


def test_a_claim_on_an_expired_session_says_so(
    make_claimer: ClaimerMaker, memory: MemoryBackend
) -> None:
    claimer, _ = make_claimer()
    add(memory, 1)
    memory.expire_sessions(0)
    assert claimer.claim(NOW, 0) is None
    assert claimer.answered


def test_a_claim_that_finds_less_than_it_asked_for_polls_again_later(
    make_claimer: ClaimerMaker, memory: MemoryBackend
) -> None:
    claimer, _ = make_claimer()
    add(memory, 1)
    got = claimer.claim(NOW, 0)
    assert got is not None and len(got) == 1
    assert claimer.drained and claimer.next_claim == NOW + IDLE_POLL_SECONDS
    claimer.soon()
    assert claimer.next_claim == 0.0


def test_an_idle_launcher_claims_as_soon_as_the_database_changes(
    make_claimer: ClaimerMaker, memory: MemoryBackend
) -> None:
    claimer, lease = make_claimer(cpus=4)
    add(memory, 1)
    assert len(claimer.claim(NOW, 0) or []) == 1 and claimer.drained
    # Nothing changed: no claim before the idle poll, whatever the launcher's turns.
    soon = NOW + WAKE_CHECK_SECONDS
    assert claimer.next_at() == soon
    assert not claimer.due(soon, 0)
    # Another launcher's work releases a job: the next marker read makes a claim due.
    (late,) = add(memory, 1)
    assert not claimer.due(soon + WAKE_CHECK_SECONDS / 2, 0), "read at most every check period"
    later = soon + 2 * WAKE_CHECK_SECONDS
    assert claimer.due(later, 0) and later < NOW + IDLE_POLL_SECONDS
    got = claimer.claim(later, 0)
    assert [job.job_id for job in got or []] == [late]
    assert held_by(memory, lease.session_id or 0, [late]) == [late]
    # That claim drained the backlog again and read the marker before it: quiet again.
    assert not claimer.due(later + 2 * WAKE_CHECK_SECONDS, 0)


def test_a_busy_launcher_does_not_read_the_marker(
    make_claimer: ClaimerMaker, memory: MemoryBackend
) -> None:
    claimer, _ = make_claimer(cpus=1)
    add(memory, 10)
    assert len(claimer.claim(NOW, 0) or []) == 2 and not claimer.drained
    assert claimer.next_at() == claimer.next_claim == NOW


def test_the_budget_is_the_free_room_plus_a_round_ahead(make_claimer: ClaimerMaker) -> None:
    claimer, _ = make_claimer(cpus=4)
    assert claimer.prefetch() == 4
    assert claimer.budget(0) == 8
    assert claimer.budget(2) == 6
    # Not while the queue holds more than half a round.
    assert claimer.budget(3) == 0
    claimer.pool.place(ResourceRequest(node_packing_count=4))
    assert claimer.budget(0) == 7


def test_the_claim_asks_only_for_what_fits(
    make_claimer: ClaimerMaker, memory: MemoryBackend
) -> None:
    claimer, lease = make_claimer(cpus=2, minutes=30.0)
    fits = add(memory, 1, wall_time_minutes=30, threads_per_rank=2)
    too_long = add(memory, 1, wall_time_minutes=31)
    too_wide = add(memory, 1, threads_per_rank=3)
    needs_mpi = add(memory, 1, ranks_per_node=2)
    request = claimer.request(NOW, 10)
    assert (request.max_nodes, request.cpus_per_node, request.max_ranks_per_node) == (1, 2, 1)
    assert request.serial_only and request.max_wall_time_minutes == 30.0
    got = claimer.claim(NOW, 0)
    assert got is not None and [j.job_id for j in got] == fits
    assert held_by(memory, lease.session_id, too_long + too_wide + needs_mpi) == []


def test_jobs_left_in_a_processing_state_are_claimed_along(
    make_claimer: ClaimerMaker, memory: MemoryBackend
) -> None:
    memory.create_app(AppCreate(name="Post", executable="true", postprocess="true"))
    (job,) = memory.create_jobs([JobCreate(name="p", workflow="w", application="Post")])
    gone = memory.open_session("gone", "elsewhere", 1)
    memory.claim_jobs(gone.id, ClaimRequest(job_ids=[job.job_id]))
    done = [
        StateUpdate(job_id=job.job_id, state=S.RUNNING),
        StateUpdate(job_id=job.job_id, state=S.RUN_DONE, release=True),
    ]
    memory.record_updates(gone.id, done)
    claimer, lease = make_claimer()
    got = claimer.claim(NOW, 0)
    assert got is not None and [(j.job_id, j.state) for j in got] == [(job.job_id, S.RUN_DONE)]
    assert memory.get_job(job.job_id).session_id == lease.session_id


# ---- where jobs fit --------------------------------------------------------------------------


def test_free_slots_and_room_follow_takes_and_releases() -> None:
    pool = NodePool([NodeSpec("n0", cpus=4), NodeSpec("n1", cpus=4)])
    quarter = ResourceRequest(node_packing_count=4)
    assert (pool.free_slots(True), pool.free_slots(False), pool.has_room()) == (8, 2, True)
    placed = [pool.place(quarter) for _ in range(4)]
    assert all(p is not None and p.hosts == ("n0",) for p in placed)
    assert (pool.free_slots(True), pool.free_slots(False), pool.has_room()) == (4, 1, True)
    more = [pool.place(quarter) for _ in range(4)]
    assert (pool.free_slots(True), pool.free_slots(False), pool.has_room()) == (0, 0, False)
    assert pool.place(quarter) is None
    first = more[0]
    assert first is not None and first.share == Fraction(1, 4)
    pool.release(first)
    assert (pool.free_slots(True), pool.free_slots(False), pool.has_room()) == (1, 0, True)
    for p in placed:
        assert p is not None
        pool.release(p)
    assert (pool.free_slots(True), pool.free_slots(False)) == (5, 1)


def test_a_whole_node_job_using_one_cpu_leaves_no_room_on_its_node() -> None:
    pool = NodePool([NodeSpec("n0", cpus=4)])
    placed = pool.place(ResourceRequest())
    assert placed is not None and placed.cpus == ((0,),)
    assert (pool.free_slots(True), pool.has_room()) == (0, False)
    pool.release(placed)
    assert (pool.free_slots(True), pool.has_room()) == (4, True)


def _recount(pool: NodePool) -> tuple[int, int, bool]:
    """free_slots(True), free_slots(False) and has_room() counted from the nodes."""
    open_nodes = [n for n in pool.nodes if n.ready and n.share < 1 and n.free_cpus]
    idle = [n for n in pool.nodes if n.idle]
    return sum(len(n.free_cpus) for n in open_nodes), len(idle), bool(open_nodes)


def test_the_pool_s_counts_match_its_nodes_through_random_takes_and_releases() -> None:
    rnd = random.Random(4)
    pool = NodePool([NodeSpec(f"n{i}", cpus=4, gpus=2) for i in range(3)])
    shapes = [
        ResourceRequest(node_packing_count=4),
        ResourceRequest(node_packing_count=2, threads_per_rank=2),
        ResourceRequest(node_packing_count=2, gpus_per_rank=1),
        ResourceRequest(),
        ResourceRequest(num_nodes=2),
    ]
    held: list[Placement] = []
    for step in range(500):
        if held and rnd.random() < 0.45:
            pool.release(held.pop(rnd.randrange(len(held))))
        elif step % 97 == 0:
            index = rnd.randrange(3)
            pool.set_ready(index, not pool.nodes[index].ready)
        else:
            placed = pool.place(rnd.choice(shapes))
            if placed is not None:
                held.append(placed)
        assert (pool.free_slots(True), pool.free_slots(False), pool.has_room()) == _recount(pool)
        for node in pool.nodes:
            assert 0 <= node.share <= 1
            assert len(set(node.free_cpus)) == len(node.free_cpus) <= node.spec.cpus
    # Everything given back: every ready node is whole again.
    for placed in held:
        pool.release(placed)
    assert all(n.idle for n in pool.nodes if n.ready)

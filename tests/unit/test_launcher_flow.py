"""The launcher's parts on their own: job flow, run queue, node pool and update buffer.

Each test wires the real parts as ``runner.Launcher.__init__`` does (Lease, UpdateBuffer,
Claimer, RunQueue, NodePool, JobFlow, Dispatcher, Stager) on a :class:`MemoryBackend`, gives
the Dispatcher a fleet of :class:`FakeLink` links that record what a worker would be sent, and
plays the workers itself: their ``started``, ``exited``, ``failed`` and ``cancelled`` reports
go to the flow as the runner hands them on. Time is a float the test moves (no sleeps); no
worker process, SQL database or MPI is involved.
"""

from __future__ import annotations

import itertools
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from balsam.backends.base import Backend
from balsam.config import Site, SiteSettings
from balsam.domain.resources import NodeSpec
from balsam.domain.states import JobState
from balsam.launcher import commands, queue
from balsam.launcher.children import ChildProcesses, Step
from balsam.launcher.claims import Claimer
from balsam.launcher.dispatch import Dispatcher
from balsam.launcher.jobflow import JobFlow
from balsam.launcher.lease import Lease
from balsam.launcher.nodework import NodeWork
from balsam.launcher.options import JobMode, LauncherOptions, LauncherRole
from balsam.launcher.placement import NodePool
from balsam.launcher.processing import CHECK_SECONDS, ProcessingSplit
from balsam.launcher.queue import CHAIN_BELOW_SECONDS, RunQueue
from balsam.launcher.signalled import by_termination_signal
from balsam.launcher.stager import Stager
from balsam.launcher.tasks import (
    TASK_TRANSITIONS,
    StopCause,
    Task,
    TaskState,
    TaskTransitionError,
)
from balsam.launcher.updates import FlushResult, UpdateBuffer
from balsam.launcher.wire import Message
from balsam.launcher.workdirs import DirectoryMaker
from balsam.launcher.workers import WorkerFleet, WorkerLink
from balsam.platform.mpi import MpichLauncher, MpiLauncher
from balsam.schemas.apps import AppCreate, AppOut
from balsam.schemas.jobs import JobCreate, JobOut, RefusalCode, StateUpdate
from balsam.schemas.queries import JobQuery, clause_from_kwargs
from balsam.schemas.service import SERVICE_LOCK
from balsam.schemas.sessions import ClaimRequest
from balsam.testing import MemoryBackend
from balsam.testing.lossy import LossyBackend

S = JobState
T = TaskState
ENV = {"PATH": os.environ.get("PATH", os.defpath)}
SIGTERM, SIGKILL = int(signal.SIGTERM), int(signal.SIGKILL)


# ---- the fake workers ------------------------------------------------------------------------


@dataclass(eq=False)
class FakeLink(WorkerLink):
    """A worker's link that keeps the messages it would send (``WorkerLink.run`` and
    ``send_signal`` build them; nothing is written to a socket)."""

    sent: list[Message] = field(default_factory=list)

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def runs(self) -> list[Message]:
        """The run messages sent, in order."""
        return [m for m in self.sent if m["op"] == "run"]

    def signals(self) -> list[tuple[int, int]]:
        """(key, signal) of each signal message sent, in order."""
        return [(m["key"], m["sig"]) for m in self.sent if m["op"] == "signal"]


class FakeFleet:
    """What the Dispatcher needs of a WorkerFleet: the local link and one link per node."""

    def __init__(self, hosts: list[str]) -> None:
        no_socket = cast(socket.socket, None)
        self.links = {i: FakeLink(i, host, no_socket) for i, host in enumerate(hosts)}
        self.local = self.links[0]
        self.local.local = True


# ---- the parts, wired ------------------------------------------------------------------------


class Rig:
    """The launcher's parts wired as ``Launcher.__init__`` does, with a session open.

    ``claims`` is the backend of the Claimer and the UpdateBuffer (a LossyBackend, say); the
    Lease and the JobFlow's own look-ups use ``backend``.
    """

    def __init__(
        self,
        site: Site,
        backend: MemoryBackend,
        nodes: list[NodeSpec],
        claims: Backend | None = None,
        mpi: MpiLauncher | None = None,
    ) -> None:
        # Children a worker is asked to run are stamped with time.monotonic(): start the
        # fake clock there, so that run times (now - child.started) stay small and positive.
        self.now = time.monotonic()
        self.site, self.backend = site, backend
        settings = site.settings.launcher
        self.pool = NodePool(nodes)
        self.lease = Lease(backend, settings, "test", nodes[0].hostname)
        calls = claims if claims is not None else backend
        self.updates = UpdateBuffer(calls, settings.flush_interval_seconds, self.lease.next_seq)
        mode = JobMode.SERIAL if mpi is None else JobMode.MPI
        mpi_mode = mode is JobMode.MPI
        work = NodeWork(site, self.pool, mpi, mpi_mode, nodes[0].hostname, 0, ENV)
        options = LauncherOptions(job_mode=mode)
        self.claimer = Claimer(
            calls, self.lease, settings, options, self.pool, work.capacity(), self.minutes_left
        )
        self.selector = selectors.DefaultSelector()
        self.children = ChildProcesses(self.selector)
        self.queue = RunQueue(self.pool, self.children, self.minutes_left, self.claimer.ends.rate)
        self.dirs = DirectoryMaker()
        self.dispatch = Dispatcher(
            site, site.settings.platform, mpi, mpi_mode, ENV, self.children, self.dirs
        )
        self.stager: Stager[Task] = Stager(self.selector)
        self.flow = JobFlow(
            site,
            backend,
            settings,
            self.pool,
            self.children,
            self.queue,
            self.updates,
            self.claimer,
            self.dispatch,
            self.stager,
        )
        self.fleet = FakeFleet([n.hostname for n in nodes])
        self.dispatch.fleet = cast(WorkerFleet, self.fleet)
        self.pids = itertools.count(1000)
        # As Launcher._open_session and _session_opened.
        self.lease.open(self.now)
        self.updates.session_id = self.lease.session_id
        self.dispatch.mark = self.lease.mark

    def minutes_left(self, now: float) -> float | None:
        return None

    def close(self) -> None:
        self.stager.close()
        self.dirs.close()
        self.selector.close()

    # ---- the loop's steps -------------------------------------------------------------------

    def tick(self, seconds: float = 0.01) -> None:
        self.now += seconds

    def claim(self) -> list[JobOut]:
        """As Launcher._claim: flush first, claim what fits, take it on."""
        self.flush()
        jobs = self.claimer.claim(self.now, len(self.queue))
        assert jobs is not None, "the session is gone"
        if jobs:
            self.flow.admit(jobs, self.now)
        return jobs

    def start(self) -> None:
        self.queue.start_waiting(self.now, self.flow)

    def fill(self) -> None:
        """Claim and start until a claim brings nothing more (as the loop does while the
        claimer's budget allows: it holds only a round of the allocation ahead)."""
        while self.claim():
            self.start()

    def flush(self) -> FlushResult:
        """As Launcher.flush."""
        result = self.updates.flush(self.now)
        assert not result.lost and not result.broken, result
        self.flow.answers(result.results, self.now)
        return result

    def flush_all(self, tries: int = 50) -> None:
        """Flush until everything is written, flushing again after each failure."""
        for _ in range(tries):
            self.flush()
            if not len(self.updates):
                return
            self.tick(1.0)
        pytest.fail(f"{len(self.updates)} update(s) still unwritten after {tries} flushes")

    def wait_staged(self, seconds: float = 10.0) -> None:
        """Hand the flow the copies that finish, as the loop does on the stager's wake pipe."""
        deadline = time.monotonic() + seconds
        while self.stager.busy:
            left = deadline - time.monotonic()
            assert left > 0, "the stager's copies did not finish"
            for key, _ in self.selector.select(left):
                if key.data is self.stager:
                    self.flow.staged(self.stager.collect(), self.now)

    # ---- the workers' reports ---------------------------------------------------------------

    def task(self, job_id: str) -> Task:
        task = self.flow.task_of(job_id)
        assert task is not None, f"the flow does not hold {job_id[:8]}"
        return task

    def state(self, job_id: str) -> TaskState | None:
        task = self.flow.task_of(job_id)
        return None if task is None else task.state

    def key(self, job_id: str) -> int:
        child = self.task(job_id).child
        assert child is not None, f"{job_id[:8]} has no command"
        return child.key

    def started(self, job_id: str) -> None:
        self.flow.run_started(self.key(job_id), next(self.pids), self.now)

    def exited(self, job_id: str, code: int = 0) -> None:
        """As Launcher.run_exited."""
        child = self.children.remote_exited(self.key(job_id))
        assert child is not None
        self.flow.exited(child, code, self.now)

    def failed(self, job_id: str, error: str, later: bool = False) -> None:
        self.flow.run_failed(self.key(job_id), error, self.now, later)

    def cancelled(self, job_id: str) -> None:
        self.flow.run_cancelled(self.key(job_id), self.now)

    def run(self, job_id: str, code: int = 0) -> None:
        """The worker starts the command and it exits with ``code``."""
        self.started(job_id)
        self.tick()
        self.exited(job_id, code)

    def lose_link(self, index: int) -> None:
        """As Launcher.node_lost for a remote node's worker."""
        link = self.fleet.links[index]
        self.pool.set_ready(index, False)
        for child in self.children:
            if child.remote is link and (detached := self.flow.detach(child.key)) is not None:
                self.flow.command_lost(*detached, link.hostname, self.now)


# ---- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def wf(tmp_path: Path) -> Site:
    """A workflow directory (only its paths are used: the database is in memory)."""
    return Site(path=tmp_path / "wf", settings=SiteSettings())


@pytest.fixture
def memory() -> MemoryBackend:
    """A MemoryBackend with the apps the tests run."""
    backend = MemoryBackend()
    for name, extra in {
        "Plain": {},
        "Pre": {"preprocess": "echo pre"},
        "Post": {"postprocess": "echo post"},
    }.items():
        backend.create_app(AppCreate(name=name, executable="true", **extra))
    return backend


RigMaker = Callable[..., Rig]


@pytest.fixture
def make_rig(wf: Site, memory: MemoryBackend) -> Iterator[RigMaker]:
    """Builds rigs (default: one node with one CPU) and closes them after the test."""
    made: list[Rig] = []

    def make(
        nodes: list[NodeSpec] | None = None,
        claims: Backend | None = None,
        mpi: MpiLauncher | None = None,
    ) -> Rig:
        rig = Rig(wf, memory, nodes or [NodeSpec("n0", cpus=1)], claims, mpi)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


@pytest.fixture
def rig(make_rig: RigMaker) -> Rig:
    return make_rig()


def add(backend: MemoryBackend, count: int = 1, app: str = "Plain", **fields: Any) -> list[str]:
    """Create ``count`` jobs of ``app``; returns their ids."""
    specs = [
        JobCreate(name=f"{app.lower()}{i}", workflow="w", application=app, **fields)
        for i in range(count)
    ]
    return [job.job_id for job in backend.create_jobs(specs)]


def hops(backend: MemoryBackend, job_id: str) -> list[tuple[str, str]]:
    """The job's state changes (from, to), oldest first."""
    return [(e.from_state, e.to_state) for e in backend.history(job_id)]


def entered(backend: MemoryBackend, job_id: str, state: JobState) -> list[str]:
    """The messages of the events that moved the job into ``state``."""
    return [e.message for e in backend.history(job_id) if e.to_state == state]


def db(backend: MemoryBackend, job_id: str) -> tuple[JobState, int | None]:
    """The job's state and holder in the database."""
    job = backend.get_job(job_id)
    return job.state, job.session_id


def cpus_of(rig: Rig, job_id: str) -> tuple[tuple[int, ...], ...] | None:
    """The CPUs the job's run holds on each of its nodes (None: no placement)."""
    placement = rig.task(job_id).placement
    return None if placement is None else placement.cpus


def short_runs(rig: Rig, seconds: float = 0.01) -> None:
    """Make runs look short (``seconds`` each, lately): the queue chains them."""
    assert seconds < CHAIN_BELOW_SECONDS
    for _ in range(64):
        rig.queue.run_times.add(seconds)


def run_to_the_end(rig: Rig, job_id: str) -> None:
    """Claim, start and run a job with no steps of its own until it is finished."""
    rig.claim()
    rig.start()
    rig.run(job_id)
    rig.flush_all()
    assert db(rig.backend, job_id) == (S.JOB_FINISHED, None)


# ---- 1. run chaining -------------------------------------------------------------------------


def test_short_runs_of_the_same_shape_queue_behind_the_running_one(rig: Rig) -> None:
    a, b, c = add(rig.backend, 3)
    short_runs(rig)
    rig.fill()
    runs = rig.fleet.links[0].runs()
    assert [(m["key"], m.get("after")) for m in runs] == [
        (rig.key(a), None),
        (rig.key(b), rig.key(a)),
        (rig.key(c), rig.key(b)),
    ]
    assert [rig.state(j) for j in (a, b, c)] == [T.STARTING, T.QUEUED, T.QUEUED]
    assert len(rig.queue) == 0
    # Queued runs hold no room of their own: the head's placement is all that is taken.
    assert rig.pool.free_slots(per_cpu=True) == 0
    assert rig.task(b).placement is None and rig.task(c).placement is None


def test_the_queue_behind_a_run_is_as_deep_as_the_typical_run_is_short(rig: Rig) -> None:
    jobs = add(rig.backend, 3)
    short_runs(rig, 0.1)  # more than CHAIN_AHEAD_SECONDS of work each: one deep
    rig.fill()
    assert [rig.state(j) for j in jobs] == [T.STARTING, T.QUEUED, T.WAITING]


def test_long_runs_are_not_queued_behind_others(rig: Rig) -> None:
    a, b = add(rig.backend, 2)
    for _ in range(64):
        rig.queue.run_times.add(CHAIN_BELOW_SECONDS * 2)
    rig.fill()
    assert [m["key"] for m in rig.fleet.links[0].runs()] == [rig.key(a)]
    assert rig.state(b) is T.WAITING


def test_runs_of_another_shape_are_not_queued_behind(make_rig: RigMaker) -> None:
    rig = make_rig([NodeSpec("n0", cpus=4)])
    (small,) = add(rig.backend, 1, node_packing_count=4)
    (big,) = add(rig.backend, 1, threads_per_rank=4)
    short_runs(rig)
    rig.fill()
    assert [rig.state(big), rig.state(small)] == [T.STARTING, T.WAITING]
    assert len(rig.fleet.links[0].runs()) == 1


def test_a_queued_run_takes_over_the_placement_of_the_run_it_followed(rig: Rig) -> None:
    a, b = add(rig.backend, 2)
    short_runs(rig)
    rig.fill()
    placement = rig.task(a).placement
    assert placement is not None
    rig.started(a)
    rig.tick()
    rig.exited(a)
    # The worker started b in a's place at once: a's room went to b, not back to the pool.
    assert rig.task(b).placement == placement
    assert rig.pool.free_slots(per_cpu=True) == 0 and not rig.pool.has_room()
    assert rig.state(b) is T.QUEUED
    rig.started(b)
    assert rig.state(b) is T.RUNNING
    rig.flush_all()
    assert db(rig.backend, a) == (S.JOB_FINISHED, None)
    assert db(rig.backend, b) == (S.RUNNING, rig.lease.session_id)
    assert entered(rig.backend, b, S.RUNNING)[0].startswith("attempt 1 on n0 (pid ")
    rig.tick()
    rig.exited(b)
    assert rig.pool.free_slots(per_cpu=True) == 1


def test_a_cancelled_queued_run_gives_its_place_to_the_one_behind_it(rig: Rig) -> None:
    a, b, c = add(rig.backend, 3)
    short_runs(rig)
    rig.fill()
    key_a, key_c = rig.key(a), rig.key(c)
    rig.started(a)
    rig.cancelled(b)
    assert rig.state(b) is T.WAITING and rig.task(b).child is None
    # c now waits for a itself, as the worker moved it up; b queues again, behind c.
    child_c = rig.task(c).child
    assert child_c is not None and child_c.follows is not None and child_c.follows.key == key_a
    rig.start()
    again = rig.fleet.links[0].runs()[-1]
    assert (again["key"], again["after"]) == (rig.key(b), key_c)
    assert rig.state(b) is T.QUEUED
    rig.tick()
    rig.exited(a)
    assert rig.task(c).placement is not None and rig.task(b).placement is None
    rig.started(c)
    assert [rig.state(j) for j in (b, c)] == [T.QUEUED, T.RUNNING]
    rig.flush_all()
    assert [db(rig.backend, j)[0] for j in (a, b, c)] == [
        S.JOB_FINISHED,
        S.PREPROCESSED,
        S.RUNNING,
    ]


def test_stopping_a_queued_run_cancels_it_and_lets_go_of_its_job(rig: Rig) -> None:
    a, b = add(rig.backend, 2)
    short_runs(rig)
    rig.fill()
    rig.started(a)
    rig.flow.stop(rig.task(b), StopCause.KILLED, "killed by user", rig.now, 10.0)
    assert rig.fleet.links[0].signals() == [(rig.key(b), SIGTERM)]
    rig.cancelled(b)  # the worker took it off its queue
    assert rig.state(b) is None
    rig.flush_all()
    assert db(rig.backend, b) == (S.PREPROCESSED, None)
    assert rig.state(a) is T.RUNNING


def test_a_head_run_that_cannot_start_leaves_its_room_to_the_run_queued_behind(
    rig: Rig,
) -> None:
    a, b, c = add(rig.backend, 3)
    short_runs(rig, 0.1)  # one run queued behind each
    rig.fill()
    assert [rig.state(j) for j in (a, b, c)] == [T.STARTING, T.QUEUED, T.WAITING]
    rig.failed(a, "[Errno 2] No such file or directory: 'nope'")
    # What the worker does with b now: it follows nothing running, so it starts at once.
    rig.started(b)
    assert rig.state(b) is T.RUNNING
    rig.start()
    # c may queue behind b (on b's CPU, after it), never start beside it.
    assert rig.state(c) in (T.WAITING, T.QUEUED), "c was started on the only CPU, where b runs"
    assert rig.task(b).placement is not None
    assert not rig.pool.has_room()


def test_any_error_building_one_job_s_command_fails_that_job_and_the_rest_run(
    make_rig: RigMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only the errors foreseen: a bug, or stored values no check foresaw, fails the one
    job with the reason in its history; the launcher goes on with the others."""
    rig = make_rig(nodes=[NodeSpec("n0", cpus=2)])
    bad, good = add(rig.backend, 2)
    real = commands.run_command

    def run_command(job: JobOut, *args: Any, **kwargs: Any) -> Any:
        if job.job_id == bad:
            raise KeyError("unforeseen")
        return real(job, *args, **kwargs)

    monkeypatch.setattr(commands, "run_command", run_command)
    rig.fill()
    assert rig.state(good) is T.STARTING
    assert rig.state(bad) is None
    rig.run(good)
    rig.flush_all()
    assert db(rig.backend, good)[0] is JobState.JOB_FINISHED
    (reason,) = entered(rig.backend, bad, JobState.RUN_ERROR)
    assert "KeyError: 'unforeseen'" in reason


def test_a_run_that_cannot_start_for_a_full_disk_waits_and_costs_no_retry(rig: Rig) -> None:
    (a,) = add(rig.backend)
    rig.fill()
    assert rig.state(a) is T.STARTING
    rig.failed(a, "[Errno 28] No space left on device: 'a.out'", later=True)
    assert rig.state(a) is T.WAITING and rig.pool.has_room()
    rig.start()
    assert rig.state(a) is T.WAITING, "started again while the disk is full"
    rig.tick(queue.FULL_DISK_PAUSE_SECONDS)
    rig.start()
    assert rig.state(a) is T.STARTING
    rig.run(a)
    rig.flush_all()
    assert db(rig.backend, a)[0] is JobState.JOB_FINISHED
    assert entered(rig.backend, a, JobState.RUN_ERROR) == []
    assert rig.backend.get_job(a).error_count == 0


# ---- 2. placement ----------------------------------------------------------------------------


def test_waiting_tasks_start_biggest_first(make_rig: RigMaker) -> None:
    rig = make_rig([NodeSpec("n0", cpus=4)])
    smalls = add(rig.backend, 3, node_packing_count=4)
    (half,) = add(rig.backend, 1, threads_per_rank=2, node_packing_count=2)
    rig.claim()
    rig.start()
    runs = rig.fleet.links[0].runs()
    assert runs[0]["key"] == rig.key(half)
    assert cpus_of(rig, half) == ((0, 1),)
    assert [rig.state(j) for j in smalls] == [T.STARTING, T.STARTING, T.WAITING]
    assert rig.pool.free_slots(per_cpu=True) == 0 and not rig.pool.has_room()


def test_a_task_too_big_for_the_free_room_waits_and_smaller_ones_backfill(
    make_rig: RigMaker,
) -> None:
    rig = make_rig([NodeSpec("n0", cpus=4)])
    (half,) = add(rig.backend, 1, threads_per_rank=2, node_packing_count=2)
    rig.claim()
    rig.start()
    rig.started(half)
    (whole,) = add(rig.backend, 1, threads_per_rank=4)
    small = add(rig.backend, 2, node_packing_count=4)
    rig.claim()
    rig.start()
    assert rig.state(whole) is T.WAITING
    assert [rig.state(j) for j in small] == [T.STARTING, T.STARTING]
    assert rig.queue.waiting == [rig.task(whole)]
    # Room comes back a piece at a time; the big one starts once all of it is free.
    rig.exited(half)
    rig.start()
    assert rig.state(whole) is T.WAITING
    rig.run(small[0])
    rig.start()
    assert rig.state(whole) is T.WAITING
    rig.run(small[1])
    assert rig.pool.free_slots(per_cpu=True) == 4
    rig.start()
    assert rig.state(whole) is T.STARTING
    assert cpus_of(rig, whole) == ((0, 1, 2, 3),)
    assert rig.pool.free_slots(per_cpu=True) == 0


def test_jobs_fill_several_nodes_and_go_to_each_node_s_worker(make_rig: RigMaker) -> None:
    rig = make_rig([NodeSpec("n0", cpus=2), NodeSpec("n1", cpus=2)])
    jobs = add(rig.backend, 5, node_packing_count=2)
    rig.claim()
    rig.start()
    on = {i: [m["key"] for m in link.runs()] for i, link in rig.fleet.links.items()}
    assert on == {0: [rig.key(jobs[0]), rig.key(jobs[1])], 1: [rig.key(jobs[2]), rig.key(jobs[3])]}
    assert rig.state(jobs[4]) is T.WAITING
    rig.run(jobs[2])
    rig.start()
    assert rig.fleet.links[1].runs()[-1]["key"] == rig.key(jobs[4])


def test_in_mpi_mode_a_multi_node_job_takes_whole_idle_nodes_first(make_rig: RigMaker) -> None:
    nodes = [NodeSpec(f"n{i}", cpus=4) for i in range(3)]
    rig = make_rig(nodes, mpi=MpichLauncher("mpiexec"))
    ones = add(rig.backend, 2)
    (pair,) = add(rig.backend, 1, num_nodes=2)
    rig.claim()
    rig.start()
    # Every launch goes through mpiexec, started by the launcher's local worker.
    runs = rig.fleet.local.runs()
    assert [m["key"] for m in runs] == [rig.key(pair), rig.key(ones[0])]
    assert runs[0]["argv"][0] == "mpiexec" and "n0,n1" in runs[0]["argv"]
    assert rig.state(ones[1]) is T.WAITING
    assert (rig.pool.free_slots(per_cpu=False), rig.pool.has_room()) == (0, False)
    rig.run(pair)
    assert rig.pool.free_slots(per_cpu=False) == 2
    rig.start()
    assert rig.state(ones[1]) is T.STARTING and rig.fleet.local.runs()[-1]["argv"][-1] == "true"


# ---- 3. the steps ----------------------------------------------------------------------------


def _parent_with_output(rig: Rig) -> str:
    (parent,) = add(rig.backend, 1)
    run_to_the_end(rig, parent)
    out = rig.site.job_dir(rig.backend.get_job(parent).working_directory)
    out.mkdir(parents=True, exist_ok=True)  # by the worker or the directory thread
    (out / "result.txt").write_text("42\n")
    return parent


def test_a_ready_job_with_parents_is_staged_in_then_runs(rig: Rig) -> None:
    parent = _parent_with_output(rig)
    (child,) = add(rig.backend, 1, parents=[parent])
    assert db(rig.backend, child) == (S.READY, None)
    rig.claim()
    assert rig.state(child) is T.STAGING
    rig.wait_staged()
    # No preprocess: it waits for room without waiting for the database's answer.
    assert rig.state(child) is T.WAITING
    workdir = rig.site.job_dir(rig.backend.get_job(child).working_directory)
    assert (workdir / "result.txt").read_text() == "42\n"
    rig.flush_all()
    assert db(rig.backend, child)[0] is S.PREPROCESSED
    assert entered(rig.backend, child, S.STAGED_IN) == ["staged in 1 item(s)"]
    rig.start()
    rig.run(child)
    rig.flush_all()
    assert db(rig.backend, child) == (S.JOB_FINISHED, None)


def test_a_staged_in_job_waits_for_the_answer_before_its_preprocess(rig: Rig) -> None:
    parent = _parent_with_output(rig)
    (child,) = add(rig.backend, 1, app="Pre", parents=[parent])
    local = rig.fleet.local
    rig.claim()
    before = len(local.runs())
    rig.wait_staged()
    assert rig.state(child) is T.SETTLING
    assert len(local.runs()) == before, "the preprocess started before the answer came"
    rig.flush()
    assert rig.state(child) is T.PREPROCESSING
    pre = local.runs()[-1]
    assert pre["argv"] == ["echo", "pre"] and pre["out"].endswith("preprocess.log")
    rig.run(child)
    assert rig.state(child) is T.SETTLING
    rig.flush()
    assert rig.state(child) is T.WAITING
    assert db(rig.backend, child)[0] is S.PREPROCESSED


def test_after_a_run_with_a_postprocess_the_task_settles_then_postprocesses(rig: Rig) -> None:
    (job,) = add(rig.backend, 1, app="Post")
    rig.claim()
    rig.start()
    rig.run(job)
    assert rig.state(job) is T.SETTLING
    assert [m["argv"] for m in rig.fleet.local.runs()] == [["true"]]
    rig.flush()
    assert db(rig.backend, job) == (S.RUN_DONE, rig.lease.session_id)
    assert rig.state(job) is T.POSTPROCESSING
    assert rig.fleet.local.runs()[-1]["argv"] == ["echo", "post"]
    rig.run(job)
    assert rig.state(job) is None
    rig.flush_all()
    assert db(rig.backend, job) == (S.JOB_FINISHED, None)
    assert (S.RUN_DONE, S.POSTPROCESSED) in hops(rig.backend, job)


def test_a_run_done_with_nothing_after_releases_the_job_in_the_same_update(rig: Rig) -> None:
    (job,) = add(rig.backend, 1)
    rig.claim()
    rig.start()
    rig.run(job)
    assert rig.state(job) is None
    last = rig.updates.pending[-1]
    assert (last.job_id, last.state, last.release) == (job, S.RUN_DONE, True)
    assert rig.updates.releases == []
    rig.flush_all()
    assert db(rig.backend, job) == (S.JOB_FINISHED, None)
    assert hops(rig.backend, job)[-4:] == [
        (S.PREPROCESSED, S.RUNNING),
        (S.RUNNING, S.RUN_DONE),
        (S.RUN_DONE, S.POSTPROCESSED),
        (S.POSTPROCESSED, S.JOB_FINISHED),
    ]


def test_a_run_error_with_an_error_handler_runs_the_handler(rig: Rig) -> None:
    (job,) = add(rig.backend, 1, app="Post", post_error_handler=True)
    rig.claim()
    rig.start()
    rig.run(job, code=3)
    assert rig.state(job) is T.SETTLING
    rig.flush()
    assert db(rig.backend, job)[0] is S.RUN_ERROR
    assert entered(rig.backend, job, S.RUN_ERROR) == ["run failed: exit code 3"]
    assert rig.state(job) is T.POSTPROCESSING
    assert rig.fleet.local.runs()[-1]["argv"] == ["echo", "post"]
    rig.run(job)
    rig.flush_all()
    # The handler left the job in RUN_ERROR: it fixed nothing, so the job fails (0.5's rule).
    assert db(rig.backend, job) == (S.FAILED, None)
    assert entered(rig.backend, job, S.FAILED) == [
        "the error handler exited 0 but left the job RUN_ERROR"
    ]
    assert (S.RUN_ERROR, S.POSTPROCESSED) not in hops(rig.backend, job)


def test_a_run_error_without_a_handler_is_released_to_be_retried(rig: Rig) -> None:
    (job,) = add(rig.backend, 1, max_error_retries=1)
    rig.claim()
    rig.start()
    rig.run(job, code=1)
    assert rig.state(job) is None
    rig.flush_all()
    assert db(rig.backend, job) == (S.RESTART_READY, None)


def test_a_stage_out_waits_for_the_answer_then_copies_and_finishes(
    rig: Rig, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    (job,) = add(rig.backend, 1, stage_out_files="out.txt", stage_out_url=str(outbox))
    rig.claim()
    rig.start()
    workdir = rig.site.job_dir(rig.backend.get_job(job).working_directory)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "out.txt").write_text("result\n")  # what the run wrote
    rig.run(job)
    assert rig.state(job) is T.SETTLING and rig.stager.busy == 0
    rig.flush()
    assert db(rig.backend, job)[0] is S.POSTPROCESSED
    assert rig.state(job) is T.STAGING
    rig.wait_staged()
    assert rig.state(job) is None
    assert (outbox / "out.txt").read_text() == "result\n"
    rig.flush_all()
    assert db(rig.backend, job) == (S.JOB_FINISHED, None)
    assert entered(rig.backend, job, S.JOB_FINISHED) == [f"staged out 1 item(s) to {outbox}"]


def test_a_stage_in_that_cannot_copy_fails_the_job(rig: Rig, tmp_path: Path) -> None:
    (job,) = add(rig.backend, 1, stage_in_url=str(tmp_path / "missing"))
    rig.claim()
    assert rig.state(job) is T.STAGING
    rig.wait_staged()
    assert rig.state(job) is None
    rig.flush_all()
    assert db(rig.backend, job) == (S.FAILED, None)
    (why,) = entered(rig.backend, job, S.FAILED)
    assert "does not exist" in why


def test_a_job_left_in_run_done_by_another_launcher_is_postprocessed_at_once(
    rig: Rig,
) -> None:
    (job,) = add(rig.backend, 1, app="Post")
    gone = rig.backend.open_session("gone", "elsewhere", 1)
    rig.backend.claim_jobs(gone.id, ClaimRequest(job_ids=[job]))
    rig.backend.record_updates(
        gone.id,
        [
            StateUpdate(job_id=job, state=S.RUNNING),
            StateUpdate(job_id=job, state=S.RUN_DONE, release=True),
        ],
    )
    assert db(rig.backend, job) == (S.RUN_DONE, None)
    rig.claim()
    assert rig.state(job) is T.POSTPROCESSING
    assert rig.fleet.local.runs()[-1]["argv"] == ["echo", "post"]
    rig.run(job)
    rig.flush_all()
    assert db(rig.backend, job) == (S.JOB_FINISHED, None)


def test_an_answer_after_shutdown_starts_no_new_step(rig: Rig) -> None:
    (job,) = add(rig.backend, 1, app="Post")
    rig.claim()
    rig.start()
    rig.run(job)
    assert rig.state(job) is T.SETTLING
    sent = len(rig.fleet.local.runs())
    rig.flow.stop_all(StopCause.SHUTDOWN, "stopped: time limit", rig.now, 10.0)
    rig.flush()  # as Launcher._final_flush
    assert len(rig.fleet.local.runs()) == sent, "a postprocess was started after shutdown"
    assert rig.state(job) is not T.POSTPROCESSING


def _handler_asks_for_a_rerun(rig: Rig, job: str) -> None:
    """Run ``job`` to an error; its handler sets RESTART_READY through the API, exits 0."""
    rig.claim()
    rig.start()
    rig.run(job, code=3)
    rig.flush()
    assert rig.state(job) is T.POSTPROCESSING
    rig.started(job)
    rig.backend.set_state(job, S.RESTART_READY, "handler asks for a rerun")
    rig.tick()
    rig.exited(job, 0)


def test_a_handler_s_rerun_with_a_stage_out_is_run_again_by_the_same_task(
    rig: Rig, tmp_path: Path
) -> None:
    (job,) = add(
        rig.backend,
        1,
        app="Post",
        post_error_handler=True,
        stage_out_files="out.txt",
        stage_out_url=str(tmp_path / "outbox"),
    )
    _handler_asks_for_a_rerun(rig, job)
    assert rig.state(job) is T.SETTLING
    result = rig.flush()
    assert [r.code for r in result.results] == [RefusalCode.STATE_CHANGED]
    assert rig.state(job) is T.WAITING
    assert db(rig.backend, job) == (S.RESTART_READY, rig.lease.session_id)
    rig.start()
    rig.started(job)
    rig.flush_all()
    assert db(rig.backend, job)[0] is S.RUNNING
    assert hops(rig.backend, job).count((S.RESTART_READY, S.RUNNING)) == 1
    assert (S.RUN_ERROR, S.POSTPROCESSED) not in hops(rig.backend, job)


def test_a_rerun_by_the_same_task_is_recorded_as_the_next_attempt(rig: Rig, tmp_path: Path) -> None:
    (job,) = add(
        rig.backend,
        1,
        app="Post",
        post_error_handler=True,
        stage_out_files="out.txt",
        stage_out_url=str(tmp_path / "outbox"),
    )
    _handler_asks_for_a_rerun(rig, job)
    rig.flush()
    rig.start()
    rig.started(job)
    rig.flush_all()
    assert rig.backend.get_job(job).error_count == 1
    first, second = entered(rig.backend, job, S.RUNNING)
    assert first.startswith("attempt 1 on ")
    assert second.startswith("attempt 2 on ")


def test_a_handler_s_rerun_is_run_again_by_the_same_task(rig: Rig) -> None:
    """The launcher waits for the answer to the handler's end: the handler moved the job,
    so the launcher's FAILED is refused and it goes on from RESTART_READY itself."""
    (job,) = add(rig.backend, 1, app="Post", post_error_handler=True)
    _handler_asks_for_a_rerun(rig, job)
    result = rig.flush()
    assert [r.code for r in result.results] == [RefusalCode.STATE_CHANGED]
    assert rig.state(job) is T.WAITING
    assert db(rig.backend, job) == (S.RESTART_READY, rig.lease.session_id)
    rig.start()
    rig.run(job)
    rig.flush()
    assert rig.state(job) is T.POSTPROCESSING
    assert hops(rig.backend, job).count((S.RESTART_READY, S.RUNNING)) == 1
    assert entered(rig.backend, job, S.FAILED) == []


# ---- 4. stopping and recovery ----------------------------------------------------------------


def _running(rig: Rig, app: str = "Plain", **fields: Any) -> str:
    """A job whose run started and was recorded RUNNING."""
    (job,) = add(rig.backend, 1, app=app, **fields)
    rig.claim()
    rig.start()
    rig.started(job)
    rig.flush_all()
    assert db(rig.backend, job) == (S.RUNNING, rig.lease.session_id)
    return job


def test_a_run_stopped_at_shutdown_is_recorded_run_timeout(rig: Rig) -> None:
    job = _running(rig)
    key = rig.key(job)
    rig.flow.stop(rig.task(job), StopCause.SHUTDOWN, "stopped: time limit", rig.now, 10.0)
    assert rig.state(job) is T.STOPPING
    assert rig.fleet.local.signals() == [(key, SIGTERM)]
    rig.children.escalate(rig.now + 9.9)
    assert rig.fleet.local.signals() == [(key, SIGTERM)]
    rig.children.escalate(rig.now + 10.0)
    assert rig.fleet.local.signals() == [(key, SIGTERM), (key, SIGKILL)]
    rig.exited(job, -SIGKILL)
    rig.flush_all()
    assert (S.RUNNING, S.RUN_TIMEOUT) in hops(rig.backend, job)
    assert entered(rig.backend, job, S.RUN_TIMEOUT) == ["stopped: time limit (exit code -9)"]
    # Retried on timeout by default: the next launcher runs it again.
    assert db(rig.backend, job) == (S.RESTART_READY, None)


def test_a_run_the_batch_system_signalled_just_before_the_launcher_is_a_timeout(
    rig: Rig,
) -> None:
    """scancel signals the runs and the launcher at once: the run's death comes first."""
    job = _running(rig)
    rig.exited(job, -SIGTERM)
    assert rig.state(job) is T.SIGNALLED
    rig.flush_all()
    assert db(rig.backend, job) == (S.RUNNING, rig.lease.session_id), "decided too soon"
    rig.tick(1.0)
    rig.flow.decide_signalled(rig.now)
    assert rig.state(job) is T.SIGNALLED
    rig.flow.stop_all(StopCause.SHUTDOWN, "stopped: launcher received SIGTERM", rig.now, 10.0)
    assert rig.state(job) is None
    rig.flush_all()
    assert entered(rig.backend, job, S.RUN_TIMEOUT) == [
        "stopped: launcher received SIGTERM (exit code -15)"
    ]
    assert entered(rig.backend, job, S.RUN_ERROR) == []
    assert db(rig.backend, job) == (S.RESTART_READY, None)


def test_a_run_signalled_while_the_launcher_goes_on_is_the_job_s_error_after_the_wait(
    rig: Rig,
) -> None:
    job = _running(rig)
    wait = rig.site.settings.launcher.outside_signal_wait_seconds
    rig.exited(job, 128 + SIGTERM)  # as a shell reports the death of the command it ran
    rig.tick(wait - 0.1)
    rig.flow.decide_signalled(rig.now)
    assert rig.state(job) is T.SIGNALLED
    assert rig.flow.signalled.next_at() == pytest.approx(rig.now + 0.1)
    rig.tick(0.1)
    rig.flow.decide_signalled(rig.now)
    rig.flush_all()
    (message,) = entered(rig.backend, job, S.RUN_ERROR)
    assert message.startswith("run failed: exit code 143")
    assert rig.flow.signalled.next_at() is None


def test_a_run_that_exits_with_an_error_of_its_own_is_recorded_at_once(rig: Rig) -> None:
    job = _running(rig)
    rig.exited(job, 1)
    rig.flush_all()
    assert entered(rig.backend, job, S.RUN_ERROR)[0].startswith("run failed: exit code 1")
    assert len(rig.flow.signalled) == 0


def test_a_user_kill_of_a_signalled_run_records_nothing_more(rig: Rig) -> None:
    job = _running(rig)
    rig.exited(job, -SIGKILL)
    rig.flow.killed([job], rig.now)
    assert rig.state(job) is None and len(rig.flow.signalled) == 0
    rig.flush_all()
    assert hops(rig.backend, job)[-1][1] == S.RUNNING


@pytest.mark.parametrize(
    ("code", "outside"),
    [
        *[(-15, True), (-9, True), (-2, True), (-1, True), (143, True), (137, True), (130, True)],
        *[(0, False), (1, False), (-11, False), (139, False), (-6, False), (255, False)],
    ],
)
def test_which_exit_codes_are_a_termination_signal(code: int, outside: bool) -> None:
    assert by_termination_signal(code) is outside


def test_a_postprocess_stopped_at_shutdown_hands_the_job_back_as_it_was(rig: Rig) -> None:
    (job,) = add(rig.backend, 1, app="Post")
    rig.claim()
    rig.start()
    rig.run(job)
    rig.flush()
    assert rig.state(job) is T.POSTPROCESSING
    rig.started(job)
    rig.flow.stop_all(StopCause.SHUTDOWN, "stopped: time limit", rig.now, 10.0)
    rig.exited(job, -SIGTERM)
    assert rig.state(job) is None
    assert rig.updates.pending == [] and rig.updates.releases == [job]
    rig.flush_all()
    assert db(rig.backend, job) == (S.RUN_DONE, None)
    rig.lease.close()
    assert db(rig.backend, job) == (S.RUN_DONE, None)
    assert hops(rig.backend, job)[-1] == (S.RUNNING, S.RUN_DONE)


def test_a_waiting_task_at_shutdown_is_handed_back_by_the_session_s_close(rig: Rig) -> None:
    a, b = add(rig.backend, 2)
    rig.claim()
    rig.start()
    rig.flow.stop_all(StopCause.SHUTDOWN, "stopped: time limit", rig.now, 10.0)
    assert len(rig.queue) == 0 and rig.state(b) is T.WAITING
    assert db(rig.backend, b)[1] == rig.lease.session_id
    rig.exited(a, -SIGTERM)
    rig.flush_all()
    rig.lease.close()
    assert db(rig.backend, a) == (S.PREPROCESSED, None)
    assert db(rig.backend, b) == (S.PREPROCESSED, None)


def test_a_job_killed_by_a_user_records_nothing_and_is_released(rig: Rig) -> None:
    job = _running(rig)
    rig.backend.kill_jobs(job)
    rig.flow.killed([job], rig.now)
    assert rig.fleet.local.signals() == [(rig.key(job), SIGTERM)]
    rig.exited(job, -SIGTERM)
    assert rig.state(job) is None and rig.updates.pending == []
    rig.flush_all()
    assert db(rig.backend, job) == (S.USER_KILLED, None)
    assert hops(rig.backend, job)[-1] == (S.RUNNING, S.USER_KILLED)


def test_a_job_lost_with_the_lease_records_nothing_and_is_not_released(rig: Rig) -> None:
    job = _running(rig)
    rig.flow.stop(rig.task(job), StopCause.LOST, "the launcher's lease expired", rig.now, 10.0)
    # Others may run it now: no grace.
    assert rig.fleet.local.signals() == [(rig.key(job), SIGKILL)]
    rig.exited(job, -SIGKILL)
    assert rig.state(job) is None
    assert len(rig.updates) == 0
    assert db(rig.backend, job) == (S.RUNNING, rig.lease.session_id)


def test_a_fenced_run_is_recorded_lost_to_run_again(rig: Rig) -> None:
    job = _running(rig)
    rig.flow.fence("the workflow database was unreachable for 40 s", rig.now, 5.0)
    assert rig.fleet.local.signals() == [(rig.key(job), SIGTERM)]
    rig.exited(job, -SIGTERM)
    rig.flush_all()
    after = rig.backend.get_job(job)
    assert (after.state, after.session_id, after.lost_count) == (S.RESTART_READY, None, 1)
    assert entered(rig.backend, job, S.RESTART_READY) == [
        "stopped: the workflow database was unreachable for 40 s"
    ]


def test_fencing_leaves_steps_other_than_runs_alone(rig: Rig) -> None:
    (job,) = add(rig.backend, 1, app="Post")
    rig.claim()
    rig.start()
    rig.run(job)
    rig.flush()
    assert rig.state(job) is T.POSTPROCESSING
    rig.flow.fence("unreachable", rig.now, 5.0)
    assert rig.state(job) is T.POSTPROCESSING and rig.fleet.local.signals() == []


def test_a_lost_node_requeues_a_run_not_started_and_records_a_started_one_lost(
    make_rig: RigMaker,
) -> None:
    rig = make_rig([NodeSpec("n0", cpus=1), NodeSpec("n1", cpus=2)])
    first, started, unstarted = add(rig.backend, 3, node_packing_count=2)
    rig.claim()
    rig.start()
    assert [m["key"] for m in rig.fleet.links[1].runs()] == [rig.key(started), rig.key(unstarted)]
    rig.started(started)
    rig.flush_all()
    rig.lose_link(1)
    assert rig.state(started) is None
    assert rig.state(unstarted) is T.WAITING and rig.task(unstarted).placement is None
    rig.flush_all()
    after = rig.backend.get_job(started)
    assert (after.state, after.session_id, after.lost_count) == (S.RESTART_READY, None, 1)
    assert entered(rig.backend, started, S.RESTART_READY) == [
        "lost with node n1: its worker went away"
    ]
    assert db(rig.backend, unstarted) == (S.PREPROCESSED, rig.lease.session_id)
    # It starts again where there is room: on n0 once first's run ends.
    rig.start()
    assert rig.state(unstarted) is T.WAITING
    rig.run(first)
    rig.start()
    assert rig.fleet.links[0].runs()[-1]["key"] == rig.key(unstarted)


# ---- 5. refusals -----------------------------------------------------------------------------


def test_a_job_taken_by_another_session_is_stopped_and_nothing_more_recorded(
    rig: Rig,
) -> None:
    (job,) = add(rig.backend, 1)
    rig.claim()
    rig.start()
    rig.started(job)  # RUNNING is recorded but not written yet
    rig.backend.expire_sessions(0)
    other = rig.backend.open_session("other", "elsewhere", 1)
    assert [j.job_id for j in rig.backend.claim_jobs(other.id, ClaimRequest())] == [job]
    result = rig.flush()
    assert [r.code for r in result.results] == [RefusalCode.NOT_HELD]
    assert rig.state(job) is T.STOPPING
    assert rig.fleet.local.signals() == [(rig.key(job), SIGKILL)]
    rig.exited(job, -SIGKILL)
    assert rig.state(job) is None and len(rig.updates) == 0
    assert db(rig.backend, job) == (S.PREPROCESSED, other.id)
    assert S.RUNNING not in [to for _, to in hops(rig.backend, job)]


def test_a_job_deleted_while_its_answer_is_awaited_is_dropped(rig: Rig) -> None:
    (job,) = add(rig.backend, 1, app="Pre")
    rig.claim()
    assert rig.state(job) is T.PREPROCESSING
    rig.run(job)
    assert rig.state(job) is T.SETTLING
    by_id = JobQuery(clauses=[clause_from_kwargs({"job_id": job})])
    assert rig.backend.delete_jobs(by_id) == 1
    result = rig.flush()
    assert [r.code for r in result.results] == [RefusalCode.NOT_FOUND]
    assert rig.state(job) is None and len(rig.flow) == 0
    assert len(rig.updates) == 0


def test_a_run_whose_job_was_deleted_before_running_was_written_is_killed(rig: Rig) -> None:
    (job,) = add(rig.backend, 1)
    rig.claim()
    rig.start()
    rig.started(job)
    rig.backend.delete_jobs(JobQuery(clauses=[clause_from_kwargs({"job_id": job})]))
    rig.flush()
    assert rig.fleet.local.signals() == [(rig.key(job), SIGKILL)]
    rig.exited(job, -SIGKILL)
    assert rig.state(job) is None and len(rig.updates) == 0


def test_a_job_killed_between_flushes_has_its_command_stopped(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    (job,) = add(rig.backend, 1)
    rig.claim()
    rig.start()
    rig.started(job)
    rig.backend.kill_jobs(job)
    with caplog.at_level(logging.INFO, logger="balsam.launcher.jobflow"):
        result = rig.flush()
    # The user's kill is no warning: an INFO line says it, as for a kill of a running job.
    refused = [r for r in caplog.records if "state change refused" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.INFO]
    assert [(r.code, r.state) for r in result.results] == [
        (RefusalCode.STATE_CHANGED, S.USER_KILLED)
    ]
    assert rig.state(job) is T.STOPPING
    assert rig.fleet.local.signals() == [(rig.key(job), SIGTERM)]
    rig.exited(job, -SIGTERM)
    rig.flush_all()
    assert db(rig.backend, job) == (S.USER_KILLED, None)
    assert S.RUNNING not in [to for _, to in hops(rig.backend, job)]


def test_a_job_killed_after_its_run_ended_is_let_go(rig: Rig) -> None:
    job = _running(rig)
    rig.backend.kill_jobs(job)
    rig.exited(job, 0)
    result = rig.flush()
    assert [r.code for r in result.results] == [RefusalCode.STATE_CHANGED]
    rig.flush_all()
    assert db(rig.backend, job) == (S.USER_KILLED, None)


# ---- 6. lost answers, end to end on the parts ------------------------------------------------


def _play_workers(rig: Rig) -> None:
    """What the workers report: ends of running commands, then the starts that follow."""
    for task in list(rig.flow.tasks.values()):
        if task.child is not None and task.state in (T.RUNNING, T.PREPROCESSING, T.POSTPROCESSING):
            rig.exited(task.job_id)
    rig.tick()
    for task in list(rig.flow.tasks.values()):
        child = task.child
        if child is None or (child.step is Step.RUN and child.follows is not None):
            continue
        if task.state in (T.STARTING, T.QUEUED, T.PREPROCESSING, T.POSTPROCESSING):
            rig.started(task.job_id)


def test_jobs_finish_once_each_when_half_the_answers_are_lost(
    make_rig: RigMaker, memory: MemoryBackend
) -> None:
    lossy = LossyBackend(memory, loss=0.5, seed=11)
    rig = make_rig([NodeSpec("n0", cpus=2)], claims=cast(Backend, lossy))
    jobs = add(memory, 6, node_packing_count=2) + add(memory, 3, app="Post")
    repeats = 0
    for _ in range(200):
        if all(db(memory, j)[0] is S.JOB_FINISHED for j in jobs):
            break
        rig.claimer.soon()
        rig.claim()
        while not rig.claimer.answered:
            repeats += 1
            rig.tick(1.0)
            rig.claim()
        rig.start()
        _play_workers(rig)
        rig.flush_all()
        rig.tick()
    for job_id in jobs:
        assert db(memory, job_id) == (S.JOB_FINISHED, None), job_id[:8]
        assert [to for _, to in hops(memory, job_id)].count(S.RUNNING) == 1, job_id[:8]
    assert len(rig.flow) == 0
    # The test means something only if answers were lost on every kind of call.
    assert repeats > 0
    assert lossy.lost["record_updates"] > 0 and lossy.lost["claim_jobs"] > 0


# ---- 7. the task state table -----------------------------------------------------------------

APP = AppOut(id=1, name="Plain", executable="true")
PAIRS = [(a, b) for a in TaskState for b in TaskState]


def _task(state: TaskState, memory: MemoryBackend) -> Task:
    (job_id,) = add(memory, 1)
    return Task(memory.get_job(job_id), APP, state=state)


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_a_task_moves_only_as_the_table_allows(
    old: TaskState, new: TaskState, memory: MemoryBackend
) -> None:
    task = _task(old, memory)
    if new in TASK_TRANSITIONS[old]:
        task.move(new)
        assert task.state is new
    else:
        with pytest.raises(TaskTransitionError, match=f"{old} -> {new}"):
            task.move(new)
        assert task.state is old


def test_done_has_no_way_out() -> None:
    assert TASK_TRANSITIONS[T.DONE] == frozenset()
    assert set(TASK_TRANSITIONS) == set(TaskState)
    # Every state can reach DONE (nothing is held for ever).
    for state in TaskState:
        seen, frontier = {state}, [state]
        while frontier:
            for nxt in TASK_TRANSITIONS[frontier.pop()] - seen:
                seen.add(nxt)
                frontier.append(nxt)
        assert T.DONE in seen, state


def test_stop_marks_the_first_cause_only(memory: MemoryBackend) -> None:
    task = _task(T.RUNNING, memory)
    task.stop(StopCause.KILLED, "killed by user")
    task.stop(StopCause.SHUTDOWN, "time limit")
    assert (task.state, task.stop_cause, task.stop_reason) == (
        T.STOPPING,
        StopCause.KILLED,
        "killed by user",
    )


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, TaskState, TaskState]]:
    """Every task move the code makes, recorded (it still goes through Task.move)."""
    made: list[tuple[str, TaskState, TaskState]] = []
    original = Task.move

    def move(self: Task, new: TaskState) -> None:
        made.append((self.job_id, self.state, new))
        original(self, new)

    monkeypatch.setattr(Task, "move", move)
    return made


def test_a_job_s_whole_life_moves_its_task_through_the_table(
    rig: Rig, moves: list[tuple[str, TaskState, TaskState]]
) -> None:
    parent = _parent_with_output(rig)
    moves.clear()
    (job,) = add(rig.backend, 1, app="Post", parents=[parent])
    rig.claim()
    rig.wait_staged()
    rig.start()
    rig.run(job)
    rig.flush()
    rig.run(job)
    rig.flush_all()
    assert db(rig.backend, job) == (S.JOB_FINISHED, None)
    path = [(old, new) for j, old, new in moves if j == job]
    assert path == [
        (T.SETTLING, T.STAGING),
        (T.STAGING, T.SETTLING),
        (T.SETTLING, T.WAITING),
        (T.WAITING, T.STARTING),
        (T.STARTING, T.RUNNING),
        (T.RUNNING, T.SETTLING),
        (T.SETTLING, T.POSTPROCESSING),
        (T.POSTPROCESSING, T.DONE),
    ]
    assert all(new in TASK_TRANSITIONS[old] for old, new in path)


# ---- 8. processing left to the service -----------------------------------------------------


def _split(rig: Rig, role: LauncherRole, service_processing: bool = True) -> ProcessingSplit:
    """Make ``rig`` a processing launcher, or a compute launcher under ``service.processing``."""
    rig.claimer.split = ProcessingSplit(rig.backend, role, service_processing)
    return rig.claimer.split


def _service_alive(backend: MemoryBackend) -> None:
    backend.acquire_service_lock(SERVICE_LOCK, "svc", hostname="h", pid=1, lease_seconds=60)


def test_a_processing_launcher_preprocesses_and_hands_the_job_to_the_runners(rig: Rig) -> None:
    _split(rig, LauncherRole.PROCESSING)
    (pre,) = add(rig.backend, 1, app="Pre")
    (plain,) = add(rig.backend, 1)
    request = rig.claimer.request(rig.now, 4)
    assert request.states == [S.READY, S.STAGED_IN] and request.processing_limit == 4
    assert [j.job_id for j in rig.claim()] == [pre]
    assert rig.state(pre) is T.PREPROCESSING
    rig.started(pre)
    rig.exited(pre, 0)
    rig.flush_all()
    # Ready to run and held by nobody: a compute launcher claims it; nothing ran here.
    assert db(rig.backend, pre) == (S.PREPROCESSED, None)
    assert rig.state(pre) is None and len(rig.fleet.local.runs()) == 1, "only the preprocess"
    assert db(rig.backend, plain) == (S.PREPROCESSED, None)


def test_a_processing_launcher_runs_the_postprocess_a_compute_launcher_left(
    make_rig: RigMaker,
) -> None:
    compute = make_rig()
    _service_alive(compute.backend)
    assert _split(compute, LauncherRole.ALL).defers(compute.now)
    (job,) = add(compute.backend, 1, app="Post")
    (waiting,) = add(compute.backend, 1, app="Pre")
    request = compute.claimer.request(compute.now, 4)
    assert request.states == [S.PREPROCESSED, S.RESTART_READY] and request.processing_limit == 0
    assert [j.job_id for j in compute.claim()] == [job]
    compute.start()
    compute.run(job)
    compute.flush_all()
    assert db(compute.backend, job) == (S.RUN_DONE, None), "let go of for the service"
    assert compute.state(job) is None
    assert db(compute.backend, waiting) == (S.STAGED_IN, None)
    processing = make_rig()
    _split(processing, LauncherRole.PROCESSING)
    assert {j.job_id for j in processing.claim()} == {job, waiting}
    assert processing.state(job) is T.POSTPROCESSING
    processing.started(job)
    processing.exited(job, 0)
    processing.flush_all()
    assert db(processing.backend, job) == (S.JOB_FINISHED, None)


def test_with_no_service_alive_a_compute_launcher_does_every_step_itself(rig: Rig) -> None:
    split = _split(rig, LauncherRole.ALL)
    assert not split.defers(rig.now)
    (job,) = add(rig.backend, 1, app="Post")
    rig.claim()
    rig.start()
    rig.run(job)
    rig.flush()
    assert rig.state(job) is T.POSTPROCESSING
    # A service starts: looked up again only after CHECK_SECONDS.
    _service_alive(rig.backend)
    assert not split.defers(rig.now + CHECK_SECONDS - 1)
    assert split.defers(rig.now + CHECK_SECONDS)
    rig.backend.release_service_lock(SERVICE_LOCK, "svc")
    assert not split.defers(rig.now + 2 * CHECK_SECONDS)


def test_without_the_setting_a_live_service_changes_nothing(rig: Rig) -> None:
    _service_alive(rig.backend)
    split = _split(rig, LauncherRole.ALL, service_processing=False)
    assert not split.defers(rig.now)
    assert rig.claimer.request(rig.now, 4).states == []

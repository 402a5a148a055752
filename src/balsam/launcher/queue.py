"""The jobs a launcher holds and has not started yet, and where each one starts.

Waiting tasks are kept in priority order (biggest, then longest first) and started as room
frees up, smaller ones backfilling behind a big one that does not fit yet. While runs are short
(less than ``CHAIN_BELOW_SECONDS`` on average), tasks of the same size as a running one are also
*queued behind it at its worker*: the worker starts each the moment the one before it exits, on
the same CPUs and GPUs, without a round trip to the launcher; the queue behind a run is as deep
as ``CHAIN_AHEAD_SECONDS`` of work (at most ``CHAIN_MAX_DEPTH``). When a run ends, the one
queued behind it takes over its placement; a queued run cancelled before it starts gives its
place in the queue to the one behind it.

The queue owns the waiting list and the chains' bookkeeping; it starts nothing itself but asks
a :class:`Starter` (the job flow) to send each run.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import Protocol

from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.placement import NodePool, Placement
from balsam.launcher.rates import RecentMean
from balsam.launcher.tasks import Task, TaskState

#: Runs are queued behind others at their worker while runs take less than this on average,
#: or while runs end faster than ``CHAIN_ABOVE_RATE`` a second (a big allocation): it saves a
#: round trip to the launcher per run, and costs a long one the chance of a node that frees
#: up meanwhile (one run deep, for long runs).
CHAIN_BELOW_SECONDS = 2.0
CHAIN_ABOVE_RATE = 100.0
#: How much work (seconds) is queued at a worker behind each run, at most this many runs.
CHAIN_AHEAD_SECONDS = 0.05
CHAIN_MAX_DEPTH = 8
#: How long nothing starts after a run could not start for want of disk space.
FULL_DISK_PAUSE_SECONDS = 2.0

#: What a job takes of a node (see :attr:`Task.shape`).
Shape = tuple[int, int, int, int]


class Starter(Protocol):
    """What sends runs to workers (the job flow)."""

    def start_run(self, task: Task, placement: Placement, now: float) -> bool:
        """Send ``task``'s run to start on ``placement`` now; False if it could not be sent."""
        ...

    def chain(self, task: Task, predecessor: Child, now: float) -> bool:
        """Queue ``task``'s run behind ``predecessor`` at its worker; False if not sent."""
        ...

    def give_back(self, task: Task, now: float, why: str) -> None:
        """Stop holding a waiting task this launcher will not run."""
        ...

    def task_of(self, job_id: str) -> Task | None:
        """The task of a job, if the launcher holds it."""
        ...


class RunQueue:
    """Waiting tasks, their start, and the runs queued at workers behind running ones."""

    def __init__(
        self,
        pool: NodePool,
        children: ChildProcesses,
        minutes_left: Callable[[float], float | None],
        end_rate: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.pool = pool
        self.children = children
        self.minutes_left = minutes_left
        self.end_rate = end_rate
        self.waiting: list[Task] = []
        #: Runs sent to a worker with no successor queued behind them yet.
        self.unchained: dict[int, Child] = {}
        #: Shapes of runs that no waiting task has (so chaining need not look again).
        self.absent_shapes: set[Shape] = set()
        self.run_times = RecentMean()
        #: Nothing starts before this time (a node's disk was full).
        self.held_until = 0.0

    def hold(self, now: float) -> None:
        """Start nothing for a while: a run could not start for want of disk space."""
        self.held_until = now + FULL_DISK_PAUSE_SECONDS

    def __len__(self) -> int:
        return len(self.waiting)

    def enqueue(self, task: Task) -> None:
        """Queue a WAITING task to be started, in priority order."""
        assert task.state is TaskState.WAITING, task.state
        bisect.insort(self.waiting, task, key=lambda t: t.priority)
        self.absent_shapes.discard(task.shape)

    def unqueue(self, task: Task) -> None:
        """Take a task off the waiting list (it is being stopped or given back)."""
        if task in self.waiting:
            self.waiting.remove(task)

    def start_waiting(self, now: float, starter: Starter) -> None:
        """Start waiting tasks on free room, biggest first, then fill run chains."""
        if not self.waiting or now < self.held_until:
            return
        remaining = self.minutes_left(now)
        blocked: set[Shape] = set()
        room = self.pool.has_room()
        for task in list(self.waiting):
            if not room:
                break
            if remaining is not None and task.job.wall_time_minutes > remaining:
                self.unqueue(task)
                starter.give_back(task, now, "does not fit the launcher's remaining time")
                continue
            if task.shape in blocked:
                continue
            placement = self.pool.place(task.job.resources())
            if placement is None:
                # Nothing of this size fits now: skip its twins, try smaller jobs behind it.
                blocked.add(task.shape)
                continue
            self.unqueue(task)
            if starter.start_run(task, placement, now) and task.child is not None:
                self.unchained[task.child.key] = task.child
            # Room only shrinks as jobs start: look again only after one has.
            room = self.pool.has_room()
        self._chain_waiting(remaining, starter, now)

    def _chain_waiting(self, remaining: float | None, starter: Starter, now: float) -> None:
        """Queue a waiting task behind each run of the same size, at that run's worker."""
        if not self.waiting or not self.unchained:
            return
        typical = self.run_times.mean()
        if typical is None:
            return
        if typical >= CHAIN_BELOW_SECONDS and self.end_rate() < CHAIN_ABOVE_RATE:
            return
        # Deep enough to ride out the launcher's own pauses (a flush, a claim) on short runs.
        depth = min(CHAIN_MAX_DEPTH, max(1, math.ceil(CHAIN_AHEAD_SECONDS / max(typical, 1e-3))))
        for child in list(self.unchained.values()):
            if self.waiting:
                self._extend_chain(child, depth, remaining, starter, now)

    def _extend_chain(
        self, child: Child, depth: int, remaining: float | None, starter: Starter, now: float
    ) -> None:
        tail, length = child, _queued_ahead(child)
        if length >= depth:
            # Full: set aside until the run at its head ends (hand_over brings it back).
            del self.unchained[child.key]
            return
        while length < depth and self.waiting:
            before = starter.task_of(tail.job_id)
            if self.children.get(tail.key) is None or before is None:
                self.unchained.pop(tail.key, None)
                return
            stopping = before.state is TaskState.STOPPING or tail.kill_at is not None
            if stopping or before.shape in self.absent_shapes:
                return
            task = self._first_waiting(before.shape, remaining)
            if task is None:
                # Remembered until a task joins the queue: no scan per loop for it.
                self.absent_shapes.add(before.shape)
                return
            self.unqueue(task)
            if not starter.chain(task, tail, now) or task.child is None:
                return
            self.unchained.pop(tail.key, None)
            tail, length = task.child, length + 1
            self.unchained[tail.key] = tail

    def _first_waiting(self, shape: Shape, remaining: float | None) -> Task | None:
        """The first waiting task of ``shape`` that fits the time left."""
        for task in self.waiting:
            if task.shape == shape and (
                remaining is None or task.job.wall_time_minutes <= remaining
            ):
                return task
        return None

    def unlink(self, child: Child) -> None:
        """A queued run was taken off its worker's queue before it started: what queued
        behind it moves up a place, as it did at the worker."""
        before, behind = child.follows, child.successor
        if before is not None and before.successor is child:
            before.successor = behind
        if behind is not None:
            behind.follows = before
        elif before is not None and self.children.get(before.key) is not None:
            self.unchained[before.key] = before
        self.unchained.pop(child.key, None)

    def forget(self, child: Child) -> None:
        """A run will not report again (failed, lost): drop it from the chains."""
        self.unchained.pop(child.key, None)

    def hand_over(
        self, task: Task, child: Child, now: float, successor: Task | None, timed: bool = True
    ) -> None:
        """Give an ended run's place to the run queued behind it, else back to the pool
        (``timed``: the run ran, its length counts towards the typical run's)."""
        self.unchained.pop(child.key, None)
        if child.step is Step.RUN and timed:
            self.run_times.add(now - child.started)
        queued = child.successor
        if queued is not None:
            # The worker starts it now: it waits for nothing any more, whoever holds it.
            queued.follows = None
        if queued is not None and successor is not None and successor.child is queued:
            # The worker starts it now, in this one's place: the placement moves over.
            queued.started = now
            successor.placement, task.placement = task.placement, None
            # Its queue is one shorter: its tail may take another run.
            tail = queued
            while tail.successor is not None:
                tail = tail.successor
            self.unchained[tail.key] = tail
            return
        if task.placement is not None:
            self.pool.release(task.placement)
            task.placement = None


def _queued_ahead(child: Child) -> int:
    """How many queued runs stand between ``child`` and the running one it waits for."""
    count, current = 0, child
    while current.follows is not None:
        count, current = count + 1, current.follows
    return count

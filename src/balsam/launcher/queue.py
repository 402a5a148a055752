"""The jobs a launcher holds and has not started yet, and where each one starts.

A base of :class:`~balsam.launcher.runner.Launcher`, like
:class:`~balsam.launcher.jobflow.JobFlow` and :class:`~balsam.launcher.nodework.NodeWork`.

Waiting jobs are kept in priority order (biggest, then longest first) and started as room
frees up, smaller ones backfilling behind a big one that does not fit yet. While runs are short
(less than ``CHAIN_BELOW_SECONDS`` on average), jobs of the same size as a running one are also
*queued behind it at its worker*: the worker starts each the moment the one before it exits, on
the same CPUs and GPUs, without a round trip to the launcher; the queue behind a run is as deep
as ``CHAIN_AHEAD_SECONDS`` of work (at most ``CHAIN_MAX_DEPTH``). When a run ends, the one
queued behind it takes over its placement; a queued run cancelled before it starts gives its
place in the queue to the one behind it.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import TYPE_CHECKING

from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.jobflow import Task
from balsam.launcher.placement import NodePool, Placement

#: How much work (seconds, at the rate jobs have been ending) a launcher holds ahead.
PREFETCH_SECONDS = 0.5
#: Runs are queued behind others at their worker only while runs take less than this on
#: average: it saves a round trip per short run, and costs a long one the chance of a node
#: that frees up meanwhile.
CHAIN_BELOW_SECONDS = 2.0
#: How much work (seconds) is queued at a worker behind each run, at most this many runs.
CHAIN_AHEAD_SECONDS = 0.05
CHAIN_MAX_DEPTH = 8

#: What a job takes of a node (see :attr:`Task.shape`).
Shape = tuple[int, int, int, int]


class RunQueue:
    """Waiting jobs, their start, and the runs queued at workers behind running ones."""

    pool: NodePool
    children: ChildProcesses
    tasks: dict[str, Task]
    waiting: list[Task]
    #: Runs sent to a worker with no successor queued behind them yet.
    unchained: dict[int, Child]
    #: Shapes of runs that no waiting job has (so chaining need not look again).
    absent_shapes: set[Shape]
    stop_reason: str | None
    fenced: bool
    next_claim: float
    ends: RateMeter
    run_times: RecentMean

    if TYPE_CHECKING:
        # Provided by JobFlow and Launcher.
        def start_run(self, task: Task, placement: Placement, now: float) -> None: ...

        def chain(self, task: Task, predecessor: Child) -> None: ...

        def give_back(self, task: Task, now: float, why: str) -> None: ...

        def remaining_minutes(self, now: float) -> float | None: ...

        def detach(self, key: int) -> tuple[Child, Task] | None: ...

        def drop(self, task: Task) -> None: ...

    def enqueue(self, task: Task) -> None:
        """Queue a job to be started, in priority order."""
        bisect.insort(self.waiting, task, key=lambda t: t.priority)
        self.absent_shapes.discard(task.shape)

    def unqueue(self, task: Task) -> None:
        if task in self.waiting:
            self.waiting.remove(task)

    def start_waiting(self, now: float) -> None:
        if self.stop_reason is not None or self.fenced or not self.waiting:
            return
        remaining = self.remaining_minutes(now)
        blocked: set[tuple[int, int, int, int]] = set()
        room = self.pool.has_room()
        for task in list(self.waiting):
            if not room:
                break
            if remaining is not None and task.job.wall_time_minutes > remaining:
                self.unqueue(task)
                self.give_back(task, now, "does not fit the launcher's remaining time")
                continue
            shape = task.shape
            if shape in blocked:
                continue
            placement = self.pool.place(task.job.resources())
            if placement is None:
                # Nothing of this size fits now: skip its twins, try smaller jobs behind it.
                blocked.add(shape)
                continue
            self.unqueue(task)
            self.start_run(task, placement, now)
            if task.child is not None:
                self.unchained[task.child.key] = task.child
            # Room only shrinks as jobs start: look again only after one has.
            room = self.pool.has_room()
        self._chain_waiting(remaining)

    def _chain_waiting(self, remaining: float | None) -> None:
        """Queue a waiting job behind each run of the same size, at that run's worker."""
        if not self.waiting or not self.unchained:
            return
        typical = self.run_times.mean()
        if typical is None or typical >= CHAIN_BELOW_SECONDS:
            return
        # Deep enough to ride out the launcher's own pauses (a flush, a claim) on short runs.
        depth = min(CHAIN_MAX_DEPTH, max(1, math.ceil(CHAIN_AHEAD_SECONDS / max(typical, 1e-3))))
        for child in list(self.unchained.values()):
            tail, length = child, _queued_ahead(child)
            if length >= depth:
                # Full: set aside until the run at its head ends (hand_over brings it back).
                del self.unchained[child.key]
                continue
            while length < depth and self.waiting:
                before = self.tasks.get(tail.job_id)
                if self.children.get(tail.key) is None or before is None:
                    self.unchained.pop(tail.key, None)
                    break
                if before.killed or tail.kill_at is not None or before.shape in self.absent_shapes:
                    break
                task = self._first_waiting(before.shape, remaining)
                if task is None:
                    # Remembered until a job joins the queue: no scan per loop for it.
                    self.absent_shapes.add(before.shape)
                    break
                self.unqueue(task)
                self.chain(task, tail)
                if task.child is None:
                    break
                self.unchained.pop(tail.key, None)
                tail, length = task.child, length + 1
                self.unchained[tail.key] = tail

    def run_cancelled(self, key: int) -> None:
        """A queued run was taken off its worker's queue before it started (it was killed,
        or the launcher is stopping): what queued behind it moves up a place, as it did at
        the worker, and its job is handed back."""
        child = self.children.get(key)
        if child is not None:
            before, behind = child.follows, child.successor
            if before is not None and before.successor is child:
                before.successor = behind
            if behind is not None:
                behind.follows = before
            elif before is not None and self.children.get(before.key) is not None:
                self.unchained[before.key] = before
        self.unchained.pop(key, None)
        detached = self.detach(key)
        if detached is not None:
            self.drop(detached[1])

    def _first_waiting(
        self, shape: tuple[int, int, int, int], remaining: float | None
    ) -> Task | None:
        """The first waiting job of ``shape`` that fits the time left."""
        for task in self.waiting:
            if task.shape == shape and (
                remaining is None or task.job.wall_time_minutes <= remaining
            ):
                return task
        return None

    def hand_over(self, task: Task, child: Child, now: float) -> None:
        """Give an ended run's place to the run queued behind it, else back to the pool."""
        self.next_claim = now
        self.ends.tick(now)
        if child.step is Step.RUN:
            self.run_times.add(now - child.started)
        successor = child.successor
        follower = self.tasks.get(successor.job_id) if successor is not None else None
        if successor is not None and follower is not None and follower.child is successor:
            # The worker starts it now, in this one's place: the placement moves over.
            successor.follows = None
            successor.started = now
            follower.placement, task.placement = task.placement, None
            # Its queue is one shorter: its tail may take another run.
            tail = successor
            while tail.successor is not None:
                tail = tail.successor
            self.unchained[tail.key] = tail
            return
        assert task.placement is not None
        self.pool.release(task.placement)
        task.placement = None


def _queued_ahead(child: Child) -> int:
    """How many queued runs stand between ``child`` and the running one it waits for."""
    count, current = 0, child
    while current.follows is not None:
        count, current = count + 1, current.follows
    return count


class RateMeter:
    """Events per second over the last ``window`` events."""

    def __init__(self, window: int = 256) -> None:
        self.times: deque[float] = deque(maxlen=window)

    def tick(self, now: float) -> None:
        """Count one event at ``now``."""
        self.times.append(now)

    def rate(self) -> float:
        """Recent events per second (0 with fewer than two)."""
        if len(self.times) < 2:
            return 0.0
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else float(len(self.times))


class RecentMean:
    """The mean of the last ``window`` values."""

    def __init__(self, window: int = 64) -> None:
        self.values: deque[float] = deque(maxlen=window)

    def add(self, value: float) -> None:
        """Count one value."""
        self.values.append(value)

    def mean(self) -> float | None:
        """The mean, or None before the first value."""
        return sum(self.values) / len(self.values) if self.values else None

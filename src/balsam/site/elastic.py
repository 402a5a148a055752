"""The elastic queue: how many launcher batch jobs to keep queued for the work waiting.

:func:`plan` is pure: given the backlog (jobs nobody holds that a launcher would run, counted
by size), the launcher batch jobs not yet ended, the queues the site allows and what the
scheduler says is free, it returns what to submit, what to withdraw and which jobs no queue
could ever run, each with its reason. ``balsam service`` calls it on every pass with what the
database and the scheduler say; the simulator in ``bench/`` calls it with a simulated batch
system.

The rules:

- A job weighs ``num_nodes / node_packing_count`` nodes: packed jobs share a node.
- The backlog (jobs nobody holds) is covered by the nodes of every launcher queued or
  running: a running launcher takes more as its jobs end, so more are asked for only when
  the backlog is larger than all of them together.
- Uncovered nodes are asked for in the service's queues in their order of preference: the
  first queue whose ``min_nodes`` the need reaches (else the one that asks least), never past
  a queue's ``max_queued_jobs``, never in a queue that is backing off after a refusal. A
  launcher gets at least as many nodes as the largest waiting job it is meant for, and at
  least as much time as the longest (plus the launcher's safety margin), within the queue's
  limits. With backfill, a free window that fits is used first, sized to it.
- When the launchers queued are more than the backlog needs, the newest are withdrawn while
  the rest still cover it; with no backlog, every queued launcher is withdrawn.
- A job larger or longer than any queue allows is reported, never asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from balsam.platform.schedulers.base import BackfillWindow, format_minutes
from balsam.platform.schedulers.commands import safety_margin_minutes

#: Fractions of a node below this are rounding, not work.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Shape:
    """``count`` waiting jobs of one size (wall time 0: the job gave none)."""

    num_nodes: int
    node_packing_count: int
    wall_time_minutes: float
    count: int

    @property
    def node_weight(self) -> float:
        """Nodes these jobs take together."""
        return self.count * self.num_nodes / max(1, self.node_packing_count)

    def describe(self) -> str:
        """``3 job(s) of 4 node(s), 90 minutes``."""
        minutes = f", {format_minutes(self.wall_time_minutes)} minutes"
        return f"{self.count} job(s) of {self.num_nodes} node(s)" + (
            minutes if self.wall_time_minutes else ""
        )


@dataclass(frozen=True)
class Queue:
    """A queue the service may submit to, and its limits (from the site's settings)."""

    name: str
    min_nodes: int = 1
    max_nodes: int = 1_000_000
    max_wall_time_minutes: float = math.inf
    max_queued_jobs: int = 1


@dataclass(frozen=True)
class Launcher:
    """A launcher batch job that has not ended.

    ``started`` is true once its launcher claims work (it has a session); it is reported,
    not used for sizing: a running launcher's nodes cover the backlog either way.
    """

    batch_id: int
    queue: str
    num_nodes: int
    wall_time_minutes: float
    running: bool = False
    started: bool = False


@dataclass(frozen=True)
class Submit:
    """Submit a launcher of ``num_nodes`` for ``wall_time_minutes`` to ``queue``."""

    queue: str
    num_nodes: int
    wall_time_minutes: float
    reason: str


@dataclass(frozen=True)
class Withdraw:
    """Cancel the queued launcher ``batch_id``."""

    batch_id: int
    reason: str


@dataclass(frozen=True)
class Unrunnable:
    """Jobs that no queue could run, and why."""

    shape: Shape
    reason: str


@dataclass(frozen=True)
class Plan:
    """One pass's decisions; ``summary`` says in one line why they were made."""

    submit: list[Submit] = field(default_factory=list)
    withdraw: list[Withdraw] = field(default_factory=list)
    unrunnable: list[Unrunnable] = field(default_factory=list)
    summary: str = ""


@dataclass(frozen=True)
class PolicyInput:
    """Everything :func:`plan` decides from.

    ``processing_waiting``: jobs nobody holds that wait only for a launcher's step on its
    host (a postprocess, a stage-out); they need a launcher of any size to exist.
    ``blocked``: queues backing off after a refused submission, with why.
    """

    backlog: Sequence[Shape]
    launchers: Sequence[Launcher]
    queues: Sequence[Queue]
    wall_time_minutes: float
    processing_waiting: int = 0
    backfill: Mapping[str, Sequence[BackfillWindow]] = field(default_factory=dict)
    blocked: Mapping[str, str] = field(default_factory=dict)
    margin: Callable[[float], float] = safety_margin_minutes


def launcher_minutes_for(job_minutes: float, margin: Callable[[float], float]) -> float:
    """The shortest launcher wall time whose launcher still has ``job_minutes`` to give a
    job after its safety margin (to a tenth of a second)."""
    if job_minutes <= 0:
        return 0.0
    low, high = job_minutes, job_minutes + 2 * margin(job_minutes) + 10.0
    while high - low > 1 / 600:
        middle = (low + high) / 2
        low, high = (low, middle) if middle - margin(middle) >= job_minutes else (middle, high)
    return math.ceil(high * 60) / 60


def plan(given: PolicyInput) -> Plan:
    """What to submit and withdraw for ``given`` (see the module's rules)."""
    runnable, unrunnable = _split_runnable(given)
    demand = sum(shape.node_weight for shape in runnable)
    queued = [launcher for launcher in given.launchers if not launcher.running]
    running = [launcher for launcher in given.launchers if launcher.running]
    claiming = [launcher for launcher in running if launcher.started]
    supply = sum(launcher.num_nodes for launcher in given.launchers)
    need = demand - supply
    if not given.launchers and given.processing_waiting and need <= _EPSILON:
        need = _EPSILON * 2  # one launcher of the smallest size runs their steps
    submits = _submissions(given, runnable, need) if need > _EPSILON else []
    withdraws = _withdrawals(queued, supply, demand, given.processing_waiting, given.launchers)
    summary = (
        f"backlog {demand:g} node(s) in {sum(s.count for s in runnable)} job(s); "
        f"{len(queued)} launcher(s) queued and {len(running)} running "
        f"({len(claiming)} claiming) hold {supply:g} node(s)"
    )
    return Plan(submits, withdraws, unrunnable, summary)


def _split_runnable(given: PolicyInput) -> tuple[list[Shape], list[Unrunnable]]:
    """The backlog that some queue could run, and the rest with the reason."""
    runnable, unrunnable = [], []
    for shape in given.backlog:
        reason = _why_unrunnable(shape, given.queues, given.margin)
        if reason:
            unrunnable.append(Unrunnable(shape, reason))
        else:
            runnable.append(shape)
    return runnable, unrunnable


def _why_unrunnable(
    shape: Shape, queues: Sequence[Queue], margin: Callable[[float], float]
) -> str | None:
    if not queues:
        return "the service has no queue to submit to (settings.yml: queues, service.queues)"
    wide = [queue for queue in queues if queue.max_nodes >= shape.num_nodes]
    if not wide:
        widest = max(queues, key=lambda queue: queue.max_nodes)
        return (
            f"needs {shape.num_nodes} node(s); the largest queue ({widest.name}) "
            f"takes {widest.max_nodes}"
        )
    needed = launcher_minutes_for(shape.wall_time_minutes, margin)
    if all(queue.max_wall_time_minutes < needed for queue in wide):
        longest = max(wide, key=lambda queue: queue.max_wall_time_minutes)
        return (
            f"needs {format_minutes(shape.wall_time_minutes)} minutes (a launcher of "
            f"{format_minutes(needed)}); queue {longest.name} allows "
            f"{format_minutes(longest.max_wall_time_minutes)} for {shape.num_nodes} node(s)"
        )
    return None


def _submissions(given: PolicyInput, runnable: list[Shape], need: float) -> list[Submit]:
    """Launchers to submit, in order, until ``need`` nodes are asked for or no queue can take
    another."""
    queued_in = {queue.name: 0 for queue in given.queues}
    for launcher in given.launchers:
        if not launcher.running and launcher.queue in queued_in:
            queued_in[launcher.queue] += 1
    windows = {name: list(found) for name, found in given.backfill.items()}
    submits: list[Submit] = []
    while need > _EPSILON:
        open_queues = [
            queue
            for queue in given.queues
            if queue.name not in given.blocked and queued_in[queue.name] < queue.max_queued_jobs
        ]
        if not open_queues:
            break
        submit = _backfill_submit(given, runnable, need, open_queues, windows)
        submit = submit or _queue_submit(given, runnable, need, open_queues)
        submits.append(submit)
        queued_in[submit.queue] += 1
        need -= submit.num_nodes
    return submits


def _queue_submit(
    given: PolicyInput, runnable: list[Shape], need: float, open_queues: list[Queue]
) -> Submit:
    whole = math.ceil(need - _EPSILON)
    reached = [queue for queue in open_queues if queue.min_nodes <= whole]
    queue = reached[0] if reached else min(open_queues, key=lambda q: q.min_nodes)
    fitting = [s for s in runnable if s.num_nodes <= queue.max_nodes]
    widest = max((s.num_nodes for s in fitting), default=1)
    nodes = min(queue.max_nodes, max(whole, widest, queue.min_nodes))
    minutes = _wall_time(given, fitting, queue.max_wall_time_minutes)
    reason = f"{need:g} node(s) of backlog not covered by queued launchers"
    return Submit(queue.name, nodes, minutes, reason)


def _backfill_submit(
    given: PolicyInput,
    runnable: list[Shape],
    need: float,
    open_queues: list[Queue],
    windows: dict[str, list[BackfillWindow]],
) -> Submit | None:
    """A launcher sized to a free window that fits waiting jobs, taking the window."""
    for queue in open_queues:
        for window in windows.get(queue.name, []):
            limit = min(window.minutes, queue.max_wall_time_minutes)
            nodes = min(window.num_nodes, queue.max_nodes, math.ceil(need - _EPSILON))
            fits = [
                s
                for s in runnable
                if s.num_nodes <= nodes
                and launcher_minutes_for(s.wall_time_minutes, given.margin) <= limit
            ]
            if nodes < queue.min_nodes or not fits:
                continue
            windows[queue.name].remove(window)
            minutes = _wall_time(given, fits, limit)
            reason = (
                f"{need:g} node(s) of backlog; backfill window of {window.num_nodes} node(s) "
                f"for {format_minutes(window.minutes)} minutes"
            )
            return Submit(queue.name, nodes, minutes, reason)
    return None


def _wall_time(given: PolicyInput, shapes: list[Shape], limit: float) -> float:
    """The service's wall time, raised to fit the longest of ``shapes``, within ``limit``."""
    longest = max(
        (launcher_minutes_for(s.wall_time_minutes, given.margin) for s in shapes), default=0.0
    )
    return min(limit, max(given.wall_time_minutes, longest))


def _withdrawals(
    queued: list[Launcher],
    supply: float,
    demand: float,
    processing_waiting: int,
    launchers: Sequence[Launcher],
) -> list[Withdraw]:
    """The newest queued launchers that the backlog does not need."""
    withdraws: list[Withdraw] = []
    keep_one = processing_waiting > 0 and not any(launcher.running for launcher in launchers)
    for launcher in sorted(queued, key=lambda launcher: launcher.batch_id, reverse=True):
        left = supply - launcher.num_nodes
        if keep_one and len(queued) - len(withdraws) == 1:
            break
        if left + _EPSILON < demand:
            break
        withdraws.append(
            Withdraw(
                launcher.batch_id,
                f"not needed: {demand:g} node(s) of backlog, covered by {left:g} without it",
            )
        )
        supply = left
    return withdraws

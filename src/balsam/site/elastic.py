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


#: What a launcher loses of its wall time besides the safety margin: its start-up before the
#: first claim, and the kill grace at its end (the launcher's default is 10 s).
DEFAULT_SLACK_MINUTES = 1.5


@dataclass(frozen=True)
class PolicyInput:
    """Everything :func:`plan` decides from.

    ``processing_waiting``: jobs nobody holds that wait only for a launcher's step on its
    host (a postprocess, a stage-out); they need a launcher of any size to exist.
    ``blocked``: queues backing off after a refused submission, with why. ``margin`` is the
    launchers' safety margin for a wall time, ``slack_minutes`` what they lose besides.
    """

    backlog: Sequence[Shape]
    launchers: Sequence[Launcher]
    queues: Sequence[Queue]
    wall_time_minutes: float
    processing_waiting: int = 0
    backfill: Mapping[str, Sequence[BackfillWindow]] = field(default_factory=dict)
    blocked: Mapping[str, str] = field(default_factory=dict)
    margin: Callable[[float], float] = safety_margin_minutes
    slack_minutes: float = DEFAULT_SLACK_MINUTES

    def minutes_for(self, job_minutes: float) -> float:
        """The shortest launcher wall time that still runs a job of ``job_minutes``."""
        return launcher_minutes_for(job_minutes, self.margin, self.slack_minutes)

    def can_run(self, launcher_nodes: int, launcher_minutes: float, shape: Shape) -> bool:
        """Whether a launcher of this size ever claims jobs of ``shape``."""
        return shape.num_nodes <= launcher_nodes and (
            shape.wall_time_minutes <= 0
            or self.minutes_for(shape.wall_time_minutes) <= launcher_minutes + _EPSILON
        )


def launcher_minutes_for(
    job_minutes: float, margin: Callable[[float], float], slack_minutes: float = 0.0
) -> float:
    """The shortest launcher wall time whose launcher still has ``job_minutes`` for a job
    after its safety margin and ``slack_minutes`` (rounded up to a second)."""
    if job_minutes <= 0:
        return 0.0
    wanted = job_minutes + slack_minutes
    low, high = wanted, wanted + 2 * margin(wanted) + 10.0
    while high - low > 1 / 600:
        middle = (low + high) / 2
        low, high = (low, middle) if middle - margin(middle) >= wanted else (middle, high)
    return math.ceil(high * 60) / 60


def plan(given: PolicyInput) -> Plan:
    """What to submit and withdraw for ``given`` (see the module's rules)."""
    runnable, unrunnable = _split_runnable(given)
    demand = sum(shape.node_weight for shape in runnable)
    queued = [launcher for launcher in given.launchers if not launcher.running]
    running = [launcher for launcher in given.launchers if launcher.running]
    claiming = [launcher for launcher in running if launcher.started]
    supply = sum(launcher.num_nodes for launcher in given.launchers)
    uncovered = _uncovered(given, runnable, given.launchers)
    covered = [shape for shape in runnable if shape not in uncovered]
    need = max(0.0, sum(s.node_weight for s in covered) - supply)
    need += sum(s.node_weight for s in uncovered)
    if not given.launchers and given.processing_waiting and need <= _EPSILON:
        need = _EPSILON * 2  # one launcher of the smallest size runs their steps
    submits = _submissions(given, covered, uncovered, need) if need > _EPSILON else []
    withdraws = _withdrawals(given, runnable, queued, demand)
    summary = (
        f"backlog {demand:g} node(s) in {sum(s.count for s in runnable)} job(s); "
        f"{len(queued)} launcher(s) queued and {len(running)} running "
        f"({len(claiming)} claiming) hold {supply:g} node(s)"
    )
    return Plan(submits, withdraws, unrunnable, summary)


def _uncovered(
    given: PolicyInput, shapes: Sequence[Shape], launchers: Sequence[Launcher]
) -> list[Shape]:
    """The shapes that none of ``launchers`` is wide or long enough to run."""
    return [
        shape
        for shape in shapes
        if not any(given.can_run(x.num_nodes, x.wall_time_minutes, shape) for x in launchers)
    ]


def _split_runnable(given: PolicyInput) -> tuple[list[Shape], list[Unrunnable]]:
    """The backlog that some queue could run, and the rest with the reason."""
    runnable, unrunnable = [], []
    for shape in given.backlog:
        reason = _why_unrunnable(given, shape)
        if reason:
            unrunnable.append(Unrunnable(shape, reason))
        else:
            runnable.append(shape)
    return runnable, unrunnable


def _why_unrunnable(given: PolicyInput, shape: Shape) -> str | None:
    queues = given.queues
    if not queues:
        return "the service has no queue to submit to (settings.yml: queues, service.queues)"
    wide = [queue for queue in queues if queue.max_nodes >= shape.num_nodes]
    if not wide:
        widest = max(queues, key=lambda queue: queue.max_nodes)
        return (
            f"needs {shape.num_nodes} node(s); the largest queue ({widest.name}) "
            f"takes {widest.max_nodes}"
        )
    needed = given.minutes_for(shape.wall_time_minutes)
    if all(queue.max_wall_time_minutes < needed for queue in wide):
        longest = max(wide, key=lambda queue: queue.max_wall_time_minutes)
        return (
            f"needs {format_minutes(shape.wall_time_minutes)} minutes (a launcher of "
            f"{format_minutes(needed)}); queue {longest.name} allows "
            f"{format_minutes(longest.max_wall_time_minutes)} for {shape.num_nodes} node(s)"
        )
    return None


def _submissions(
    given: PolicyInput, covered: list[Shape], uncovered: list[Shape], need: float
) -> list[Submit]:
    """Launchers to submit, in order, until ``need`` nodes are asked for or no open queue
    can run what is left. Each is sized for the jobs no launcher can run yet, if any."""
    queued_in = {queue.name: 0 for queue in given.queues}
    for launcher in given.launchers:
        if not launcher.running and launcher.queue in queued_in:
            queued_in[launcher.queue] += 1
    windows = {name: list(found) for name, found in given.backfill.items()}
    uncovered = list(uncovered)
    submits: list[Submit] = []
    while need > _EPSILON:
        open_queues = [
            queue
            for queue in given.queues
            if queue.name not in given.blocked and queued_in[queue.name] < queue.max_queued_jobs
        ]
        targets = uncovered or covered
        submit = _backfill_submit(given, targets, need, open_queues, windows)
        submit = submit or _queue_submit(given, targets, bool(uncovered), need, open_queues)
        if submit is None:
            break
        submits.append(submit)
        queued_in[submit.queue] += 1
        need -= submit.num_nodes
        runs = [
            s for s in uncovered if given.can_run(submit.num_nodes, submit.wall_time_minutes, s)
        ]
        uncovered = [s for s in uncovered if s not in runs]
        covered = covered + runs
    return submits


def _queue_submit(
    given: PolicyInput,
    targets: list[Shape],
    for_uncovered: bool,
    need: float,
    open_queues: list[Queue],
) -> Submit | None:
    """A launcher in the first open queue that can run some of ``targets``; None when none
    can (a launcher that would run nothing is never asked for)."""
    whole = math.ceil(need - _EPSILON)
    able = [q for q in open_queues if any(_queue_runs(given, q, s) for s in targets)]
    if not able and not targets:
        able = open_queues  # no jobs, only steps waiting for a launcher: any queue does
    if not able:
        return None
    reached = [queue for queue in able if queue.min_nodes <= whole]
    queue = reached[0] if reached else min(able, key=lambda q: q.min_nodes)
    fitting = [s for s in targets if _queue_runs(given, queue, s)]
    # Jobs some launcher can already run need no launcher as wide as they are: size for the
    # ones that fit the need, so a sliver of backlog beside a covered wide job stays small.
    sizing = fitting if for_uncovered else [s for s in fitting if s.num_nodes <= whole]
    sizing = sizing or fitting[-1:]
    widest = max((s.num_nodes for s in sizing), default=1)
    nodes = min(queue.max_nodes, max(whole, widest, queue.min_nodes))
    minutes = _wall_time(given, sizing, queue.max_wall_time_minutes)
    reason = f"{need:g} node(s) of backlog not covered by the launchers queued and running"
    if for_uncovered and given.launchers:
        reason += " (none of them is wide or long enough for some of its jobs)"
    return Submit(queue.name, nodes, minutes, reason)


def _queue_runs(given: PolicyInput, queue: Queue, shape: Shape) -> bool:
    return given.can_run(queue.max_nodes, queue.max_wall_time_minutes, shape)


def _backfill_submit(
    given: PolicyInput,
    targets: list[Shape],
    need: float,
    open_queues: list[Queue],
    windows: dict[str, list[BackfillWindow]],
) -> Submit | None:
    """A launcher sized to a free window that fits waiting jobs, taking the window."""
    for queue in open_queues:
        for window in windows.get(queue.name, []):
            limit = min(window.minutes, queue.max_wall_time_minutes)
            nodes = min(window.num_nodes, queue.max_nodes, math.ceil(need - _EPSILON))
            fits = [s for s in targets if given.can_run(nodes, limit, s)]
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
    longest = max((given.minutes_for(s.wall_time_minutes) for s in shapes), default=0.0)
    return min(limit, max(given.wall_time_minutes, longest))


def _withdrawals(
    given: PolicyInput, runnable: list[Shape], queued: list[Launcher], demand: float
) -> list[Withdraw]:
    """The newest queued launchers that the backlog does not need: the rest still hold as
    many nodes, and still run every kind of job that waits."""
    withdraws: list[Withdraw] = []
    kept = list(given.launchers)
    keep_one = given.processing_waiting > 0 and not any(x.running for x in given.launchers)
    uncovered_now = _uncovered(given, runnable, kept)
    for launcher in sorted(queued, key=lambda launcher: launcher.batch_id, reverse=True):
        rest = [other for other in kept if other is not launcher]
        left = sum(other.num_nodes for other in rest)
        if keep_one and not rest:
            break
        if left + _EPSILON < demand or len(_uncovered(given, runnable, rest)) > len(uncovered_now):
            continue
        reason = f"not needed: {demand:g} node(s) of backlog, covered by {left:g} without it"
        withdraws.append(Withdraw(launcher.batch_id, reason))
        kept = rest
    return withdraws

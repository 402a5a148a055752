"""The elastic queue against a static allocation, on a simulated batch system (issue 9).

Drives the real policy (:func:`balsam.site.elastic.plan`) with a discrete-event model of a
shared machine, a clock in minutes. Every strategy runs on the same seeded campaign and load:
``elastic`` is the service's pass every ``--period`` minutes (``plan``'s submissions queue, its
withdrawals cancel; launchers ``--consume-all``); ``static KxN`` is K launchers of N nodes for
the queue's longest wall time, submitted at 0 and again whenever one ends until the campaign
is done, as a user without the service holds an allocation.

    python bench/elastic_sim.py                  # 100,000 jobs over a day, seed 1
    python bench/elastic_sim.py --quick          # 5,000 jobs
    python bench/elastic_sim.py --seed 7 --backfill on --static 1x128,4x32

The machine, its queue waits and its background load are assumptions (:class:`MachineModel`,
:class:`CampaignModel`), not measurements of a real machine.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from balsam.config import LauncherSettings
from balsam.platform.schedulers.base import BackfillWindow
from balsam.platform.schedulers.commands import safety_margin_minutes
from balsam.site.elastic import Launcher, PolicyInput, Queue, Shape, plan

#: Wall-time estimates users give: round figures, the smallest 1.5 times the run or more.
WALL_LADDER = (5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 240.0)
#: How long before its time limit a launcher stops its jobs (Balsam's default).
GRACE_MINUTES = LauncherSettings().kill_grace_seconds / 60


@dataclass(frozen=True)
class MachineModel:
    """The shared machine (assumptions, not measurements).

    Others hold a share of the nodes drawn uniformly from [bg_low, bg_high] for spells of
    exponential length (mean ``bg_spell_minutes``), never nodes we hold. A batch job waits a
    lognormal time (median: its queue's ``median_wait`` x ``nodes ** wait_exponent``, sigma
    ``wait_sigma``), then starts once its nodes are free, ``drain_minutes`` later at most (the
    scheduler drains nodes for it); before that, at once if it fits the nodes free until others
    take them back (backfill). Its launcher starts ``startup_minutes`` later and, as Balsam's,
    stops ``grace_minutes`` before its limit (the wall time less the safety margin, from its
    own start), claiming only jobs whose wall time fits what is left.
    """

    nodes: int = 512
    bg_low: float = 0.4
    bg_high: float = 0.9
    bg_spell_minutes: float = 90.0
    wait_sigma: float = 1.0
    wait_exponent: float = 0.3
    drain_minutes: float = 60.0
    startup_minutes: float = 1.0
    grace_minutes: float = GRACE_MINUTES


@dataclass(frozen=True)
class CampaignModel:
    """The synthetic campaign: ``jobs`` arriving in ``bursts`` (each all at once) over
    ``span_minutes``; mostly 1-node jobs ``packing`` per node, ``multi_share`` of 2-4 nodes,
    ``wide_share`` of 8-16 nodes; run times lognormal (median ``median_minutes``, sigma
    ``sigma``); ``under_share`` of the jobs give a wall time below their run (then a launcher's
    end may cut them: a timeout; after ``max_timeout_retries`` more the job fails)."""

    jobs: int = 100_000
    bursts: int = 8
    span_minutes: float = 1440.0
    packing: int = 4
    multi_share: float = 0.05
    wide_share: float = 0.01
    median_minutes: float = 3.0
    sigma: float = 0.7
    under_share: float = 0.03
    max_timeout_retries: int = 3


@dataclass(frozen=True)
class QueueModel:
    """A queue's limits (what the policy sees) and its median wait for one node."""

    queue: Queue
    median_wait: float


def default_queues() -> tuple[QueueModel, ...]:
    """``prod`` (up to 128 nodes, 12 hours, 4 queued) before ``debug`` (8 nodes, 1 hour)."""
    return (
        QueueModel(Queue("prod", 1, 128, 720.0, 4), median_wait=30.0),
        QueueModel(Queue("debug", 1, 8, 60.0, 1), median_wait=5.0),
    )


@dataclass(frozen=True)
class Scenario:
    """One comparison's settings (``wall_time``: the service's launcher wall time); a
    strategy still running at ``horizon`` minutes is reported as not finished."""

    machine: MachineModel = MachineModel()
    campaign: CampaignModel = CampaignModel()
    queues: tuple[QueueModel, ...] = field(default_factory=default_queues)
    wall_time: float = 60.0
    period: float = 0.5
    horizon: float = 7 * 1440.0


@dataclass
class Workload:
    """Jobs by id: (nodes, packing, wall-time estimate) and true run time; bursts as
    (minute, job ids)."""

    size: list[tuple[int, int, float]] = field(default_factory=list)
    runtime: list[float] = field(default_factory=list)
    bursts: list[tuple[float, range]] = field(default_factory=list)

    def work(self) -> float:
        """Node-minutes the campaign needs, if nothing is cut."""
        return sum(n / p * r for (n, p, _), r in zip(self.size, self.runtime, strict=True))


def estimate(runtime: float, under: bool) -> float:
    """The wall time a user gives a run: a round figure with room, or one below it."""
    fair = next((w for w in WALL_LADDER if w >= 1.5 * runtime), WALL_LADDER[-1])
    below = [w for w in WALL_LADDER if w < runtime]
    return below[-1] if under and below else fair


def make_workload(model: CampaignModel, rng: random.Random) -> Workload:
    """A seeded campaign: burst times and sizes, then each job's size and times."""
    times = sorted([0.0] + [rng.uniform(0, model.span_minutes) for _ in range(model.bursts - 1)])
    weights = [rng.expovariate(1.0) for _ in times]
    bounds = [round(model.jobs * sum(weights[:k]) / sum(weights)) for k in range(len(times) + 1)]
    work = Workload(bursts=[(t, range(bounds[k], bounds[k + 1])) for k, t in enumerate(times)])
    longest, median = WALL_LADDER[-1] / 1.5, math.log(model.median_minutes)
    for _ in range(model.jobs):
        pick = rng.random()
        if pick < model.wide_share:
            nodes, packing = rng.choice((8, 12, 16)), 1
        elif pick < model.wide_share + model.multi_share:
            nodes, packing = rng.choice((2, 3, 4)), 1
        else:
            nodes, packing = 1, model.packing
        run = min(longest, max(0.1, rng.lognormvariate(median, model.sigma)))
        work.runtime.append(run)
        work.size.append((nodes, packing, estimate(run, rng.random() < model.under_share)))
    return work


class Background:
    """Nodes others hold: a seeded step function of spells, out to the horizon."""

    def __init__(self, model: MachineModel, rng: random.Random, horizon: float) -> None:
        self.total = model.nodes
        self.starts: list[float] = []
        self.levels: list[int] = []
        t = 0.0
        while t < horizon + model.bg_spell_minutes:
            self.starts.append(t)
            self.levels.append(round(model.nodes * rng.uniform(model.bg_low, model.bg_high)))
            t += max(5.0, rng.expovariate(1 / model.bg_spell_minutes))

    def free(self, t: float, held: int, spell: int | None = None) -> int:
        """Idle nodes at ``t`` (or in ``spell``) while we hold ``held``."""
        at = bisect.bisect_right(self.starts, t) - 1 if spell is None else spell
        return max(0, self.total - self.levels[at] - held)

    def fits(self, t: float, held: int, nodes: int, minutes: float) -> bool:
        """Whether ``nodes`` stay free from ``t`` for ``minutes`` (a backfill start)."""
        first = bisect.bisect_right(self.starts, t) - 1
        last = bisect.bisect_left(self.starts, t + minutes)
        return all(self.free(t, held, k) >= nodes for k in range(first, last))

    def windows(self, t: float, held: int, queue: str, limit: float) -> list[BackfillWindow]:
        """The idle nodes as disjoint windows (nodes free until others take them back),
        longest first, as a scheduler reports them; one outlasting ``limit`` is unbounded."""
        low, layers = self.free(t, held), []
        for k in range(bisect.bisect_right(self.starts, t), len(self.starts)):
            if low <= 0 or self.starts[k] - t >= limit:
                break
            later = self.free(t, held, k)
            if later < low:
                layers.append(BackfillWindow(queue, low - later, self.starts[k] - t))
                low = later
        if low > 0:
            layers.append(BackfillWindow(queue, low, math.inf))
        return layers[::-1]


class NodePool:
    """A launcher's nodes: whole idle nodes, and nodes shared by packed jobs with a slot left
    (a packed job goes to a shared node first, as Balsam's node manager places it)."""

    def __init__(self, count: int) -> None:
        self.whole = list(range(count - 1, -1, -1))
        self.used = [0] * count
        self.open: dict[int, dict[int, None]] = {}  # packing -> nodes with a free slot, in order

    def can_take(self, nodes: int, packing: int) -> bool:
        """Whether a job of this size fits now."""
        if nodes > 1 or packing <= 1:
            return len(self.whole) >= nodes
        return bool(self.whole) or bool(self.open.get(packing))

    def take(self, nodes: int, packing: int) -> tuple[int, ...]:
        """Nodes for a job (check :meth:`can_take` first)."""
        if nodes > 1 or packing <= 1:
            return tuple(self.whole.pop() for _ in range(nodes))
        shared = self.open.setdefault(packing, {})
        node = next(iter(shared)) if shared else self.whole.pop()
        self.used[node] += 1
        if self.used[node] == packing:
            shared.pop(node, None)
        else:
            shared.setdefault(node)
        return (node,)

    def give(self, held: tuple[int, ...], packing: int) -> None:
        """A job's nodes back."""
        if len(held) > 1 or packing <= 1:
            self.whole.extend(held)
            return
        node = held[0]
        self.used[node] -= 1
        if self.used[node] == 0:
            self.open[packing].pop(node, None)
            self.whole.append(node)
        else:
            self.open[packing].setdefault(node)


@dataclass(eq=False)
class Batch:
    """A launcher batch job: queued, running (its launcher packs jobs), then gone."""

    bid: int
    queue: str
    nodes: int
    wall: float
    submitted: float
    eligible: float  # when its wait in the queue ends
    consume_all: bool
    state: str = "queued"
    started: float = 0.0
    stop: float = 0.0  # when its launcher stops its jobs and leaves
    claiming: bool = False  # its launcher is up and claims jobs
    ran: int = 0
    pool: NodePool = field(default_factory=lambda: NodePool(0))
    running: dict[int, tuple[tuple[int, ...], float]] = field(default_factory=dict)


@dataclass
class Figures:
    """What one strategy cost and gave (node-minutes, minutes). ``empty``: batch jobs that
    started and ran nothing; ``rebounds``: submissions within ten passes of a withdrawal."""

    label: str
    reserved: float = 0.0
    busy: float = 0.0
    finished_at: float = 0.0
    submitted: int = 0
    withdrawn: int = 0
    timeouts: int = 0
    failed: int = 0
    finished: int = 0
    waits: list[float] = field(default_factory=list)
    peak_nodes: int = 0
    empty: int = 0
    rebounds: int = 0
    left_queued: int = 0
    complete: bool = False  # every job ended before the horizon
    stuck: list[Shape] = field(default_factory=list)  # what still waited at the end

    @property
    def mean_wait(self) -> float:
        """Mean minutes from submission to start, over the batch jobs that started."""
        return sum(self.waits) / len(self.waits) if self.waits else 0.0


class Simulation:
    """The batch system, the launchers and the jobs; a strategy decides the submissions
    (``on_end``: a batch job ended; ``on_done``: every job has ended)."""

    def __init__(self, scenario: Scenario, work: Workload, bg: Background, label: str) -> None:
        self.scenario, self.machine, self.work, self.bg = scenario, scenario.machine, work, bg
        self.rng = random.Random(f"{label}-waits")
        self.now = 0.0
        self.events: list[tuple[float, int, str, Any]] = []
        self.order = itertools.count()
        # Waiting jobs by shape, shapes in Balsam's claim order (widest, then longest, first).
        self.keys = sorted(set(work.size), key=lambda k: (-k[0], -k[2], k[1]))
        index = {key: n for n, key in enumerate(self.keys)}
        self.job_class = [index[key] for key in work.size]
        self.waiting: list[deque[int]] = [deque() for _ in self.keys]
        self.runs = [0] * len(work.size)  # a job's run number: an end of an older run is stale
        self.cuts = [0] * len(work.size)
        self.active: dict[int, Batch] = {}
        self.held = 0
        self.ids = itertools.count(1)
        self.medians = {model.queue.name: model.median_wait for model in scenario.queues}
        self.figures = Figures(label)
        self.last_withdraw = -math.inf
        self.on_end: Callable[[Batch], None] = lambda batch: None
        self.on_done: Callable[[], None] = lambda: None

    def at(self, t: float, kind: str, what: Any = None) -> None:
        """Schedule ``_on_<kind>(what)`` at ``t``."""
        heapq.heappush(self.events, (t, next(self.order), kind, what))

    def run(self) -> Figures:
        """Play the events until every job and batch job has ended (or the horizon)."""
        for t, ids in self.work.bursts:
            self.at(t, "arrive", ids)
        self.at(self.bg.starts[1], "spell", 1)
        while self.events and not (self.all_done() and not self.active):
            self.now, _, kind, what = heapq.heappop(self.events)
            if self.now > self.scenario.horizon:
                break
            getattr(self, f"_on_{kind}")(what)
        self.figures.left_queued = sum(b.state == "queued" for b in self.active.values())
        self.figures.stuck, self.figures.complete = self.backlog(), self.all_done()
        return self.figures

    def all_done(self) -> bool:
        """Every job finished or failed."""
        return self.figures.finished + self.figures.failed == len(self.work.size)

    def backlog(self) -> list[Shape]:
        """The waiting jobs by shape (no running launcher holds them)."""
        pairs = zip(self.keys, self.waiting, strict=True)
        return [Shape(n, p, w, len(queue)) for (n, p, w), queue in pairs if queue]

    def _on_pass(self, step: Callable[[], None]) -> None:
        step()
        if not (self.all_done() and not self.active):
            self.at(self.now + self.scenario.period, "pass", step)

    def _on_spell(self, spell: int) -> None:
        if spell + 1 < len(self.bg.starts):
            self.at(self.bg.starts[spell + 1], "spell", spell + 1)
        self.try_start()

    def _on_arrive(self, ids: range) -> None:
        for j in ids:
            self.waiting[self.job_class[j]].append(j)
        self.fill_all()

    # ---- the scheduler --------------------------------------------------------------------

    def submit(self, queue: str, nodes: int, wall: float, consume_all: bool) -> None:
        """Queue a launcher batch job; its wait is drawn now."""
        median = self.medians[queue] * nodes**self.machine.wait_exponent
        eligible = self.now + self.rng.lognormvariate(math.log(median), self.machine.wait_sigma)
        batch = Batch(next(self.ids), queue, nodes, wall, self.now, eligible, consume_all)
        self.active[batch.bid] = batch
        self.figures.submitted += 1
        self.figures.rebounds += self.now - self.last_withdraw <= 10 * self.scenario.period
        self.at(eligible, "eligible")
        self.at(eligible + self.machine.drain_minutes, "eligible")

    def withdraw(self, bid: int) -> None:
        """Cancel a queued batch job (a running one is not withdrawn)."""
        batch = self.active.get(bid)
        if batch is not None and batch.state == "queued":
            batch.state = "withdrawn"
            del self.active[bid]
            self.figures.withdrawn += 1
            self.last_withdraw = self.now

    def _on_eligible(self, _: None) -> None:
        self.try_start()

    def try_start(self) -> None:
        """Start the queued batch jobs the machine lets start now, oldest first."""
        for batch in sorted(self.active.values(), key=lambda b: b.bid):
            if batch.state == "queued" and self._may_start(batch):
                self._start(batch)

    def _may_start(self, batch: Batch) -> bool:
        if batch.nodes + self.held > self.machine.nodes:
            return False
        if self.now >= batch.eligible + self.machine.drain_minutes:
            return True  # the scheduler has drained others' nodes for it
        if self.bg.free(self.now, self.held) < batch.nodes:
            return False
        if self.now >= batch.eligible:
            return True
        return self.bg.fits(self.now, self.held, batch.nodes, batch.wall)  # backfill

    def _start(self, batch: Batch) -> None:
        batch.state, batch.started, batch.pool = "running", self.now, NodePool(batch.nodes)
        limit = batch.wall - safety_margin_minutes(batch.wall)
        up = self.now + self.machine.startup_minutes
        # The launcher counts its limit from its own start and stops a grace before it; the
        # batch system ends the allocation at the wall time whatever the launcher does.
        batch.stop = min(
            self.now + batch.wall, up + limit - min(self.machine.grace_minutes, limit / 4)
        )
        self.held += batch.nodes
        self.figures.peak_nodes = max(self.figures.peak_nodes, self.held)
        self.figures.waits.append(self.now - batch.submitted)
        self.at(batch.stop, "stop", batch)
        self.at(up, "ready", batch)

    def _on_ready(self, batch: Batch) -> None:
        """The launcher is up: it claims, and leaves at once if nothing fits it."""
        if batch.state == "running":
            batch.claiming = True
            self.fill(batch)
            self._leave_if_idle(batch)

    def exit_batch(self, batch: Batch) -> None:
        """A running batch job ends (its launcher left, stopped or was cancelled)."""
        batch.state, batch.claiming = "ended", False
        self.figures.reserved += batch.nodes * (self.now - batch.started)
        self.figures.empty += batch.ran == 0
        self.held -= batch.nodes
        del self.active[batch.bid]
        self.on_end(batch)
        self.try_start()

    # ---- the launchers --------------------------------------------------------------------

    def fill_all(self) -> None:
        """Every launcher that is up takes what fits it."""
        for batch in sorted(self.active.values(), key=lambda b: b.bid):
            if batch.claiming:
                self.fill(batch)

    def fill(self, batch: Batch) -> None:
        """The launcher claims waiting jobs in claim order while they fit its nodes and the
        time it has left."""
        pool, left = batch.pool, batch.stop - self.now
        for (nodes, packing, wall), queue in zip(self.keys, self.waiting, strict=True):
            if not queue or wall > left or nodes > batch.nodes:
                continue
            while queue and pool.can_take(nodes, packing):
                j = queue.popleft()
                self.runs[j] += 1
                batch.running[j] = (pool.take(nodes, packing), self.now)
                batch.ran += 1
                if self.now + self.work.runtime[j] <= batch.stop:  # else the stop cuts it
                    self.at(self.now + self.work.runtime[j], "end", (batch, j, self.runs[j]))

    def _leave_if_idle(self, batch: Batch) -> None:
        # --consume-all: nothing runs and nothing it could run waits (fill took all that fits).
        if batch.consume_all and not batch.running:
            self.exit_batch(batch)

    def _on_end(self, what: tuple[Batch, int, int]) -> None:
        batch, j, run = what
        if self.runs[j] != run or j not in batch.running:
            return  # cut before its end
        held, _ = batch.running.pop(j)
        batch.pool.give(held, self.work.size[j][1])
        self.figures.busy += self._weight(j) * self.work.runtime[j]
        self.figures.finished += 1
        self.figures.finished_at = self.now
        self.fill(batch)
        self._leave_if_idle(batch)
        if self.all_done():
            self.on_done()

    def _on_stop(self, batch: Batch) -> None:
        """The launcher's time is up: what still runs is cut (a timeout) and waits again."""
        if batch.state != "running":
            return
        for j, (_, began) in sorted(batch.running.items()):
            self.runs[j] += 1
            self.cuts[j] += 1
            self.figures.timeouts += 1
            self.figures.busy += self._weight(j) * (self.now - began)
            if self.cuts[j] > self.scenario.campaign.max_timeout_retries:
                self.figures.failed += 1
            else:  # created earlier than what waits, so claimed first again
                self.waiting[self.job_class[j]].appendleft(j)
        batch.running.clear()
        self.exit_batch(batch)
        self.fill_all()
        if self.all_done():
            self.on_done()

    def _weight(self, j: int) -> float:
        nodes, packing, _ = self.work.size[j]
        return nodes / packing

    def policy_input(self, use_backfill: bool) -> PolicyInput:
        """The service's view: the backlog by shape, the launchers, the queues, backfill."""
        launchers = [
            Launcher(b.bid, b.queue, b.nodes, b.wall, b.state == "running", b.claiming)
            for b in self.active.values()
        ]
        queues = [model.queue for model in self.scenario.queues]
        backfill = {
            q.name: self.bg.windows(self.now, self.held, q.name, q.max_wall_time_minutes)
            for q in queues
            if use_backfill
        }
        return PolicyInput(
            self.backlog(), launchers, queues, self.scenario.wall_time, backfill=backfill
        )


def run_elastic(scenario: Scenario, work: Workload, bg: Background, backfill: bool) -> Figures:
    """The service: a pass every period applies what ``plan`` decides."""
    sim = Simulation(scenario, work, bg, "elastic+backfill" if backfill else "elastic")

    def service_pass() -> None:
        decided = plan(sim.policy_input(backfill))
        for withdraw in decided.withdraw:
            sim.withdraw(withdraw.batch_id)
        for submit in decided.submit:
            sim.submit(submit.queue, submit.num_nodes, submit.wall_time_minutes, True)
        sim.try_start()

    sim.at(0.0, "pass", service_pass)
    return sim.run()


def run_static(
    scenario: Scenario, work: Workload, bg: Background, count: int, nodes: int
) -> Figures:
    """``count`` launchers of ``nodes`` in the first queue for its longest wall time, submitted
    again when one ends, all cancelled when the campaign is done."""
    sim = Simulation(scenario, work, bg, f"static {count}x{nodes}")
    queue = scenario.queues[0].queue
    wall, nodes = min(queue.max_wall_time_minutes, scenario.horizon), min(nodes, queue.max_nodes)

    def again(batch: Batch) -> None:
        if not sim.all_done():
            sim.submit(queue.name, nodes, wall, False)

    def cancel() -> None:
        for batch in sorted(sim.active.values(), key=lambda b: b.bid):
            if batch.state == "queued":
                sim.withdraw(batch.bid)
            else:
                sim.exit_batch(batch)

    sim.on_end, sim.on_done = again, cancel
    for _ in range(count):
        sim.submit(queue.name, nodes, wall, False)
    sim.try_start()
    return sim.run()


def compare(
    scenario: Scenario, seed: int, backfill: Sequence[bool], static: Sequence[tuple[int, int]]
) -> tuple[Workload, list[Figures]]:
    """Every strategy on the same seeded campaign and background load."""
    work = make_workload(scenario.campaign, random.Random(f"{seed}-campaign"))
    bg = Background(scenario.machine, random.Random(f"{seed}-background"), scenario.horizon)
    rows = [run_elastic(scenario, work, bg, on) for on in backfill]
    return work, rows + [run_static(scenario, work, bg, k, n) for k, n in static]


HEADER = (
    f"{'strategy':<17}{'reserved':>10}{'busy':>9}{'util':>7}{'done at':>9}{'submit':>8}"
    f"{'withdrw':>8}{'timeout':>8}{'failed':>7}{'wait':>7}{'peak':>6}{'empty':>6}{'rebnd':>6}\n"
    f"{'':<17}{'node-h':>10}{'node-h':>9}{'%':>7}{'h':>9}{'':>31}{'min':>7}{'nodes':>6}"
)


def row(f: Figures) -> str:
    """One strategy's line of the table."""
    util = 100 * f.busy / f.reserved if f.reserved else 0.0
    done = f"{f.finished_at / 60:>9.1f}" if f.complete else f"{'never':>9}"
    return (
        f"{f.label:<17}{f.reserved / 60:>10,.0f}{f.busy / 60:>9,.0f}{util:>7.1f}"
        f"{done}{f.submitted:>8}{f.withdrawn:>8}{f.timeouts:>8}"
        f"{f.failed:>7}{f.mean_wait:>7.1f}{f.peak_nodes:>6}{f.empty:>6}{f.rebounds:>6}"
    )


def unfinished(figures: Figures, jobs: int, horizon: float) -> str | None:
    """What a strategy left undone at the horizon, or None."""
    if figures.complete and not figures.left_queued:
        return None
    waiting = "; ".join(shape.describe() for shape in figures.stuck[:4])
    return (
        f"  {figures.label}: NOT FINISHED at {horizon / 1440:g} days: "
        f"{jobs - figures.finished - figures.failed:,} job(s) not done ({waiting}); "
        f"{figures.left_queued} batch job(s) still queued"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison table for the options given."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=CampaignModel.jobs)
    parser.add_argument("--bursts", type=int, default=CampaignModel.bursts)
    parser.add_argument("--nodes", type=int, default=MachineModel.nodes, help="machine size")
    parser.add_argument("--period", type=float, default=0.5, help="service pass, minutes")
    parser.add_argument("--wall-time", type=float, default=60.0, help="service launcher wall")
    parser.add_argument("--backfill", choices=("off", "on", "both"), default="both")
    parser.add_argument("--static", default="1x128,4x32,2x128", help="KxN,... static runs")
    parser.add_argument("--startup", type=float, default=MachineModel.startup_minutes)
    parser.add_argument("--grace", type=float, default=GRACE_MINUTES, help="kill grace, minutes")
    parser.add_argument("--quick", action="store_true", help="5,000 jobs")
    args = parser.parse_args(argv)
    jobs = 5_000 if args.quick else args.jobs
    machine = MachineModel(nodes=args.nodes, startup_minutes=args.startup, grace_minutes=args.grace)
    campaign = replace(CampaignModel(), jobs=jobs, bursts=args.bursts)
    scenario = Scenario(machine, campaign, wall_time=args.wall_time, period=args.period)
    static = [part.lower().split("x") for part in args.static.split(",") if part]
    backfill = {"off": [False], "on": [True], "both": [False, True]}[args.backfill]
    began = time.perf_counter()
    work, rows = compare(scenario, args.seed, backfill, [(int(k), int(n)) for k, n in static])
    took = time.perf_counter() - began
    print(
        f"{jobs:,} jobs in {campaign.bursts} bursts over {campaign.span_minutes:g} min, "
        f"{work.work() / 60:,.0f} node-hours of work; {machine.nodes} nodes, others hold "
        f"{machine.bg_low:.0%}-{machine.bg_high:.0%}; seed {args.seed}\n{HEADER}"
    )
    for figures in rows:
        print(row(figures))
    for note in [unfinished(figures, jobs, scenario.horizon) for figures in rows]:
        if note:
            print(note)
    print(f"simulated in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

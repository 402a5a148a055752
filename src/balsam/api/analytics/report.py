"""A campaign report: every table from one read of the event log (:func:`campaign_report`).

Node utilization is node-weighted: in each interval, the time average of the nodes running
jobs use (each job ``num_nodes / node_packing_count``) divided by the time average of the
nodes held by batch jobs recorded ``running`` then. Batch job states are recorded when the
scheduler is asked (``balsam ls queues``, each pass of the service), so a held interval is
known to about that poll. Where no batch job was recorded running (a ``balsam launcher``
started by hand, a local run) utilization is None and only busy nodes are shown, unless
``nodes`` gives the nodes held throughout. See docs/report.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from balsam.api.analytics.collect import (
    PAGE_SIZE,
    Aggregates,
    epoch,
    held_intervals,
    job_pages,
)
from balsam.api.analytics.tables import (
    AppErrorRow,
    ErrorCauseRow,
    StateTimeRow,
    Table,
    ThroughputRow,
    UtilizationRow,
    WorkflowRow,
    WorkflowStateRow,
)
from balsam.api.analytics.timeline import MAX_BINS, Bin, Timeline
from balsam.backends.base import Backend
from balsam.domain.states import ACTIVE_STATES, JobState
from balsam.errors import ValidationError
from balsam.schemas.queries import Clause, clause_from_kwargs

S = JobState
#: Below this many node-seconds held, an interval counts as holding none (float dust).
HELD_EPSILON = 1e-6


@dataclass(frozen=True)
class CampaignReport:
    """A campaign's analytics: figures for the whole window, and the tables behind the plots.

    The window runs from ``since`` (or the first event) to the last event (or now, while jobs
    are running). Job counts (``state_counts``, ``workflows``) are where jobs stand now.
    """

    workflow: str | None
    since: datetime | None
    start: datetime | None
    end: datetime | None
    interval_seconds: float
    jobs: int
    events: int
    #: Runs that ended (or are going) in the window.
    runs: int
    state_counts: dict[str, int]
    #: Where held nodes come from: "batch jobs", "N nodes (given)", or "none recorded".
    capacity: str
    #: Batch jobs that ended without being recorded running (their nodes are not counted).
    unseen_batch_jobs: int
    busy_node_hours: float
    held_node_hours: float
    #: Busy over held node-hours, over the intervals in which nodes were held (None: never).
    overall_utilization: float | None
    throughput: Table[ThroughputRow]
    utilization: Table[UtilizationRow]
    state_times: Table[StateTimeRow]
    app_errors: Table[AppErrorRow]
    error_causes: Table[ErrorCauseRow]
    workflows: Table[WorkflowRow]
    workflow_states: Table[WorkflowStateRow]

    def tables(self) -> dict[str, Table[Any]]:
        """Every table by name."""
        return {
            t.name: t
            for t in (
                self.throughput,
                self.utilization,
                self.state_times,
                self.app_errors,
                self.error_causes,
                self.workflows,
                self.workflow_states,
            )
        }


def campaign_report(
    backend: Backend | None = None,
    *,
    workflow: str | None = None,
    since: datetime | None = None,
    interval: float | timedelta | None = None,
    nodes: int | None = None,
    now: datetime | None = None,
    page_size: int = PAGE_SIZE,
) -> CampaignReport:
    """Read the event log of ``workflow``'s jobs (default: every job) once and build the report.

    ``since``: only what happened from then on goes into the time-based tables (throughput,
    utilization, time in state, errors); ``interval``: the bin width (seconds or a timedelta;
    default: chosen to give at most MAX_BINS (120) bins); ``nodes``: nodes held throughout, for
    launchers that ran outside any recorded batch job; ``backend``: default, the API's.
    """
    if backend is None:
        from balsam.api.context import get_backend

        backend = get_backend()
    width = interval.total_seconds() if isinstance(interval, timedelta) else interval
    if width is not None and width <= 0:
        raise ValidationError(f"the interval must be positive, not {width:g} s")
    if nodes is not None and nodes <= 0:
        raise ValidationError(f"nodes must be a positive number, not {nodes}")
    limit = 20_000 if width is not None else MAX_BINS
    timeline = Timeline(tuple(_COUNT_SERIES), ("running", "busy", "held"), limit, width)
    agg = Aggregates(timeline, None if since is None else epoch(since))
    clauses: list[Clause] = [] if workflow is None else [clause_from_kwargs({"workflow": workflow})]
    try:
        for jobs, events in job_pages(backend, clauses, page_size):
            agg.feed(jobs, events)
        return _build(backend, agg, workflow, since, nodes, now or datetime.now(UTC))
    except ValueError as exc:  # a fixed interval too fine for the span
        raise ValidationError(f"interval too short: {exc}; choose a longer one") from None


_COUNT_SERIES = ("finished", "run_errors", "run_timeouts", "failed")


def _build(
    backend: Backend,
    agg: Aggregates,
    workflow: str | None,
    since: datetime | None,
    nodes: int | None,
    now: datetime,
) -> CampaignReport:
    start, end = _window(agg, now.timestamp())
    capacity, unseen = "none recorded", 0
    bins: list[Bin] = []
    if start is not None and end is not None:
        for run_start, weight in agg.open_runs:
            agg.add_run(run_start, max(run_start, end), weight)
        capacity, unseen = _add_capacity(backend, agg.timeline, start, end, nodes)
        bins = agg.timeline.bins(start, end)
    busy = sum(b.integrals["busy"] for b in bins)
    held = sum(b.integrals["held"] for b in bins)
    busy_held = sum(b.integrals["busy"] for b in bins if b.integrals["held"] > HELD_EPSILON)
    states = _state_counts(agg)
    return CampaignReport(
        workflow=workflow,
        since=since,
        start=None if start is None else _utc(start),
        end=None if end is None else _utc(end),
        interval_seconds=agg.timeline.width,
        jobs=agg.jobs,
        events=agg.events,
        runs=agg.runs,
        state_counts=states,
        capacity=capacity,
        unseen_batch_jobs=unseen,
        busy_node_hours=busy / 3600,
        held_node_hours=held / 3600,
        overall_utilization=busy_held / held if held > HELD_EPSILON else None,
        throughput=_throughput(bins),
        utilization=_utilization(bins),
        state_times=_state_times(agg),
        app_errors=_app_errors(agg),
        error_causes=_error_causes(agg),
        workflows=_workflows(agg),
        workflow_states=Table(
            "workflow_states",
            "jobs per state per workflow, now",
            tuple(
                WorkflowStateRow(wf, state, n)
                for (wf, state), n in sorted(agg.workflow_states.items(), key=_state_order)
            ),
        ),
    )


def _window(agg: Aggregates, now: float) -> tuple[float | None, float | None]:
    """The report's time window: since (or the first event) to the last event, or to now
    while runs are going."""
    start = agg.since if agg.since is not None else agg.first
    end = agg.last
    if agg.open_runs:
        end = now if end is None else max(end, now)
    if start is None or end is None:
        return None, None
    return start, max(start, end)


def _add_capacity(
    backend: Backend, timeline: Timeline, start: float, end: float, nodes: int | None
) -> tuple[str, int]:
    """Feed the held nodes into ``timeline``; returns where they came from and how many
    batch jobs were never seen running."""
    if nodes is not None:
        timeline.interval("held", start, end, nodes)
        return f"{nodes} nodes (given)", 0
    intervals, unseen = held_intervals(backend, end)
    for held_start, held_end, count in intervals:
        lo, hi = max(held_start, start), min(held_end, end)
        if hi > lo:
            timeline.interval("held", lo, hi, count)
    return ("batch jobs" if intervals else "none recorded"), unseen


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _throughput(bins: list[Bin]) -> Table[ThroughputRow]:
    rows = []
    total = 0
    for b in bins:
        finished = round(b.counts["finished"])
        total += finished
        rows.append(
            ThroughputRow(
                start=_utc(b.start),
                end=_utc(b.end),
                finished=finished,
                cumulative_finished=total,
                run_errors=round(b.counts["run_errors"]),
                run_timeouts=round(b.counts["run_timeouts"]),
                failed=round(b.counts["failed"]),
            )
        )
    return Table("throughput", "jobs that ended per interval", tuple(rows))


def _utilization(bins: list[Bin]) -> Table[UtilizationRow]:
    rows = tuple(
        UtilizationRow(
            start=_utc(b.start),
            end=_utc(b.end),
            running_jobs=_clean(b.averages["running"]),
            busy_nodes=_clean(b.averages["busy"]),
            held_nodes=_clean(b.averages["held"]),
            utilization=(
                b.integrals["busy"] / b.integrals["held"]
                if b.integrals["held"] > HELD_EPSILON
                else None
            ),
        )
        for b in bins
    )
    return Table("utilization", "time averages of runs, busy and held nodes", rows)


def _clean(value: float) -> float:
    """Round away float dust (a level back to zero after many +w/-w is 1e-12, not 0)."""
    return round(value, 9) + 0.0


def _state_times(agg: Aggregates) -> Table[StateTimeRow]:
    rows = []
    for state in [*(s.value for s in JobState), *sorted(set(agg.stays) - set(JobState))]:
        found = agg.stays.get(state)
        stats = None if found is None else found.stats()
        if stats is not None:
            rows.append(
                StateTimeRow(state, stats.count, stats.mean, stats.median, stats.p90, stats.total)
            )
    return Table("state_times", "how long jobs stayed in each state (seconds)", tuple(rows))


def _app_errors(agg: Aggregates) -> Table[AppErrorRow]:
    rows = sorted(
        (
            AppErrorRow(app, e.run_errors, e.run_timeouts, e.failed)
            for app, e in agg.app_errors.items()
        ),
        key=lambda r: (-(r.run_errors + r.run_timeouts + r.failed), r.app),
    )
    rows = [r for r in rows if r.run_errors or r.run_timeouts or r.failed]
    return Table("app_errors", "run errors, timeouts and failures per app", tuple(rows))


def _error_causes(agg: Aggregates) -> Table[ErrorCauseRow]:
    rows = sorted(
        (ErrorCauseRow(cause, jobs, errors) for cause, (jobs, errors) in agg.causes.items()),
        key=lambda r: (-r.jobs, r.cause),
    )
    return Table("error_causes", "jobs with run errors, by what the last run recorded", tuple(rows))


def _workflows(agg: Aggregates) -> Table[WorkflowRow]:
    per: dict[str, dict[str, int]] = {}
    for (wf, state), n in agg.workflow_states.items():
        per.setdefault(wf, {})[state] = n
    rows = []
    for wf in sorted(per):
        counts = per[wf]
        total = sum(counts.values())
        finished = counts.get(S.JOB_FINISHED.value, 0)
        running = counts.get(S.RUNNING.value, 0)
        active = sum(counts.get(s.value, 0) for s in ACTIVE_STATES)
        rows.append(
            WorkflowRow(
                workflow=wf,
                total=total,
                finished=finished,
                failed=counts.get(S.FAILED.value, 0),
                killed=counts.get(S.USER_KILLED.value, 0),
                running=running,
                waiting=active - running,
                fraction_done=finished / total if total else 0.0,
            )
        )
    return Table("workflows", "where each workflow's jobs stand now", tuple(rows))


_ORDER = {s.value: i for i, s in enumerate(JobState)}


def _state_order(item: tuple[tuple[str, str], int]) -> tuple[str, int]:
    (wf, state), _ = item
    return wf, _ORDER.get(state, len(_ORDER))


def _state_counts(agg: Aggregates) -> dict[str, int]:
    """Jobs per state now, in the state machine's order."""
    totals: dict[str, int] = {}
    for (_wf, state), n in agg.workflow_states.items():
        totals[state] = totals.get(state, 0) + n
    return {s: totals[s] for s in sorted(totals, key=lambda s: _ORDER.get(s, len(_ORDER)))}

"""Read a campaign's event log once, page by page, and fold it into a report's aggregates.

Jobs are read in pages of ``page_size`` by job id (keyset paging: ``job_id > last``, so
each page costs the same however deep), and the events of each page's jobs in one call; only
aggregates outlive a page (see :mod:`.timeline` and :mod:`.durations`), so memory is bounded
by the page, not by the campaign. Only Backend calls are used, so this works the same on
SQLite, PostgreSQL and through ``balsam server``. The read is not one snapshot: a campaign
that runs meanwhile may move between pages (the report is as of its reading).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from balsam.api.analytics.durations import Durations
from balsam.api.analytics.timeline import Timeline
from balsam.backends.base import Backend
from balsam.domain.batchjobs import BatchJobState
from balsam.domain.states import JobState
from balsam.schemas.jobs import EventOut, JobOut
from balsam.schemas.queries import Clause, JobQuery, clause_from_kwargs

S = JobState
#: Jobs read per page (each page: one jobs query, one events query).
PAGE_SIZE = 2000
#: Counted per bin of the throughput table: the state a job entered -> the series.
COUNTED = {
    S.JOB_FINISHED.value: "finished",
    S.RUN_ERROR.value: "run_errors",
    S.RUN_TIMEOUT.value: "run_timeouts",
    S.FAILED.value: "failed",
}
#: Levels integrated per bin: runs going, nodes they use, nodes batch jobs hold.
LEVELS = ("running", "busy", "held")
#: Batch job states in which the allocation may have run (the others never started).
MAY_HAVE_RUN = frozenset(
    {
        BatchJobState.RUNNING,
        BatchJobState.FINISHED,
        BatchJobState.FAILED,
        BatchJobState.CANCELLED,
        BatchJobState.GONE,
    }
)


def epoch(when: datetime) -> float:
    """Seconds since the epoch (a naive time is UTC, as stored)."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def job_pages(
    backend: Backend, clauses: list[Clause], page_size: int = PAGE_SIZE
) -> Iterator[tuple[list[JobOut], list[EventOut]]]:
    """The jobs ``clauses`` select, ``page_size`` at a time by job id, each page with the
    events of its jobs (oldest first)."""
    last: str | None = None
    while True:
        paged = list(clauses)
        if last is not None:
            paged.append(clause_from_kwargs({"job_id__gt": last}))
        jobs = backend.query_jobs(JobQuery(clauses=paged, order_by=["job_id"], limit=page_size))
        if not jobs:
            return
        upto = clause_from_kwargs({"job_id__lte": jobs[-1].job_id})
        yield jobs, backend.events(JobQuery(clauses=[*paged, upto]))
        if len(jobs) < page_size:
            return
        last = jobs[-1].job_id


def node_weight(job: JobOut) -> float:
    """The nodes one run of ``job`` takes: a job packed k to a node takes 1/k of one."""
    return job.num_nodes / max(1, job.node_packing_count)


def error_cause(job: JobOut) -> str:
    """What the job's last run recorded about how it ended (for the error histogram)."""
    outcome = job.function_outcome or {}
    exception = outcome.get("exception")
    if isinstance(exception, dict) and exception.get("type"):
        return str(exception["type"])
    if job.return_code is None:
        return "did not start"
    if job.return_code == 0:
        return "not recorded (a later run succeeded)"
    return f"exit code {job.return_code}"


@dataclass
class AppErrors:
    """Entries into the error states of one app's jobs."""

    run_errors: int = 0
    run_timeouts: int = 0
    failed: int = 0


@dataclass
class Aggregates:
    """Everything a report keeps from the pages it has read."""

    timeline: Timeline
    since: float | None
    jobs: int = 0
    events: int = 0
    runs: int = 0
    first: float | None = None
    last: float | None = None
    stays: defaultdict[str, Durations] = field(default_factory=lambda: defaultdict(Durations))
    app_errors: defaultdict[str, AppErrors] = field(default_factory=lambda: defaultdict(AppErrors))
    #: cause -> [jobs, run errors]
    causes: defaultdict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    workflow_states: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Runs still going: (start, nodes), closed at the window's end.
    open_runs: list[tuple[float, float]] = field(default_factory=list)

    def in_window(self, when: float) -> bool:
        """Whether ``when`` is at or after ``since``."""
        return self.since is None or when >= self.since

    def seen(self, when: float) -> None:
        """Widen the window to hold ``when`` (times before ``since`` are outside it)."""
        if self.in_window(when):
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)

    def feed(self, jobs: list[JobOut], events: list[EventOut]) -> None:
        """Fold one page of jobs and their events in."""
        by_job: defaultdict[str, list[EventOut]] = defaultdict(list)
        for event in events:
            by_job[event.job_id].append(event)
        self.events += len(events)
        for job in jobs:
            self.jobs += 1
            self.workflow_states[(job.workflow, job.state.value)] += 1
            self.feed_job(job, by_job.get(job.job_id, []))

    def feed_job(self, job: JobOut, events: list[EventOut]) -> None:
        """Fold one job's history in: its stays, its runs, its ends and errors."""
        weight = node_weight(job)
        entered: tuple[str, float] | None = None
        run_start: float | None = None
        errors = 0
        for event in events:
            if event.from_state == event.to_state:
                continue  # a note, not a state change
            when = epoch(event.timestamp)
            self.seen(when)
            if entered is not None and self.in_window(when):
                self.stays[entered[0]].add(when - entered[1])
            entered = (event.to_state, when)
            if run_start is not None and event.from_state == S.RUNNING.value:
                self.add_run(run_start, when, weight)
                run_start = None
            if event.to_state == S.RUNNING.value:
                run_start = when
            if self.in_window(when):
                errors += self.count_end(job, event.to_state, when)
        if run_start is not None:
            self.open_runs.append((run_start, weight))
        if errors:
            cause = self.causes[error_cause(job)]
            cause[0] += 1
            cause[1] += errors

    def add_run(self, start: float, end: float, weight: float) -> None:
        """One run from ``start`` to ``end`` on ``weight`` nodes (clipped to the window)."""
        if not self.in_window(end):
            return
        start = start if self.since is None else max(start, self.since)
        self.runs += 1
        self.timeline.interval("running", start, end, 1)
        self.timeline.interval("busy", start, end, weight)

    def count_end(self, job: JobOut, state: str, when: float) -> int:
        """Count an entry into an ending state; returns 1 for a RUN_ERROR, else 0."""
        series = COUNTED.get(state)
        if series is None:
            return 0
        self.timeline.count(series, when)
        errors = self.app_errors[job.application]
        if state == S.RUN_ERROR.value:
            errors.run_errors += 1
            return 1
        if state == S.RUN_TIMEOUT.value:
            errors.run_timeouts += 1
        elif state == S.FAILED.value:
            errors.failed += 1
        return 0


def held_intervals(backend: Backend, end: float) -> tuple[list[tuple[float, float, int]], int]:
    """``([(start, end, nodes)], unseen)``: when each batch job was recorded running (from
    entering ``running`` to entering any later state; still running: until ``end``), and how
    many batch jobs ended without ever being recorded running (their nodes are unknown)."""
    found: list[tuple[float, float, int]] = []
    unseen = 0
    for row in backend.list_batch_jobs():
        if row.state not in MAY_HAVE_RUN:
            continue
        start: float | None = None
        stop: float | None = None
        for event in backend.batch_job_history(row.id):
            if start is None and event.to_state == BatchJobState.RUNNING.value:
                start = epoch(event.timestamp)
            elif start is not None and event.to_state != BatchJobState.RUNNING.value:
                stop = epoch(event.timestamp)
                break
        if start is None:
            unseen += 1
            continue
        found.append((start, end if stop is None else stop, row.num_nodes))
    return found, unseen

"""Balsam 0.5's reports over a campaign's history: ``balsam.core.models.process_job_times``,
``throughput_report``, ``utilization_report`` and ``error_report``.

They return what 0.5 returned, as plain lists where 0.5 gave numpy arrays (numpy is not a
dependency; ``matplotlib``'s ``plot`` and ``numpy.asarray`` take either). Times are naive
UTC datetimes, as 0.5's history text held them. The history is read in one backend call.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import TYPE_CHECKING

from balsam.api.context import get_backend
from balsam.schemas.queries import JobQuery

if TYPE_CHECKING:
    from balsam.api.query import JobQuerySet

#: ``{state: [when each job entered it]}`` (one entry per entry into the state).
TimeData = dict[str, list[datetime]]
#: Run ends, counted by utilization_report.
RUN_ENDS = ("RUN_DONE", "RUN_ERROR", "RUN_TIMEOUT")


def process_job_times(qs: JobQuerySet | None = None) -> TimeData:
    """When the jobs of ``qs`` (default: all) entered each state, by state."""
    query = JobQuery() if qs is None else qs.to_query()
    found: defaultdict[str, list[datetime]] = defaultdict(list)
    for event in get_backend().events(query):
        found[event.to_state].append(event.timestamp.astimezone(UTC).replace(tzinfo=None))
    return found


def utilization_report(time_data: TimeData | None = None) -> tuple[list[datetime], list[int]]:
    """``(times, running)``: at each start or end of a run, how many runs were going."""
    data = process_job_times() if time_data is None else time_data
    steps: Counter[datetime] = Counter(data.get("RUNNING", []))
    for state in RUN_ENDS:
        steps.subtract(data.get(state, []))
    times = sorted(steps)
    return times, list(accumulate(steps[t] for t in times))


def throughput_report(time_data: TimeData | None = None) -> tuple[list[datetime], list[int]]:
    """``(times, done)``: at each run's end (RUN_DONE), how many runs had ended so far."""
    data = process_job_times() if time_data is None else time_data
    done = Counter(data.get("RUN_DONE", []))
    times = sorted(done)
    return times, list(accumulate(done[t] for t in times))


def error_report(
    time_data: TimeData | None = None,
) -> tuple[list[datetime], list[int]] | None:
    """``(bin_edges, counts)``: RUN_ERRORs per minute from the first one (None without any);
    one more edge than counts, as numpy's histogram gives them."""
    data = process_job_times() if time_data is None else time_data
    errors = data.get("RUN_ERROR", [])
    if not errors:
        return None
    first = min(errors)
    seconds = [(t - first).total_seconds() for t in errors]
    # numpy.histogram over 0.5's minute edges (the last bin holds its right edge too).
    bins = max(1, math.ceil(max(seconds) / 60))
    counts = [0] * bins
    for s in seconds:
        counts[min(int(s // 60), bins - 1)] += 1
    edges = [first + timedelta(minutes=i) for i in range(bins + 1)]
    return edges, counts

"""Balsam 0.x's models module: ``from balsam.core.models import BalsamJob, ApplicationDefinition``.

The classes are those of :mod:`balsam.api` under their old names, so
``BalsamJob.objects.filter(...)``, ``job.save()`` and ``BalsamJob.DoesNotExist`` behave as in
the old Django-based Balsam, on whichever Backend is current.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from balsam.api.apps import App
from balsam.api.compat import HISTORY_TIME_FORMAT
from balsam.api.jobs import Job
from balsam.api.reports import (
    error_report,
    process_job_times,
    throughput_report,
    utilization_report,
)
from balsam.domain.states import (
    ACTIVE_STATES,
    PROCESSING_STATES,
    RUNNABLE_STATES,
    TERMINAL_STATES,
    JobState,
)
from balsam.errors import DependencyError, NotFound, ValidationError

#: Balsam 0.x's name for a job.
BalsamJob = Job
#: Balsam 0.x's name for an app.
ApplicationDefinition = App
#: Every state name, in the order a job walks them (Balsam 0.x's ``STATES``).
STATES: list[str] = [s.value for s in JobState]
#: 0.5's names: the end states, and the states a launcher's step after a run waits in.
END_STATES: list[str] = sorted(s.value for s in TERMINAL_STATES)
PROCESSABLE_STATES: list[str] = [
    s.value
    for s in JobState
    if s in PROCESSING_STATES
    or s in (JobState.CREATED, JobState.AWAITING_PARENTS)
    or s in (JobState.READY, JobState.STAGED_IN)
]
#: 0.5's time format in history lines, and the pattern that reads them back.
TIME_FMT = HISTORY_TIME_FORMAT
STATE_TIME_PATTERN = re.compile(r"^\[(\d+-\d+-\d{4}\s+\d+:\d+:\d+\.\d+)\s+(\w+)\s*\]", re.MULTILINE)


def get_time_string() -> str:
    """Now, in UTC, as 0.5 wrote times into a job's history."""
    return datetime.now(UTC).strftime(TIME_FMT)


def from_time_string(text: str) -> datetime:
    """A time written by :func:`get_time_string` (naive, UTC)."""
    return datetime.strptime(text, TIME_FMT)


def history_line(state: str = "CREATED", message: str = "") -> str:
    """A line of 0.5's ``state_history`` text: ``[time STATE] message``."""
    return f"[{get_time_string()} {state}] {message}".rstrip()


def validate_state(value: str) -> None:
    """InvalidStateError unless ``value`` names a job state (0.5 took exact names only)."""
    if value not in STATES:
        raise InvalidStateError(f"{value} is not a valid job state")


#: 0.5's exceptions, as the errors raised here for the same mistakes.
InvalidStateError = ValidationError
InvalidParentsError = DependencyError
NoApplication = NotFound

__all__ = [
    "ACTIVE_STATES",
    "END_STATES",
    "PROCESSABLE_STATES",
    "RUNNABLE_STATES",
    "STATES",
    "STATE_TIME_PATTERN",
    "TERMINAL_STATES",
    "TIME_FMT",
    "ApplicationDefinition",
    "BalsamJob",
    "InvalidParentsError",
    "InvalidStateError",
    "JobState",
    "NoApplication",
    "error_report",
    "from_time_string",
    "get_time_string",
    "history_line",
    "process_job_times",
    "throughput_report",
    "utilization_report",
    "validate_state",
]

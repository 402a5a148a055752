"""Balsam 0.x's models module: ``from balsam.core.models import BalsamJob, ApplicationDefinition``.

The classes are those of :mod:`balsam.api` under their old names, so
``BalsamJob.objects.filter(...)``, ``job.save()`` and ``BalsamJob.DoesNotExist`` behave as in
the old Django-based Balsam, on whichever Backend is current.
"""

from __future__ import annotations

from balsam.api.apps import App
from balsam.api.jobs import Job
from balsam.api.reports import (
    error_report,
    process_job_times,
    throughput_report,
    utilization_report,
)
from balsam.domain.states import (
    ACTIVE_STATES,
    RUNNABLE_STATES,
    TERMINAL_STATES,
    JobState,
)

#: Balsam 0.x's name for a job.
BalsamJob = Job
#: Balsam 0.x's name for an app.
ApplicationDefinition = App
#: Every state name, in the order a job walks them (Balsam 0.x's ``STATES``).
STATES: list[str] = [s.value for s in JobState]

__all__ = [
    "ACTIVE_STATES",
    "RUNNABLE_STATES",
    "STATES",
    "TERMINAL_STATES",
    "ApplicationDefinition",
    "BalsamJob",
    "JobState",
    "error_report",
    "process_job_times",
    "throughput_report",
    "utilization_report",
]

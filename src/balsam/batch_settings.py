"""The site's batch queues, projects and service: what launchers may be submitted to.

In ``settings.yml``::

    projects: [MyProject]
    queues:
      debug: {max_nodes: 8, max_wall_time_minutes: 60, max_queued_jobs: 1}
      prod: {min_nodes: 16, max_nodes: 512, max_wall_time_minutes: 720}
    service:
      queues: [debug]
      job_mode: mpi

``balsam submit-launch`` refuses, with one line and before anything is written or submitted,
a project or queue that the site does not list (when it lists any), and a node count or wall
time outside the queue's limits (:func:`launch_problem`). The service (``balsam service``)
submits only within these limits; see :mod:`balsam.site.elastic` for how it sizes launchers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from balsam.platform.schedulers.base import MAX_NODES, MAX_WALL_TIME_MINUTES, format_minutes
from balsam.settings_file import SETTINGS_CONFIG, SettingText

#: The most launchers the service keeps queued in one queue.
MAX_QUEUED_JOBS = 1_000
#: Longest pause the service takes between passes, or after a refused submission.
MAX_SERVICE_SECONDS = 24 * 3600.0


class QueueSettings(BaseModel):
    """One batch queue (a Slurm partition, a PBS or LSF queue) and its limits.

    ``max_queued_jobs`` bounds the launchers the service keeps waiting in this queue
    (``balsam submit-launch`` by hand is not bounded by it: the scheduler has its own limit).
    """

    model_config = SETTINGS_CONFIG

    min_nodes: int = Field(default=1, ge=1, le=MAX_NODES)
    max_nodes: int = Field(default=MAX_NODES, ge=1, le=MAX_NODES)
    max_wall_time_minutes: float = Field(default=MAX_WALL_TIME_MINUTES, gt=0)
    max_queued_jobs: int = Field(default=1, ge=0, le=MAX_QUEUED_JOBS)

    @model_validator(mode="after")
    def _limits_in_order(self) -> QueueSettings:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"min_nodes ({self.min_nodes}) is above max_nodes ({self.max_nodes})")
        if self.max_wall_time_minutes > MAX_WALL_TIME_MINUTES:
            raise ValueError(f"max_wall_time_minutes must be at most {MAX_WALL_TIME_MINUTES:g}")
        return self


class ServiceSettings(BaseModel):
    """How ``balsam service`` keeps launchers queued for the work in the database.

    ``queues``: where it may submit, in order of preference (empty: every queue the site
    lists). ``project``: what it charges (empty: the site's first project). Each launcher asks
    for ``wall_time_minutes`` (cut to the queue's limit, and raised to fit the longest job
    waiting) and runs in ``job_mode``. ``period_seconds`` is the pause between passes; a
    scheduler that refuses a submission is left alone for ``submit_backoff_seconds``, doubled
    after each refusal in a row up to ``max_backoff_seconds``. ``use_backfill`` sizes
    launchers to the nodes the scheduler says are free now, when it can tell.
    ``lock_seconds`` is how long the service's lock in the database outlives its last renewal
    before another service may take over. ``processing``: the service keeps a processing
    launcher on its host that does every job's staging, preprocessing, postprocessing and
    handlers, and compute launchers only run jobs while the service is alive.
    """

    model_config = SETTINGS_CONFIG

    project: SettingText = ""
    queues: list[SettingText] = Field(default_factory=list, max_length=1_000)
    job_mode: Literal["serial", "mpi"] = "mpi"
    wall_time_minutes: float = Field(default=60.0, gt=0, le=MAX_WALL_TIME_MINUTES)
    wf_filter: SettingText = ""
    sched_flags: list[SettingText] = Field(default_factory=list, max_length=100)
    period_seconds: float = Field(default=30.0, gt=0, le=MAX_SERVICE_SECONDS)
    submit_backoff_seconds: float = Field(default=60.0, gt=0, le=MAX_SERVICE_SECONDS)
    max_backoff_seconds: float = Field(default=3600.0, gt=0, le=MAX_SERVICE_SECONDS)
    use_backfill: bool = False
    lock_seconds: float = Field(default=90.0, gt=0, le=MAX_SERVICE_SECONDS)
    processing: bool = False

    @model_validator(mode="after")
    def _lock_outlasts_passes(self) -> ServiceSettings:
        # The lock is renewed once a pass: a shorter one would be taken over between passes.
        if self.lock_seconds < 3 * self.period_seconds:
            raise ValueError(
                f"lock_seconds ({self.lock_seconds:g}) must be at least 3 x period_seconds "
                f"({self.period_seconds:g})"
            )
        if self.max_backoff_seconds < self.submit_backoff_seconds:
            raise ValueError("max_backoff_seconds is below submit_backoff_seconds")
        return self


def launch_problem(
    projects: Sequence[str],
    queues: Mapping[str, QueueSettings],
    *,
    project: str,
    queue: str,
    num_nodes: int,
    wall_time_minutes: float,
) -> str | None:
    """Why the site's settings refuse this launcher batch job, or None when they allow it."""
    if projects and project not in projects:
        return f"project {project!r} is not one of the site's projects ({', '.join(projects)})"
    if not queues:
        return None
    limits = queues.get(queue)
    if limits is None:
        return f"queue {queue!r} is not one of the site's queues ({', '.join(queues)})"
    if not limits.min_nodes <= num_nodes <= limits.max_nodes:
        span = f"{limits.min_nodes} to {limits.max_nodes}"
        return f"queue {queue!r} takes {span} nodes (asked for {num_nodes})"
    if wall_time_minutes > limits.max_wall_time_minutes:
        longest = format_minutes(limits.max_wall_time_minutes)
        return (
            f"queue {queue!r} takes at most {longest} minutes "
            f"(asked for {format_minutes(wall_time_minutes)})"
        )
    return None

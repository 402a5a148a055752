"""Claiming jobs: how many, when, and when a ``--consume-all`` launcher is done.

A base of :class:`~balsam.launcher.runner.Launcher`. A claim takes, in one transaction, room
for every free slot plus a prefetch (:meth:`Claims._prefetch`); the launcher claims again when
its queue is down to half the prefetch, at once when a run ends, and every
``IDLE_POLL_SECONDS`` when the last claim found less than it asked for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from balsam.backends.base import Backend
from balsam.config import LauncherSettings
from balsam.domain.states import JobState
from balsam.errors import DatabaseError, NotFound
from balsam.launcher.jobflow import Task
from balsam.launcher.lease import Lease
from balsam.launcher.options import LauncherOptions
from balsam.launcher.placement import NodePool
from balsam.launcher.queue import PREFETCH_SECONDS, RateMeter
from balsam.launcher.updates import FlushResult, UpdateBuffer
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import JobQuery, clause_from_kwargs
from balsam.schemas.sessions import ClaimRequest

log = logging.getLogger(__name__)
S = JobState

#: How often an idle launcher asks for new jobs.
IDLE_POLL_SECONDS = 1.0
#: States of jobs that may still become work for a launcher (see :meth:`Launcher.remaining`).
UPCOMING_STATES = [
    S.CREATED,
    S.AWAITING_PARENTS,
    S.READY,
    S.STAGED_IN,
    S.PREPROCESSED,
    S.RESTART_READY,
]


class Claims:
    """How a launcher claims jobs and decides that nothing is left for it."""

    backend: Backend
    settings: LauncherSettings
    options: LauncherOptions
    pool: NodePool
    lease: Lease
    updates: UpdateBuffer
    tasks: dict[str, Task]
    waiting: list[Task]
    mpi_mode: bool
    stop_reason: str | None
    fenced: bool
    finished: bool
    next_claim: float
    stop_at: float | None
    ends: RateMeter

    if TYPE_CHECKING:
        # Provided by JobFlow, RunQueue and Launcher.
        @property
        def session_id(self) -> int: ...

        def flush(self, now: float) -> FlushResult: ...

        def release(self, job_ids: list[str]) -> None: ...

        def unqueue(self, task: Task) -> None: ...

        def admit(self, jobs: list[JobOut], now: float) -> None: ...

        def _lost_lease(self, now: float) -> None: ...

    # ---- claims ------------------------------------------------------------------------------

    def _prefetch(self) -> int:
        """How many waiting jobs to hold: one round of the allocation, or more for short jobs.

        Enough to keep every slot busy for ``PREFETCH_SECONDS`` at the rate jobs have been
        ending, so that a campaign of very short jobs is claimed in batches rather than a
        transaction per job; at most ``claim_batch``.
        """
        capacity = self.pool.capacity(not self.mpi_mode)
        return max(
            capacity, min(self.settings.claim_batch, int(self.ends.rate() * PREFETCH_SECONDS))
        )

    def _claim_budget(self) -> int:
        """How many jobs to claim: room for every free slot plus the prefetch.

        Holding jobs ahead lets the next one start the moment a slot frees, without a database
        round trip. Claiming waits until the queue is down to half the prefetch, then tops it
        up in one transaction.
        """
        if self.stop_reason is not None or self.fenced or not self.lease.session_id:
            return 0
        prefetch = self._prefetch()
        if len(self.waiting) > prefetch // 2:
            return 0
        free = self.pool.free_slots(not self.mpi_mode) + prefetch - len(self.waiting)
        return max(0, min(self.settings.claim_batch, free))

    def _claim_due(self, now: float) -> bool:
        return now >= self.next_claim and self._claim_budget() > 0

    def remaining_minutes(self, now: float) -> float | None:
        """Minutes left before jobs are stopped (None without a time limit)."""
        if self.stop_at is None:
            return None
        return max(0.0, (self.stop_at - now) / 60)

    def _claim(self, now: float) -> None:
        # The service must see finished jobs first: they may free their children.
        self.flush(now)
        budget = self._claim_budget()
        request = ClaimRequest(
            limit=budget,
            workflows=self.options.workflows,
            max_nodes=len(self.pool),
            serial_only=not self.mpi_mode,
            max_wall_time_minutes=self.remaining_minutes(now),
        )
        try:
            jobs = self.backend.claim_jobs(self.session_id, request)
        except NotFound:
            self._lost_lease(now)
            return
        except DatabaseError as exc:
            log.warning("cannot claim jobs, will retry: %s", exc)
            self.next_claim = now + IDLE_POLL_SECONDS
            return
        self.next_claim = now if len(jobs) >= budget else now + IDLE_POLL_SECONDS
        if jobs:
            log.info("claimed %d job(s)", len(jobs))
            self._admit_claimed(jobs, now)
        elif self.options.consume_all and not self.tasks and not len(self.updates):
            self._check_exhausted(now)

    def _admit_claimed(self, jobs: list[JobOut], now: float) -> None:
        try:
            self.admit(jobs, now)
        except DatabaseError as exc:
            # Cannot even look up their apps: hand back what has not started yet.
            log.warning("cannot take %d claimed job(s), handing them back: %s", len(jobs), exc)
            idle = []
            for job in jobs:
                task = self.tasks.get(job.job_id)
                if task is None or task.child is None:
                    if task is not None:
                        self.unqueue(task)
                    self.tasks.pop(job.job_id, None)
                    idle.append(job.job_id)
            self.flush(now)
            self.release(idle)

    def remaining(self, now: float) -> JobQuery:
        """Jobs this launcher could still run: the ``--consume-all`` exit test counts them.

        Jobs in the filter that are on their way to running (CREATED, AWAITING_PARENTS,
        READY, STAGED_IN, PREPROCESSED, RESTART_READY), held by no launcher, and that fit this
        launcher (node count, serial mode, remaining wall time). AWAITING_PARENTS jobs count
        whatever their parents are doing, so a launcher waits while parents run elsewhere.
        """
        filters = self.upcoming_filters()
        filters["num_nodes__lte"] = 1 if not self.mpi_mode else len(self.pool)
        minutes = self.remaining_minutes(now)
        if minutes is not None:
            filters["wall_time_minutes__lte"] = minutes
        return JobQuery(clauses=[clause_from_kwargs(filters)])

    def upcoming_filters(self) -> dict[str, Any]:
        """Jobs in this launcher's workflows on their way to running, held by no launcher."""
        filters: dict[str, Any] = {
            "state__in": [s.value for s in UPCOMING_STATES],
            "session_id__isnull": True,
        }
        if self.options.workflows:
            filters["workflow__in"] = list(self.options.workflows)
        return filters

    def _check_exhausted(self, now: float) -> None:
        try:
            left = self.backend.count_jobs(self.remaining(now))
        except DatabaseError as exc:
            log.warning("cannot count remaining jobs, will retry: %s", exc)
            return
        if left == 0:
            log.info("no runnable jobs remain: exiting (--consume-all)")
            self.finished = True

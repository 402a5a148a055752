"""A batch scheduler in memory, for tests of what drives schedulers (the service, ``ls queues``).

:class:`MemoryScheduler` keeps the jobs it was given and answers as a batch system would: a
job is QUEUED until the test starts it (:meth:`MemoryScheduler.start`), RUNNING until it ends
(:meth:`MemoryScheduler.finish`), CANCELLED when cancelled, and GONE once forgotten
(:meth:`MemoryScheduler.forget`). A test can make it refuse submissions (``refusal``), fail
to answer (``down``) and report free nodes (``windows``). It runs through the same scheduler
contract suite as the real adapters (tests/contract/test_scheduler_contract.py). It writes no
script and runs nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from balsam.errors import SchedulerError
from balsam.platform.schedulers.base import BackfillWindow, BatchState, LaunchRequest, Submission

_ENDED = (BatchState.FINISHED, BatchState.FAILED, BatchState.CANCELLED)


@dataclass
class MemoryJob:
    """One job the memory scheduler was given."""

    job_id: str
    request: LaunchRequest
    state: BatchState = BatchState.QUEUED


@dataclass
class MemoryScheduler:
    """A scheduler whose jobs live in a dict (see the module docstring)."""

    name: str = "memory"
    jobs: dict[str, MemoryJob] = field(default_factory=dict)
    #: When set, every submission is refused with this reason.
    refusal: str | None = None
    #: When set, no command answers (SchedulerError with this reason).
    down: str | None = None
    #: Free nodes per queue, as :meth:`backfill` reports them.
    windows: dict[str, list[BackfillWindow]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def submit(self, request: LaunchRequest) -> Submission:
        """Queue ``request`` (SchedulerError when refusing or down)."""
        self._answering()
        if self.refusal:
            raise SchedulerError(self.refusal)
        job_id = str(next(self._ids))
        self.jobs[job_id] = MemoryJob(job_id, request)
        return Submission(launch_id=job_id, script=request.scripts_dir / f"memory-{job_id}.sh")

    def status(self, ids: Sequence[str]) -> dict[str, BatchState]:
        """Each job's state; GONE for ids it does not know."""
        self._answering()
        return {i: self.jobs[i].state if i in self.jobs else BatchState.GONE for i in ids}

    def cancel(self, job_id: str) -> None:
        """Cancel a job that has not ended; an ended or unknown one is left alone."""
        self._answering()
        job = self.jobs.get(job_id)
        if job is not None and job.state not in _ENDED:
            job.state = BatchState.CANCELLED

    def find(self, job_name: str) -> list[str]:
        """Ids of the jobs named ``job_name`` it still knows."""
        self._answering()
        return [j.job_id for j in self.jobs.values() if j.request.job_name == job_name]

    def backfill(self, queue: str) -> list[BackfillWindow]:
        """The windows a test gave for ``queue``."""
        self._answering()
        return list(self.windows.get(queue, []))

    def start(self, job_id: str) -> None:
        """Start a queued job (its allocation begins)."""
        self.jobs[job_id].state = BatchState.RUNNING

    def finish(self, job_id: str, state: BatchState = BatchState.FINISHED) -> None:
        """End a job."""
        self.jobs[job_id].state = state

    def forget(self, job_id: str) -> None:
        """Forget a job, as schedulers forget ended jobs after a while."""
        del self.jobs[job_id]

    def in_state(self, state: BatchState) -> list[MemoryJob]:
        """The jobs in ``state``, oldest first."""
        return [j for j in self.jobs.values() if j.state is state]

    def _answering(self) -> None:
        if self.down:
            raise SchedulerError(self.down)

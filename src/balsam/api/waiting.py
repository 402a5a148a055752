"""Driver scripts that wait: ``Job.objects.wait(jobs)`` and ``Job.objects.as_completed(jobs)``.

Shaped like :func:`concurrent.futures.wait` and :func:`concurrent.futures.as_completed`, with
jobs in place of futures: a job is *completed* once it is in an end state (JOB_FINISHED, FAILED
or USER_KILLED: :data:`balsam.domain.states.TERMINAL_STATES`), whatever the outcome; look at
``job.state`` to tell them apart. Jobs may be given as :class:`~balsam.api.Job` objects, ids
or unique id prefixes; jobs given as objects are the ones returned, their state brought up to
date, and jobs given as ids come back as new objects. Each job appears once, in the order
first given (``concurrent.futures`` returns sets; lists keep the caller's order).

How they wake: on the Backend's change signal (``wait_for_change``: LISTEN/NOTIFY on
PostgreSQL, a cheap polled marker on SQLite; see docs/waiting.md). On each change they read
again only the jobs not yet completed — one query (per 500 ids) that returns just those that
have ended since. At most every :data:`RECHECK_SECONDS` without any change they also check
that the awaited jobs still exist: a job deleted while waited for raises
:class:`~balsam.api.jobs.JobDoesNotExist` rather than being waited for forever.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from balsam.api.context import get_backend
from balsam.backends.base import Backend
from balsam.domain.states import TERMINAL_STATES
from balsam.errors import ValidationError
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import JobQuery, clause_from_kwargs

if TYPE_CHECKING:
    from balsam.api.jobs import Job

#: ``return_when``: return when every job has completed (the default).
ALL_COMPLETED = "ALL_COMPLETED"
#: ``return_when``: return as soon as one job has completed (or at once if one has).
FIRST_COMPLETED = "FIRST_COMPLETED"
#: Longest wait on the change signal before the jobs' existence is checked.
RECHECK_SECONDS = 30.0
#: Ids per query (SQLite bounds the number of bound parameters of a statement).
ID_CHUNK = 500
_TERMINAL = sorted(s.value for s in TERMINAL_STATES)


class DoneAndNotDone(NamedTuple):
    """What :func:`wait` returns: the completed jobs and the others, each in the given order."""

    done: list[Job]
    not_done: list[Job]


def wait(
    jobs: Iterable[Job | str | uuid.UUID],
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
) -> DoneAndNotDone:
    """Wait until the jobs have completed (``return_when``: all of them, or the first one)
    or ``timeout`` seconds passed (None: no limit); returns ``(done, not_done)``."""
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED):
        raise ValidationError(
            f"return_when must be ALL_COMPLETED or FIRST_COMPLETED, not {return_when!r}"
        )
    watch = _Watch(get_backend(), jobs, _deadline(timeout))
    for _ in watch.batches():
        if return_when == FIRST_COMPLETED and watch.done:
            break
    return watch.result()


def as_completed(
    jobs: Iterable[Job | str | uuid.UUID], timeout: float | None = None
) -> Iterator[Job]:
    """Yield the jobs one by one as they complete (those completed already first); raise
    :class:`TimeoutError` if some have not completed ``timeout`` seconds after this call."""
    watch = _Watch(get_backend(), jobs, _deadline(timeout))
    return _each_completed(watch)


def _each_completed(watch: _Watch) -> Iterator[Job]:
    for batch in watch.batches():
        yield from batch
    if watch.pending:
        total = len(watch.jobs)
        raise TimeoutError(f"{len(watch.pending)} of {total} jobs have not completed in time")


def _deadline(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    if not isinstance(timeout, int | float) or math.isnan(timeout) or timeout < 0:
        raise ValidationError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
    return time.monotonic() + timeout


class _Watch:
    """The jobs waited for: which have completed, read again on every change."""

    def __init__(
        self, backend: Backend, refs: Iterable[Job | str | uuid.UUID], deadline: float
    ) -> None:
        from balsam.api.jobs import Job, job_id_of

        self.backend = backend
        self.deadline = deadline
        self.jobs: dict[str, Job | None] = {}
        for ref in refs:
            job_id = job_id_of(ref, backend)
            if self.jobs.get(job_id) is None:
                self.jobs[job_id] = ref if isinstance(ref, Job) else None
        self.pending: dict[str, None] = dict.fromkeys(self.jobs)
        self.done: list[Job] = []
        self._pace = 0.0

    def batches(self) -> Iterator[list[Job]]:
        """The jobs completed already, then those completed at each change, until all have
        or the deadline passed (each list in the given order; empty lists are skipped)."""
        # The marker first: a change committed after it was read wakes the first wait.
        marker = self.backend.change_marker()
        first = self._read(list(self.pending), ended_only=False)
        missing = [job_id for job_id in self.pending if job_id not in first]
        if missing:
            self._refuse_missing(missing)
        if ended := self._take(first):
            yield ended
        while self.pending:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return
            step = min(left, RECHECK_SECONDS)
            new = self.backend.wait_for_change(marker, step)
            if new == marker:
                if step == RECHECK_SECONDS:
                    self._check_exist()
                continue
            marker = new
            self._pause()
            if ended := self._take(self._read(list(self.pending), ended_only=True)):
                yield ended

    def result(self) -> DoneAndNotDone:
        """The completed jobs and the others (their state as now), in the given order."""
        waiting = self._read(list(self.pending), ended_only=False) if self.pending else {}
        not_done = [
            self._job(job_id, waiting[job_id]) for job_id in self.pending if job_id in waiting
        ]
        order = {job_id: i for i, job_id in enumerate(self.jobs)}
        done = sorted(self.done, key=lambda job: order[str(job.job_id)])
        return DoneAndNotDone(done, not_done)

    def _read(self, ids: list[str], ended_only: bool) -> dict[str, JobOut]:
        """The jobs of ``ids`` (only those that have ended, with ``ended_only``), by id."""
        started = time.monotonic()
        found: dict[str, JobOut] = {}
        for start in range(0, len(ids), ID_CHUNK):
            conditions: dict[str, object] = {"job_id__in": ids[start : start + ID_CHUNK]}
            if ended_only:
                conditions["state__in"] = _TERMINAL
            query = JobQuery(clauses=[clause_from_kwargs(conditions)])
            found.update((out.job_id, out) for out in self.backend.query_jobs(query))
        # A busy database changes every few ms: keep the re-reads of a big wait to a third
        # of the time at most, by pausing twice as long as the last read took.
        self._pace = min(2 * (time.monotonic() - started), 1.0)
        return found

    def _pause(self) -> None:
        """Let the last read's pace pass (never past the deadline)."""
        if self._pace:
            time.sleep(min(self._pace, max(0.0, self.deadline - time.monotonic())))

    def _take(self, outs: dict[str, JobOut]) -> list[Job]:
        """Move the jobs of ``outs`` that have ended from pending to done; returns them."""
        ended = [
            job_id
            for job_id in self.pending
            if (out := outs.get(job_id)) is not None and out.state in TERMINAL_STATES
        ]
        batch = [self._job(job_id, outs[job_id]) for job_id in ended]
        for job_id in ended:
            del self.pending[job_id]
        self.done += batch
        return batch

    def _job(self, job_id: str, out: JobOut) -> Job:
        from balsam.api.jobs import Job

        job = self.jobs[job_id]
        if job is None:
            return Job.from_out(out)
        job._sync(out, keep_edits=False)
        return job

    def _check_exist(self) -> None:
        """Refuse to wait on for jobs deleted meanwhile (one count per 500 ids)."""
        ids = list(self.pending)
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            query = JobQuery(clauses=[clause_from_kwargs({"job_id__in": chunk})])
            if self.backend.count_jobs(query) < len(chunk):
                found = {out.job_id for out in self.backend.query_jobs(query)}
                self._refuse_missing([job_id for job_id in chunk if job_id not in found])

    @staticmethod
    def _refuse_missing(missing: list[str]) -> None:
        from balsam.api.jobs import JobDoesNotExist

        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise JobDoesNotExist(f"job {missing[0]}{more} no longer exists (deleted?)")

"""Claiming jobs: what the allocation can run, how many, when, and when nothing is left.

A claim says what the launcher's nodes have (how many, the CPUs and GPUs of the biggest, the
wall time left, whether MPI can start multi-rank jobs) and the database hands out only jobs
that fit (:class:`balsam.schemas.sessions.ClaimRequest`), plus jobs left unheld in a processing
state, whose steps run on the launcher's host. It takes, in one transaction, room for every
free slot plus a prefetch (:meth:`Claimer.prefetch`); the launcher claims again when its queue
is down to half the prefetch, at once when a run ends, and every ``IDLE_POLL_SECONDS`` when
the last claim found less than it asked for. Between those idle claims it reads the database's
change marker (:meth:`balsam.backends.base.Backend.change_marker`, one index lookup) every
``WAKE_CHECK_SECONDS`` and claims at once when it moved: a job that another launcher finished
may have released children that this one can run.

A claim that fails transiently is sent again with the same number (``claim_seq``), so if the
first did take jobs, the repeat returns them instead of leaving them held and unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from balsam.backends.base import Backend
from balsam.config import LauncherSettings
from balsam.domain.states import PROCESSING_STATES, JobState
from balsam.errors import BalsamError, NotFound
from balsam.launcher.backoff import Backoff
from balsam.launcher.lease import Lease
from balsam.launcher.options import LauncherOptions, LauncherRole
from balsam.launcher.placement import NodePool
from balsam.launcher.processing import ProcessingSplit
from balsam.launcher.rates import RateMeter
from balsam.launcher.updates import FlushResult
from balsam.platform.schedulers.base import MAX_NODES
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import JobQuery, clause_from_kwargs
from balsam.schemas.sessions import ClaimRequest

log = logging.getLogger(__name__)
S = JobState

#: How often an idle launcher asks for new jobs.
IDLE_POLL_SECONDS = 1.0
#: How often an idle launcher reads the change marker to see whether it should claim sooner.
WAKE_CHECK_SECONDS = 0.025
#: How much work (seconds, at the rate jobs have been ending) a launcher holds ahead.
PREFETCH_SECONDS = 0.5
#: At most this many jobs left in processing states are taken per claim, and they are looked
#: for at most every ``PROCESSING_POLL_SECONDS`` while none are found (a dead or stopped
#: launcher leaves them; a busy launcher claims many times a second).
PROCESSING_BATCH = 32
PROCESSING_POLL_SECONDS = 1.0
#: States of jobs that may still become runs for a launcher (see :meth:`Claimer.remaining`).
UPCOMING_STATES = [
    S.CREATED,
    S.AWAITING_PARENTS,
    S.READY,
    S.STAGED_IN,
    S.PREPROCESSED,
    S.RESTART_READY,
]
#: What a launcher that leaves staging and preprocessing to the service claims ...
RUN_READY_STATES = [S.PREPROCESSED, S.RESTART_READY]
#: ... and what the service's processing launcher claims besides the processing states.
BEFORE_RUN_STATES = [S.READY, S.STAGED_IN]


@dataclass(frozen=True)
class Capacity:
    """What one allocation can run: the claim's limits."""

    nodes: int
    cpus_per_node: int
    gpus_per_node: int
    #: Multi-rank jobs can start (an MPI launcher was found).
    has_mpi: bool
    #: Only single-node jobs (serial mode).
    serial: bool

    @property
    def max_nodes(self) -> int:
        """The most nodes a job may ask for."""
        return 1 if self.serial or not self.has_mpi else self.nodes


class Claimer:
    """When and what a launcher claims, and whether anything is left for it."""

    def __init__(
        self,
        backend: Backend,
        lease: Lease,
        settings: LauncherSettings,
        options: LauncherOptions,
        pool: NodePool,
        capacity: Capacity,
        minutes_left: Callable[[float], float | None],
        split: ProcessingSplit | None = None,
    ) -> None:
        self.backend = backend
        #: Whether the steps around runs are this launcher's or the service's.
        self.split = split or ProcessingSplit(backend, LauncherRole.ALL, False)
        self.lease = lease
        self.settings = settings
        self.options = options
        self.pool = pool
        self.capacity = capacity
        self.minutes_left = minutes_left
        self.next_claim = 0.0
        self.ends = RateMeter()
        self.backoff = Backoff()
        #: The number of a claim whose answer did not arrive: the next claim repeats it.
        self._unanswered = 0
        #: The last claim found less than it asked for.
        self.drained = False
        #: When to look for jobs left in processing states again.
        self._next_processing = 0.0
        #: The change marker read just before the last idle claim (None: not read), and
        #: when to read it again.
        self._marker: int | None = None
        self._next_wake_check = 0.0

    def prefetch(self) -> int:
        """How many waiting jobs to hold: one round of the allocation, or more for short jobs.

        Enough to keep every slot busy for ``PREFETCH_SECONDS`` at the rate jobs have been
        ending, so that a campaign of very short jobs is claimed in batches rather than a
        transaction per job; at most ``claim_batch``.
        """
        capacity = self.pool.capacity(self.capacity.serial)
        return max(
            capacity, min(self.settings.claim_batch, int(self.ends.rate() * PREFETCH_SECONDS))
        )

    def budget(self, waiting: int) -> int:
        """How many jobs to claim with ``waiting`` held and not started: room for every free
        slot plus the prefetch, once the queue is down to half the prefetch."""
        prefetch = self.prefetch()
        if waiting > prefetch // 2:
            return 0
        free = self.pool.free_slots(self.capacity.serial) + prefetch - waiting
        return max(0, min(self.settings.claim_batch, free))

    def due(self, now: float, waiting: int) -> bool:
        """Whether a claim is due now: its time has come, or, while idle, the database
        changed since the last claim. (Asked every launcher turn: the clock is looked at
        before the budget, which is counted only when a claim could be due.)"""
        on_time = now >= self.next_claim
        if not on_time and not self._wake_check_due(now):
            return False
        if self.budget(waiting) <= 0:
            return False
        return on_time or self._changed(now)

    def next_at(self) -> float:
        """When :meth:`due` may next be true (for a launcher with room to claim)."""
        if self._marker is None or self.backoff.failures:
            return self.next_claim
        return min(self.next_claim, self._next_wake_check)

    def _wake_check_due(self, now: float) -> bool:
        """Whether the change marker should be read now (idle, not backing off, period over)."""
        return (
            self._marker is not None and not self.backoff.failures and now >= self._next_wake_check
        )

    def _changed(self, now: float) -> bool:
        """Whether the change marker moved since the last idle claim (read at most every
        ``WAKE_CHECK_SECONDS``)."""
        if not self._wake_check_due(now):
            return False
        self._next_wake_check = now + WAKE_CHECK_SECONDS
        try:
            return self.backend.change_marker() != self._marker
        except BalsamError:
            # The idle claim will find out and back off; a missed wake costs one poll period.
            return False

    def soon(self) -> None:
        """Claim at the next turn (a run ended, a node joined)."""
        self.next_claim = 0.0 if self.backoff.failures == 0 else self.backoff.next_at

    def request(self, now: float, limit: int) -> ClaimRequest:
        """The claim for up to ``limit`` jobs that fit this launcher now."""
        cap = self.capacity
        seq = self._unanswered or self.lease.next_seq()
        self._unanswered = seq
        processing = PROCESSING_BATCH if now >= self._next_processing else 0
        if self.split.processing_only:
            return self._processing_request(limit, seq)
        defer = self.split.defers(now)
        return ClaimRequest.model_construct(
            limit=limit,
            workflows=list(self.options.workflows),
            max_nodes=cap.max_nodes,
            cpus_per_node=max(cap.cpus_per_node, 1),
            gpus_per_node=cap.gpus_per_node,
            max_wall_time_minutes=self.minutes_left(now),
            serial_only=cap.serial,
            job_ids=[],
            processing_limit=0 if defer else processing,
            states=list(RUN_READY_STATES) if defer else [],
            claim_seq=seq,
            max_ranks_per_node=None if cap.has_mpi else 1,
        )

    def _processing_request(self, limit: int, seq: int) -> ClaimRequest:
        """The service's processing launcher: jobs of any size with a step before or after
        their run (runs happen elsewhere, so nothing about the nodes matters)."""
        return ClaimRequest.model_construct(
            limit=limit,
            workflows=list(self.options.workflows),
            max_nodes=MAX_NODES,
            cpus_per_node=None,
            gpus_per_node=None,
            max_wall_time_minutes=None,
            serial_only=False,
            job_ids=[],
            processing_limit=limit,
            states=list(BEFORE_RUN_STATES),
            claim_seq=seq,
            max_ranks_per_node=None,
        )

    def claim(self, now: float, waiting: int) -> list[JobOut] | None:
        """Claim what fits; None when the session is gone (NotFound)."""
        return self.send(now, self.prepare(now, waiting))

    def prepare(self, now: float, waiting: int) -> ClaimRequest:
        """The claim to send now with ``waiting`` jobs held and not started (sent by
        :meth:`send`, or along with the launcher's updates, then :meth:`took` or
        :meth:`failed`)."""
        if self.drained:
            self._read_marker(now)
        return self.request(now, self.budget(waiting))

    def _read_marker(self, now: float) -> None:
        """Note the change marker before an idle claim: a change committed after this read is
        seen by the claim or moves the marker, so no release is missed."""
        self._next_wake_check = now + WAKE_CHECK_SECONDS
        try:
            self._marker = self.backend.change_marker()
        except BalsamError:
            self._marker = None

    def send(self, now: float, request: ClaimRequest) -> list[JobOut] | None:
        """Send ``request`` on its own; the jobs taken, None when the session is gone."""
        try:
            jobs = self.backend.claim_jobs(self.lease.session_id, request)
        except NotFound:
            self._unanswered = 0
            return None
        except BalsamError as exc:
            self.failed(now, exc)
            return []
        return self.took(now, request, jobs)

    def answer(self, now: float, request: ClaimRequest, sent: FlushResult) -> list[JobOut] | None:
        """The jobs ``request`` took: with the updates of the flush ``sent``, or, when it did
        not go with them, sent now on its own (None: the session is gone)."""
        if not sent.claim_sent:
            return self.send(now, request)
        if sent.claimed is None:
            self.failed(now, sent.error or BalsamError("no answer"))
            return []
        return self.took(now, request, sent.claimed)

    def failed(self, now: float, exc: BalsamError) -> None:
        """The claim got no answer: it is repeated, with the same number, after a pause."""
        wait = self.backoff.failed(now)
        log.warning("cannot claim jobs, will retry in %.1f s: %s", wait, exc)
        self.next_claim = self.backoff.next_at

    def took(self, now: float, request: ClaimRequest, jobs: list[JobOut]) -> list[JobOut]:
        """The claim was answered with ``jobs``: note what it says of the backlog."""
        self._unanswered = 0
        self.backoff.reset()
        runs = sum(1 for job in jobs if job.state not in PROCESSING_STATES)
        if request.processing_limit and runs == len(jobs):
            self._next_processing = now + PROCESSING_POLL_SECONDS
        self.drained = runs < request.limit
        if not self.drained:
            self._marker = None
        elif self._marker is None:
            # The first claim to find the backlog empty was sent without a marker: read it now
            # (a change in between is caught by the next idle claim, IDLE_POLL_SECONDS later).
            self._read_marker(now)
        self.next_claim = now + IDLE_POLL_SECONDS if self.drained else now
        if jobs:
            log.info("claimed %d job(s)", len(jobs))
        return jobs

    @property
    def answered(self) -> bool:
        """No claim is waiting to be repeated (its jobs may be held here, unknown yet)."""
        return self._unanswered == 0

    def forget_session(self) -> None:
        """The session is gone: a claim left unanswered cannot be repeated in a new one."""
        self._unanswered = 0

    # ---- what is left ------------------------------------------------------------------------

    def remaining(self, now: float) -> list[JobQuery]:
        """Queries of the jobs this launcher could still run: ``--consume-all`` counts them.

        Jobs in the filter on their way to running (CREATED, AWAITING_PARENTS, READY,
        STAGED_IN, PREPROCESSED, RESTART_READY), held by no launcher, that fit this launcher
        (nodes, CPUs, GPUs, ranks, remaining wall time); and jobs held by nobody in a
        processing state (their steps run here whatever their size). AWAITING_PARENTS jobs
        count whatever their parents are doing, so a launcher waits while parents run elsewhere.
        """
        cap = self.capacity
        fit = self.upcoming_filters()
        fit.update(
            num_nodes__lte=cap.max_nodes,
            cpus_needed__lte=max(cap.cpus_per_node, 1),
            gpus_needed__lte=cap.gpus_per_node,
        )
        if not cap.has_mpi:
            fit["ranks_per_node__lte"] = 1
        minutes = self.minutes_left(now)
        if minutes is not None:
            fit["wall_time_minutes__lte"] = minutes
        processing = {
            "state__in": [s.value for s in PROCESSING_STATES],
            "session_id__isnull": True,
        }
        if self.options.workflows:
            processing["workflow__in"] = list(self.options.workflows)
        return [JobQuery(clauses=[clause_from_kwargs(f)]) for f in (fit, processing)]

    def upcoming_filters(self) -> dict[str, object]:
        """Jobs in this launcher's workflows on their way to running, held by no launcher."""
        filters: dict[str, object] = {
            "state__in": [s.value for s in UPCOMING_STATES],
            "session_id__isnull": True,
        }
        if self.options.workflows:
            filters["workflow__in"] = list(self.options.workflows)
        return filters

    def nothing_left(self, now: float) -> bool | None:
        """True when no job could still become work for this launcher (None: cannot tell)."""
        try:
            return all(self.backend.count_jobs(q) == 0 for q in self.remaining(now))
        except BalsamError as exc:
            log.warning("cannot count remaining jobs, will retry: %s", exc)
            return None

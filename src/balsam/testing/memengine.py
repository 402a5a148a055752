"""State changes on in-memory jobs, by the rules of :class:`balsam.services.state_engine`.

Every change goes through :meth:`MemoryStateEngine.move`: validate against the transition
table, update the retry counters and the hold, record an event, fast-forward through the
steps with nothing to do (``domain.states.fast_forward`` on ``domain.states.job_facts``), and
at :meth:`~MemoryStateEngine.finish` let jobs that ended release or fail their children.
"""

from __future__ import annotations

from datetime import datetime

from balsam.domain.states import (
    TERMINAL_STATES,
    JobFacts,
    JobState,
    TransitionError,
    fast_forward,
    job_facts,
    validate_transition,
    validate_user_move,
)
from balsam.errors import InvalidTransition
from balsam.testing.memstore import JobRecord, Store, as_utc, utcnow

S = JobState
#: The states in which a job's facts depend on its parents.
_EARLY = (S.CREATED, S.AWAITING_PARENTS, S.READY)


class MemoryStateEngine:
    """State changes on the records of one store, within one backend call."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._finished: list[JobRecord] = []

    def facts(self, job: JobRecord, parent_states: list[str] | None = None) -> JobFacts:
        """What the fast-forward needs to know about ``job``."""
        app = self.store.apps.get(job.application)
        if parent_states is None:
            # As the SQL engine: only the early states look at the parents.
            early = job.state in _EARLY
            parent_states = self.store.parent_states(job.job_id) if early else []
        return job_facts(job, app, parent_states, has_parents=bool(parent_states))

    def move(
        self,
        job: JobRecord,
        new: JobState,
        message: str = "",
        when: datetime | None = None,
        keep_hold: bool = False,
        lost: bool = False,
        by_user: bool = False,
    ) -> None:
        """Move ``job`` to ``new`` (validated: ``by_user``, by the rules of a user's move),
        then fast-forward; raise InvalidTransition."""
        check = validate_user_move if by_user else validate_transition
        try:
            check(job.state, new)
        except TransitionError as exc:
            raise InvalidTransition(f"job {job.job_id[:8]} ({job.name}): {exc}") from None
        if not isinstance(new, JobState):
            # The SQL engine fails here too (it stores ``new.value``).
            raise TypeError(f"a job's new state must be a JobState, not {new!r}")
        when = as_utc(when) if when is not None else utcnow()
        self._enter(job, new, message, when, keep_hold, lost)
        self.settle(job, when, keep_hold=keep_hold)

    def settle(self, job: JobRecord, when: datetime, keep_hold: bool = False) -> None:
        """Fast-forward ``job`` through every step that has nothing to do."""
        for hop in fast_forward(job.state, self.facts(job)):
            self._enter(job, hop, "", when, keep_hold, lost=False)

    def _enter(
        self,
        job: JobRecord,
        new: JobState,
        message: str,
        when: datetime,
        keep_hold: bool,
        lost: bool,
    ) -> None:
        if new is S.RUN_ERROR:
            job.error_count += 1
        elif new is S.RUN_TIMEOUT:
            job.timeout_count += 1
        elif new is S.RESTART_READY and lost:
            job.lost_count += 1
        if new in (S.READY, S.RESTART_READY) and job.state in TERMINAL_STATES:
            job.session_id = None
        if not keep_hold and (new in TERMINAL_STATES or new is S.RESTART_READY):
            job.session_id = None
        self.store.add_event(job.job_id, job.state, new, message, when)
        job.state = new
        job.state_timestamp = when
        if new in TERMINAL_STATES:
            self._finished.append(job)

    def finish(self) -> None:
        """Let every job that ended in this call release or fail its children."""
        while self._finished:
            parents = {job.job_id: job for job in self._finished}
            self._finished = []
            # Parents, then children, by id: the order SQLite's edge key gives them.
            for parent_id in sorted(parents):
                for child_id in self.store.child_ids(parent_id):
                    self._react(self.store.jobs[child_id], parents[parent_id])

    def _react(self, child: JobRecord, parent: JobRecord) -> None:
        if child.state not in (S.CREATED, S.AWAITING_PARENTS) or not child.wait_for_parents:
            return
        if parent.state is S.JOB_FINISHED:
            self.settle(child, utcnow())
        else:
            reason = f"parent {parent.job_id[:8]} ({parent.name}) ended {parent.state}"
            self.move(child, S.FAILED, reason)


def bound_lost(engine: MemoryStateEngine, job: JobRecord) -> None:
    """Fail a job whose runs were lost more often than it allows."""
    if job.state is S.RESTART_READY and job.lost_count > job.max_lost_retries:
        reason = f"gave up after {job.lost_count} runs lost with their launcher"
        engine.move(job, S.FAILED, reason)

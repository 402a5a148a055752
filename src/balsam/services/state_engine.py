"""Applies validated state changes to job rows inside one transaction.

Every change — from a launcher, a user's ``modify`` or ``kill``, or a parent finishing — goes
through :meth:`StateEngine.move`: validate against the transition table, update the retry
counters, record an event, fast-forward through empty steps, and let the change reach the
children (a finished parent may free them; a failed or killed one fails them).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TypeAlias

from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

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
from balsam.store import repository as repo
from balsam.store.changes import notify_job_change
from balsam.store.staterows import StateRow, state_rows, write_state_rows
from balsam.store.tables import AppRow, JobRow, utcnow

S = JobState
#: A job as the engine changes it: an ORM row, or a plain state row (the launcher's path).
AnyJob: TypeAlias = JobRow | StateRow


class StateEngine:
    """State changes on rows of one SQLAlchemy session, with the events they produce."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._apps: dict[str, AppRow] = {}
        self._finished: list[AnyJob] = []
        self._events: list[dict[str, object]] = []
        self._plain: dict[str, StateRow] = {}

    def app(self, name: str) -> AppRow | None:
        """The app a job runs (cached for the transaction)."""
        if name not in self._apps:
            self._apps.update(repo.apps_by_name(self.session, [name]))
        return self._apps.get(name)

    def facts(self, row: AnyJob, parent_states: list[str] | None = None) -> JobFacts:
        """What the fast-forward needs to know about ``row``."""
        app = self.app(row.application)
        if parent_states is None:
            # Only the early states look at parents; skip the query on the hot run path.
            early = row.state in (S.CREATED, S.AWAITING_PARENTS, S.READY)
            parent_states = repo.parent_states(self.session, row.job_id) if early else []
        return job_facts(row, app, parent_states, has_parents=bool(parent_states))

    def move(
        self,
        row: AnyJob,
        new: JobState,
        message: str = "",
        when: datetime | None = None,
        keep_hold: bool = False,
        lost: bool = False,
        by_user: bool = False,
    ) -> None:
        """Move ``row`` to ``new`` (validated: ``by_user``, by the rules of a user's move),
        then fast-forward; raise InvalidTransition."""
        check = validate_user_move if by_user else validate_transition
        try:
            check(S(row.state), new)
        except TransitionError as exc:
            raise InvalidTransition(f"job {row.job_id[:8]} ({row.name}): {exc}") from None
        when = when or utcnow()
        self._enter(row, new, message, when, keep_hold, lost)
        self.settle(row, when, keep_hold=keep_hold)

    def settle(
        self,
        row: AnyJob,
        when: datetime,
        keep_hold: bool = False,
        parent_states: list[str] | None = None,
    ) -> None:
        """Fast-forward ``row`` through every step that has nothing to do."""
        for hop in fast_forward(S(row.state), self.facts(row, parent_states)):
            self._enter(row, hop, "", when, keep_hold, lost=False)

    def _enter(
        self, row: AnyJob, new: JobState, message: str, when: datetime, keep_hold: bool, lost: bool
    ) -> None:
        if new is S.RUN_ERROR:
            row.error_count += 1
        elif new is S.RUN_TIMEOUT:
            row.timeout_count += 1
        elif new is S.RESTART_READY and lost:
            row.lost_count += 1
        if new in (S.READY, S.RESTART_READY) and S(row.state) in TERMINAL_STATES:
            row.session_id = None
        if not keep_hold and (new in TERMINAL_STATES or new is S.RESTART_READY):
            row.session_id = None
        self._events.append(repo.event(row.job_id, row.state, new, message, when))
        row.state = new.value
        row.state_timestamp = when
        if new in TERMINAL_STATES:
            self._finished.append(row)
        if isinstance(row, StateRow):
            self._plain[row.job_id] = row

    def finish(self) -> None:
        """Write plain rows, propagate endings to children, then write every event at once."""
        # Plain rows first: the children's queries then see their parents' new states (the
        # children themselves are ORM rows, written by the session's flush).
        self._write_plain()
        self._propagate()
        if self._events:
            notify_job_change(self.session)
        repo.add_events(self.session, self._events)
        self._events = []

    def _write_plain(self) -> None:
        write_state_rows(self.session, list(self._plain.values()))
        self._plain = {}

    def _propagate(self) -> None:
        """Let every job that ended in this transaction release or fail its children."""
        while self._finished:
            # One query for the children of every job that ended, not one per job.
            parents = {row.job_id: row for row in self._finished}
            self._finished = []
            edges = repo.child_edges(self.session, list(parents))
            self.session.flush()
            children = self._rows_of(child for _, child in edges)
            waiting = [c.job_id for c in children.values() if _waits_for_parents(c)]
            # Every waiting child's parent states in one query (a fan-out of 1,000 children
            # was 1,000 queries, each flushing the child before it): read before any child
            # changes, which is what each child would have seen of the parents that ended.
            states = repo.parent_states_by_child(self.session, waiting)
            for parent_id, child_id in edges:
                if child_id in states:
                    self._react(children[child_id], parents[parent_id], states[child_id])
            # Written before the next generation's queries read them.
            self._write_plain()

    def _rows_of(self, ids: Iterable[str]) -> dict[str, AnyJob]:
        """The jobs ``ids`` as this transaction has them: the row already loaded (an ORM row
        of the caller's, a plain row changed here), else a plain row read now (the ORM's
        load and unit of work cost more than the SQL for a fan-out's thousand children)."""
        found: dict[str, AnyJob] = {}
        unread = []
        for job_id in dict.fromkeys(ids):
            loaded = self._plain.get(job_id) or self.session.identity_map.get(
                identity_key(JobRow, job_id)
            )
            if isinstance(loaded, JobRow | StateRow):
                found[job_id] = loaded
            else:
                unread.append(job_id)
        found.update(state_rows(self.session, unread))
        return found

    def _react(self, child: AnyJob, parent: AnyJob, parent_states: list[str]) -> None:
        if not _waits_for_parents(child):
            return
        if parent.state == S.JOB_FINISHED:
            self.settle(child, utcnow(), parent_states=parent_states)
        else:
            reason = f"parent {parent.job_id[:8]} ({parent.name}) ended {parent.state}"
            self.move(child, S.FAILED, reason)


def _waits_for_parents(row: AnyJob) -> bool:
    """The job is still waiting for its parents (their endings decide what it does next)."""
    return row.state in (S.CREATED, S.AWAITING_PARENTS) and row.wait_for_parents

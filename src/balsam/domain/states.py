"""Balsam's job state machine, as data.

Every state change on every backend goes through :func:`validate_transition`; steps that have
nothing to do are skipped by :func:`fast_forward` inside the same write, and each hop is
recorded as an event row by the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class JobState(StrEnum):
    """The states a job walks through (Balsam's names, kept)."""

    CREATED = "CREATED"
    """Just added; parents not yet examined."""
    AWAITING_PARENTS = "AWAITING_PARENTS"
    """Waits for every parent to reach JOB_FINISHED."""
    READY = "READY"
    """Parents done; input files are to be staged in."""
    STAGED_IN = "STAGED_IN"
    """Inputs are in the working directory; the preprocess step is next."""
    PREPROCESSED = "PREPROCESSED"
    """Ready to run: a launcher may claim it."""
    RUNNING = "RUNNING"
    """A launcher is running it."""
    RUN_DONE = "RUN_DONE"
    """The run exited 0; the postprocess step is next."""
    POSTPROCESSED = "POSTPROCESSED"
    """Postprocessed; outputs are to be staged out."""
    JOB_FINISHED = "JOB_FINISHED"
    """Done for good."""
    RUN_TIMEOUT = "RUN_TIMEOUT"
    """The launcher ran out of wall time and stopped the run."""
    RUN_ERROR = "RUN_ERROR"
    """The run exited non-zero (or could not start)."""
    RESTART_READY = "RESTART_READY"
    """Waits to be run again (after a timeout, an error retry or a lost launcher)."""
    FAILED = "FAILED"
    """Gave up: error with no retries left, or a parent failed."""
    USER_KILLED = "USER_KILLED"
    """Killed by a user (``balsam kill``) or by a parent's kill."""


S = JobState

#: Allowed moves. Resets (to READY or RESTART_READY) let a user rerun a finished or failed job;
#: a job not yet running goes back to AWAITING_PARENTS when it is given a new parent.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.CREATED: frozenset({S.AWAITING_PARENTS, S.READY, S.FAILED, S.USER_KILLED}),
    S.AWAITING_PARENTS: frozenset({S.READY, S.FAILED, S.USER_KILLED}),
    S.READY: frozenset({S.STAGED_IN, S.AWAITING_PARENTS, S.FAILED, S.USER_KILLED}),
    S.STAGED_IN: frozenset({S.PREPROCESSED, S.AWAITING_PARENTS, S.FAILED, S.USER_KILLED}),
    S.PREPROCESSED: frozenset({S.RUNNING, S.AWAITING_PARENTS, S.FAILED, S.USER_KILLED}),
    S.RUNNING: frozenset(
        {S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.RESTART_READY, S.FAILED, S.USER_KILLED}
    ),
    S.RUN_DONE: frozenset({S.POSTPROCESSED, S.RUN_ERROR, S.FAILED, S.USER_KILLED}),
    S.POSTPROCESSED: frozenset({S.JOB_FINISHED, S.FAILED, S.USER_KILLED}),
    S.JOB_FINISHED: frozenset({S.READY, S.RESTART_READY}),
    S.RUN_TIMEOUT: frozenset({S.RESTART_READY, S.POSTPROCESSED, S.FAILED, S.USER_KILLED}),
    S.RUN_ERROR: frozenset({S.RESTART_READY, S.POSTPROCESSED, S.FAILED, S.USER_KILLED}),
    S.RESTART_READY: frozenset({S.RUNNING, S.AWAITING_PARENTS, S.FAILED, S.USER_KILLED}),
    S.FAILED: frozenset({S.READY, S.RESTART_READY}),
    S.USER_KILLED: frozenset({S.READY, S.RESTART_READY}),
}

#: Jobs that will never change again unless a user resets them.
TERMINAL_STATES: frozenset[JobState] = frozenset({S.JOB_FINISHED, S.FAILED, S.USER_KILLED})
#: Jobs a launcher may start right away.
RUNNABLE_STATES: frozenset[JobState] = frozenset({S.PREPROCESSED, S.RESTART_READY})
#: Jobs a launcher can advance itself (stage in, preprocess) and then run.
LAUNCHER_CLAIMABLE_STATES: frozenset[JobState] = frozenset(
    {S.READY, S.STAGED_IN, S.PREPROCESSED, S.RESTART_READY}
)
#: States after a run in which a job waits only when a launcher's step remains (postprocess,
#: an error or timeout handler, stage-out): any launcher takes such a job on when nobody holds it.
PROCESSING_STATES: frozenset[JobState] = frozenset(
    {S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.POSTPROCESSED}
)
#: Jobs that are still on their way (the backlog).
ACTIVE_STATES: frozenset[JobState] = frozenset(set(JobState) - TERMINAL_STATES)
#: States a user may set (``update_state``, ``balsam modify ID state S``, a job's own pre- or
#: postprocess through the API): every state Balsam 0.5 accepted but the two only Balsam can
#: enter — RUNNING (a launcher starts the run) and AWAITING_PARENTS (a job waits for its
#: parents by itself; CREATED checks them again). See :func:`validate_user_move`.
USER_SETTABLE_STATES: frozenset[JobState] = frozenset(
    set(JobState) - {S.RUNNING, S.AWAITING_PARENTS}
)
#: What a user may do to a running job: stop it for good (its launcher kills the run).
USER_MOVES_OF_A_RUN: frozenset[JobState] = frozenset({S.USER_KILLED, S.FAILED, S.JOB_FINISHED})


class TransitionError(ValueError):
    """A state change that the transition table does not allow."""


def parse_state(text: str) -> JobState:
    """Return the state named ``text`` (case-insensitive) or raise ValueError."""
    try:
        return JobState(text.strip().upper())
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise ValueError(f"unknown job state {text!r} (one of: {names})") from None


def validate_transition(current: JobState, new: JobState) -> None:
    """Raise :class:`TransitionError` unless ``current -> new`` is in :data:`TRANSITIONS`."""
    if new not in TRANSITIONS[current]:
        raise TransitionError(f"cannot move a job from {current} to {new}")


def validate_user_move(current: JobState, new: JobState) -> None:
    """Raise :class:`TransitionError` unless a user may move a job from ``current`` to ``new``.

    Balsam 0.5 let users set any state; the moves refused here are those that cannot
    happen: into RUNNING or AWAITING_PARENTS (Balsam's own), a running job anywhere but to
    an end (its process runs on until a launcher stops it), and a job to the state it is in.
    Everything else is allowed, resets to CREATED included, and the history keeps the move.
    """
    if new not in USER_SETTABLE_STATES:
        why = "a launcher starts runs" if new is S.RUNNING else "set CREATED to check parents"
        raise TransitionError(f"a user cannot move a job to {new} ({why})")
    if current is new:
        raise TransitionError(f"the job is {current} already")
    if current is S.RUNNING and new not in USER_MOVES_OF_A_RUN:
        allowed = ", ".join(sorted(USER_MOVES_OF_A_RUN))
        raise TransitionError(f"a RUNNING job can only be moved to an end ({allowed})")


@dataclass(frozen=True)
class JobFacts:
    """What the fast-forward needs to know about a job to skip empty steps."""

    has_unfinished_parents: bool = False
    has_failed_parents: bool = False
    needs_stage_in: bool = False
    needs_preprocess: bool = False
    needs_postprocess: bool = False
    needs_stage_out: bool = False
    handles_error: bool = False
    handles_timeout: bool = False
    retries_left: bool = False
    timeout_retries_left: bool = False


class JobStep(StrEnum):
    """Work a launcher does for a job waiting in a state (see :func:`pending_step`)."""

    STAGE_IN = "stage in"
    PREPROCESS = "preprocess"
    RUN = "run"
    POSTPROCESS = "postprocess"
    STAGE_OUT = "stage out"


def pending_step(state: JobState, facts: JobFacts) -> JobStep | None:
    """The launcher's step for a job that waits in ``state``, or None when it has none.

    The one place that says which steps a job still needs: :func:`next_automatic_state`
    moves a job on by itself exactly where this says there is nothing to do, and a launcher
    does the step this names (a postprocess in RUN_ERROR or RUN_TIMEOUT is the app's handler).
    """
    match state:
        case S.READY:
            return JobStep.STAGE_IN if facts.needs_stage_in else None
        case S.STAGED_IN:
            return JobStep.PREPROCESS if facts.needs_preprocess else None
        case S.PREPROCESSED | S.RESTART_READY:
            return JobStep.RUN
        case S.RUN_DONE:
            return JobStep.POSTPROCESS if facts.needs_postprocess else None
        case S.RUN_ERROR:
            return JobStep.POSTPROCESS if facts.handles_error else None
        case S.RUN_TIMEOUT:
            return JobStep.POSTPROCESS if facts.handles_timeout else None
        case S.POSTPROCESSED:
            return JobStep.STAGE_OUT if facts.needs_stage_out else None
        case _:
            return None


def settled(state: JobState, facts: JobFacts) -> JobState:
    """Where a job that arrives in ``state`` comes to rest (after :func:`fast_forward`)."""
    path = fast_forward(state, facts)
    return path[-1] if path else state


class JobLike(Protocol):
    """The fields of a job that its facts come from (a stored row or an output model)."""

    @property
    def wait_for_parents(self) -> bool: ...
    @property
    def stage_in_url(self) -> str: ...
    @property
    def input_files(self) -> str: ...
    @property
    def stage_out_url(self) -> str: ...
    @property
    def stage_out_files(self) -> str: ...
    @property
    def post_error_handler(self) -> bool: ...
    @property
    def post_timeout_handler(self) -> bool: ...
    @property
    def auto_timeout_retry(self) -> bool: ...
    @property
    def error_count(self) -> int: ...
    @property
    def timeout_count(self) -> int: ...
    @property
    def max_error_retries(self) -> int: ...
    @property
    def max_timeout_retries(self) -> int: ...


class AppLike(Protocol):
    """The fields of an app that a job's facts come from."""

    @property
    def preprocess(self) -> str: ...
    @property
    def postprocess(self) -> str: ...


def job_facts(
    job: JobLike, app: AppLike | None, parent_states: Sequence[str], has_parents: bool
) -> JobFacts:
    """What the state machine needs to know of ``job`` (running ``app``).

    ``parent_states`` are the parents' states where they matter (the early states);
    ``has_parents`` says whether it has any (inputs are staged in from parents).
    """
    waits = job.wait_for_parents
    return JobFacts(
        has_unfinished_parents=waits and any(s != S.JOB_FINISHED for s in parent_states),
        has_failed_parents=waits and any(s in (S.FAILED, S.USER_KILLED) for s in parent_states),
        needs_stage_in=bool(job.stage_in_url) or (has_parents and bool(job.input_files)),
        needs_preprocess=bool(app and app.preprocess),
        needs_postprocess=bool(app and app.postprocess),
        needs_stage_out=bool(job.stage_out_url and job.stage_out_files),
        handles_error=bool(job.post_error_handler and app and app.postprocess),
        handles_timeout=bool(job.post_timeout_handler and app and app.postprocess),
        retries_left=job.error_count <= job.max_error_retries,
        timeout_retries_left=job.auto_timeout_retry
        and job.timeout_count <= job.max_timeout_retries,
    )


def next_automatic_state(state: JobState, facts: JobFacts) -> JobState | None:
    """The state a job moves on to by itself from ``state``, or None if it must wait here."""
    match state:
        case S.CREATED | S.AWAITING_PARENTS:
            if facts.has_failed_parents:
                return S.FAILED
            if facts.has_unfinished_parents:
                return S.AWAITING_PARENTS if state is S.CREATED else None
            return S.READY
        case S.READY:
            return None if facts.needs_stage_in else S.STAGED_IN
        case S.STAGED_IN:
            return None if facts.needs_preprocess else S.PREPROCESSED
        case S.RUN_DONE:
            return None if facts.needs_postprocess else S.POSTPROCESSED
        case S.POSTPROCESSED:
            return None if facts.needs_stage_out else S.JOB_FINISHED
        case S.RUN_ERROR:
            if facts.handles_error:
                return None
            return S.RESTART_READY if facts.retries_left else S.FAILED
        case S.RUN_TIMEOUT:
            if facts.handles_timeout:
                return None
            return S.RESTART_READY if facts.timeout_retries_left else S.FAILED
        case _:
            return None


def fast_forward(state: JobState, facts: JobFacts) -> list[JobState]:
    """The chain of states a job passes through by itself after arriving in ``state``.

    Each hop is a valid transition; the list is empty when the job must wait in ``state``.
    """
    path: list[JobState] = []
    current = state
    while (nxt := next_automatic_state(current, facts)) is not None:
        validate_transition(current, nxt)
        path.append(nxt)
        current = nxt
    return path


def names(states: Iterable[JobState]) -> list[str]:
    """The sorted string values of ``states`` (for queries and messages)."""
    return sorted(s.value for s in states)

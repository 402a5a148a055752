"""The state machine as data: transitions, fast-forward, parsing."""

from __future__ import annotations

import ast
import itertools
from collections import Counter
from pathlib import Path

import pytest

import balsam.domain.states as states_module
from balsam.domain.states import (
    TERMINAL_STATES,
    TRANSITIONS,
    JobFacts,
    JobState,
    TransitionError,
    fast_forward,
    parse_state,
    validate_transition,
)

S = JobState


def member_docstrings() -> dict[str, str | None]:
    """Each JobState member assigned in the source, with the string literal right after it.

    An enum member's ``__doc__`` falls back to the class docstring, so it cannot tell whether
    a member has a docstring of its own: the source is read instead.
    """
    tree = ast.parse(Path(states_module.__file__ or "").read_text())
    (cls,) = (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "JobState")
    docs: dict[str, str | None] = {}
    for stmt, after in itertools.zip_longest(cls.body, cls.body[1:]):
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            docs[stmt.targets[0].id] = string_literal(after)
    return docs


def string_literal(stmt: ast.stmt | None) -> str | None:
    """The text of ``stmt`` when it is a bare string expression (a docstring), else None."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        value = stmt.value.value
        return value.strip() if isinstance(value, str) else None
    return None


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(JobState)


def test_every_state_has_a_docstring_of_its_own() -> None:
    docs = member_docstrings()
    assert sorted(docs) == sorted(JobState.__members__)
    undocumented = sorted(name for name, doc in docs.items() if not doc)
    assert undocumented == [], f"members without a docstring: {undocumented}"
    texts = Counter(doc for doc in docs.values() if doc)
    shared = sorted(doc for doc, n in texts.items() if n > 1)
    assert shared == [], f"docstrings shared by several members: {shared}"


def test_quick_start_path_is_allowed() -> None:
    path = [
        S.CREATED,
        S.READY,
        S.STAGED_IN,
        S.PREPROCESSED,
        S.RUNNING,
        S.RUN_DONE,
        S.POSTPROCESSED,
        S.JOB_FINISHED,
    ]
    for old, new in itertools.pairwise(path):
        validate_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.CREATED, S.RUNNING),
        (S.JOB_FINISHED, S.RUNNING),
        (S.RUN_DONE, S.PREPROCESSED),
        (S.USER_KILLED, S.JOB_FINISHED),
    ],
)
def test_illegal_moves_are_refused(old: JobState, new: JobState) -> None:
    with pytest.raises(TransitionError, match=f"from {old} to {new}"):
        validate_transition(old, new)


def test_terminal_states_only_leave_by_reset() -> None:
    for state in TERMINAL_STATES:
        assert TRANSITIONS[state] <= {S.READY, S.RESTART_READY}


def test_new_job_without_work_fast_forwards_to_preprocessed() -> None:
    assert fast_forward(S.CREATED, JobFacts()) == [S.READY, S.STAGED_IN, S.PREPROCESSED]


def test_new_job_with_unfinished_parent_waits() -> None:
    assert fast_forward(S.CREATED, JobFacts(has_unfinished_parents=True)) == [S.AWAITING_PARENTS]
    assert fast_forward(S.AWAITING_PARENTS, JobFacts(has_unfinished_parents=True)) == []


def test_failed_parent_fails_child() -> None:
    facts = JobFacts(has_unfinished_parents=True, has_failed_parents=True)
    assert fast_forward(S.AWAITING_PARENTS, facts) == [S.FAILED]


def test_steps_with_work_stop_the_fast_forward() -> None:
    assert fast_forward(S.CREATED, JobFacts(needs_stage_in=True)) == [S.READY]
    assert fast_forward(S.CREATED, JobFacts(needs_preprocess=True)) == [S.READY, S.STAGED_IN]
    assert fast_forward(S.RUN_DONE, JobFacts(needs_postprocess=True)) == []
    assert fast_forward(S.RUN_DONE, JobFacts()) == [S.POSTPROCESSED, S.JOB_FINISHED]
    assert fast_forward(S.RUN_DONE, JobFacts(needs_stage_out=True)) == [S.POSTPROCESSED]


def test_run_error_retries_while_allowed_then_fails() -> None:
    assert fast_forward(S.RUN_ERROR, JobFacts(retries_left=True)) == [S.RESTART_READY]
    assert fast_forward(S.RUN_ERROR, JobFacts(retries_left=False)) == [S.FAILED]
    assert fast_forward(S.RUN_ERROR, JobFacts(handles_error=True)) == []


def test_timeout_restarts_when_allowed() -> None:
    assert fast_forward(S.RUN_TIMEOUT, JobFacts(timeout_retries_left=True)) == [S.RESTART_READY]
    assert fast_forward(S.RUN_TIMEOUT, JobFacts()) == [S.FAILED]


def test_parse_state_is_case_insensitive_and_rejects_unknown() -> None:
    assert parse_state(" job_finished ") is S.JOB_FINISHED
    with pytest.raises(ValueError, match="unknown job state 'DONE'"):
        parse_state("DONE")


def test_claim_predicate_names_exactly_the_claimable_states() -> None:
    """The literal SQL of the claim index must list the domain's claimable states."""
    from balsam.domain.states import LAUNCHER_CLAIMABLE_STATES
    from balsam.store.tables import CLAIMABLE_PREDICATE

    listed = CLAIMABLE_PREDICATE.split("IN (")[1].rstrip(")").replace("'", "").split(", ")
    assert sorted(listed) == sorted(s.value for s in LAUNCHER_CLAIMABLE_STATES)

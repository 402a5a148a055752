"""Lookups into JSON fields (``data__key``, ``data__key__gt``, ...) on every backend.

Balsam 0.5 scripts select jobs by what they keep in ``data`` (Django's JSON lookups). A key is
compared only with values of its own JSON kind, the same on SQLite, PostgreSQL and the fake:
a number with numbers, a text with texts, a boolean with booleans.
"""

from __future__ import annotations

from typing import Any

import pytest

from balsam.backends.base import Backend
from balsam.errors import ValidationError
from balsam.schemas import AppCreate, JobCreate, JobQuery
from balsam.schemas.queries import clause_from_kwargs

DATA: dict[str, dict[str, Any]] = {
    "three": {"n": 3, "s": "abc", "ok": True},
    "half": {"n": 1.5, "s": "xyz", "ok": False, "run": {"step": 2}},
    "text": {"n": "3", "s": 5, "ok": None},
    "empty": {},
}


@pytest.fixture
def jobs(backend: Backend) -> Backend:
    backend.create_app(AppCreate(name="A", executable="true"))
    backend.create_jobs(
        [JobCreate(name=n, workflow="w", application="A", data=d) for n, d in DATA.items()]
    )
    return backend


def names(backend: Backend, **lookups: Any) -> set[str]:
    query = JobQuery(clauses=[clause_from_kwargs(lookups)])
    return {job.name for job in backend.query_jobs(query)}


@pytest.mark.parametrize(
    ("lookups", "expected"),
    [
        ({"data__n": 3}, {"three"}),
        ({"data__n": "3"}, {"text"}),
        ({"data__n__gt": 1}, {"three", "half"}),
        ({"data__n__lte": 1.5}, {"half"}),
        ({"data__n__gte": 1.5, "data__n__lt": 3}, {"half"}),
        ({"data__s": "abc"}, {"three"}),
        ({"data__s__startswith": "x"}, {"half"}),
        ({"data__s__icontains": "B"}, {"three"}),
        ({"data__s__endswith": "z"}, {"half"}),
        ({"data__ok": True}, {"three"}),
        ({"data__ok": False}, {"half"}),
        ({"data__ok__isnull": True}, {"text", "empty"}),
        ({"data__ok__isnull": False}, {"three", "half"}),
        ({"data__n": None}, {"empty"}),
        ({"data__run__step": 2}, {"half"}),
        ({"data__run__step__gt": 5}, set()),
        ({"data__s__in": ["abc", 5]}, {"three", "text"}),
        ({"data__missing": 1}, set()),
    ],
)
def test_json_key_lookups(jobs: Backend, lookups: dict[str, Any], expected: set[str]) -> None:
    assert names(jobs, **lookups) == expected


def test_a_key_lookup_excluded(jobs: Backend) -> None:
    clause = clause_from_kwargs({"data__n__gt": 2}, negate=True)
    found = {j.name for j in jobs.query_jobs(JobQuery(clauses=[clause]))}
    # SQL's NOT of an unknown (no number there) is unknown: only half is not above 2.
    assert found == {"half"}


@pytest.mark.parametrize(
    ("lookups", "message"),
    [
        ({"data__n__gt": "a"}, "compares numbers"),
        ({"data__s__contains": 5}, "matches text"),
        ({"data__n": [1]}, "compares a text, a number"),
        ({"name__x": 1}, "unknown field"),
    ],
)
def test_bad_key_lookups_are_refused(jobs: Backend, lookups: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        names(jobs, **lookups)

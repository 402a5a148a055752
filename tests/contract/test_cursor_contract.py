"""Keyset pages (``JobQuery.after``, ``cursor_after``) on every backend: the pages of a query
are its whole answer, in its order, with no job twice or missing, also across ties (a bulk
create gives every job of one call the same ``created_at``) and while jobs are added."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError as PydanticValidationError

from balsam.backends.base import Backend
from balsam.errors import ValidationError
from balsam.schemas import AppCreate, JobCreate, JobQuery
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import clause_from_kwargs, cursor_after


def _pages(backend: Backend, query: JobQuery, size: int) -> list[list[JobOut]]:
    pages: list[list[JobOut]] = []
    page_query = query.model_copy(update={"limit": size})
    while True:
        page = backend.query_jobs(page_query)
        if not page:
            return pages
        pages.append(page)
        page_query = page_query.model_copy(update={"after": cursor_after(query, page[-1])})


def _fill(backend: Backend) -> None:
    backend.create_app(AppCreate(name="A", executable="true"))
    for batch in range(3):
        backend.bulk_create_jobs(
            JobCreate(name=f"j{batch}-{i:02d}", workflow=f"w{i % 2}", application="A",
                      num_nodes=1 + i % 3)
            for i in range(9)
        )  # fmt: skip


@pytest.mark.parametrize(
    "order_by",
    [[], ["-created_at"], ["num_nodes"], ["-num_nodes", "name"], ["workflow", "-job_id"]],
)
def test_the_pages_are_the_whole_answer_in_order(backend: Backend, order_by: list[str]) -> None:
    _fill(backend)
    query = JobQuery(order_by=order_by)
    whole = [j.job_id for j in backend.query_jobs(query)]
    assert len(whole) == 27
    pages = _pages(backend, query, 4)
    assert [len(p) for p in pages] == [4] * 6 + [3]
    assert [j.job_id for page in pages for j in page] == whole


def test_pages_of_a_filtered_query(backend: Backend) -> None:
    _fill(backend)
    query = JobQuery(clauses=[clause_from_kwargs({"workflow": "w1"})], order_by=["name"])
    paged = [j.name for page in _pages(backend, query, 5) for j in page]
    assert paged == sorted(j.name for j in backend.query_jobs(query))
    assert len(paged) == 12


def test_jobs_added_meanwhile_come_on_a_later_page_and_none_repeat(backend: Backend) -> None:
    _fill(backend)
    query = JobQuery()
    first = backend.query_jobs(query.model_copy(update={"limit": 10}))
    backend.create_jobs([JobCreate(name="late", workflow="w0", application="A")])
    rest = backend.query_jobs(query.model_copy(update={"after": cursor_after(query, first[-1])}))
    names = [j.name for j in first + rest]
    assert len(names) == len(set(names)) == 28 and names[-1] == "late"


def test_bad_cursors_are_refused(backend: Backend) -> None:
    _fill(backend)
    (job,) = backend.query_jobs(JobQuery(limit=1))
    cursor = cursor_after(JobQuery(), job)
    with pytest.raises(ValidationError, match="not a job cursor"):
        backend.query_jobs(JobQuery(after="%%%"))
    with pytest.raises(ValidationError, match="not one of this query's order"):
        backend.query_jobs(JobQuery(order_by=["name"], after=cursor))
    # A field SQL may hold NULL in orders its empty values apart: no cursor over it.
    by_code = JobQuery(order_by=["return_code"])
    with pytest.raises(ValidationError, match="may be empty"):
        cursor_after(by_code, job)
    made_up = cursor_after(by_code, SimpleNamespace(return_code=0, job_id=job.job_id))
    with pytest.raises(ValidationError, match="may be empty"):
        backend.query_jobs(by_code.model_copy(update={"after": made_up}))
    with pytest.raises(PydanticValidationError, match="cursor"):
        JobQuery(after=cursor, offset=3)

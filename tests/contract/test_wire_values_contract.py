"""Values that change type on the wire: a datetime in a query travels to the edge service as
ISO 8601 text, and must select the same jobs as on a local backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from balsam.backends.base import Backend
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import Clause, Condition, JobQuery, Lookup


def _since(when: datetime, lookup: Lookup = Lookup.GT) -> JobQuery:
    condition = Condition(field="created_at", lookup=lookup, value=when)
    return JobQuery(clauses=[Clause(conditions=[condition])])


def test_a_time_in_a_query_selects_the_same_jobs(backend: Backend) -> None:
    backend.create_app(AppCreate(name="a", executable="echo"))
    (job,) = backend.create_jobs([JobCreate(workflow="w", application="a", name="x")])
    hour = timedelta(hours=1)
    assert [j.job_id for j in backend.query_jobs(_since(job.created_at - hour))] == [job.job_id]
    assert backend.query_jobs(_since(job.created_at + hour)) == []
    assert backend.count_jobs(_since(job.created_at + hour, Lookup.LT)) == 1
    assert backend.count_jobs(_since(datetime.now(UTC) + hour)) == 0

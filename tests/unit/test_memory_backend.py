"""What the in-memory fake does beyond the contract suite: it keeps to the SQL schema, fails
loudly where it cannot be the SQL backend, hands out copies, and serialises threads."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import JSON, Boolean, Integer, String, Table

import balsam.testing
from balsam.domain.states import LAUNCHER_CLAIMABLE_STATES, PROCESSING_STATES, JobState
from balsam.errors import DatabaseError, InvalidTransition, NotFound, ValidationError
from balsam.schemas import AppCreate, ClaimRequest, JobCreate, JobQuery, StateUpdate
from balsam.schemas.queries import Clause, Condition, Lookup, clause_from_kwargs
from balsam.services import creation
from balsam.store import tables
from balsam.testing import MemoryBackend, memcreate
from balsam.testing.memapps import APP_COLUMNS
from balsam.testing.memjobs import JOB_COLUMNS
from balsam.testing.memquery import Column, Kind, columns_of_record
from balsam.testing.memstore import SessionRecord

S = JobState


def q(**kwargs: object) -> JobQuery:
    return JobQuery(clauses=[clause_from_kwargs(kwargs)])


def unchecked(**kwargs: object) -> JobQuery:
    """A query of exact conditions built without the schema's checks."""
    conditions = [
        Condition.model_construct(field=k, lookup=Lookup.EXACT, value=v) for k, v in kwargs.items()
    ]
    return JobQuery(clauses=[Clause.model_construct(conditions=conditions, negate=False)])


def spec(name: str, **fields: Any) -> JobCreate:
    return JobCreate(name=name, workflow="w", application="A", **fields)


@pytest.fixture
def backend() -> MemoryBackend:
    be = MemoryBackend()
    be.create_app(AppCreate(name="A", executable="true"))
    return be


@pytest.fixture
def job_id(backend: MemoryBackend) -> str:
    (job,) = backend.create_jobs(
        [spec("x", description="Éclair", data={"a": [1, 2]}, tags={"k": "v"})]
    )
    return job.job_id


# --- the package ----------------------------------------------------------------------------


def test_public_names() -> None:
    assert balsam.testing.__all__ == ["MemoryBackend", "MemoryScheduler"]
    assert balsam.testing.MemoryBackend is MemoryBackend


def test_the_fake_imports_nothing_of_the_sql_backend() -> None:
    code = (
        "import sys, balsam.testing\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'"
        " or m.startswith(('balsam.store', 'balsam.services'))]\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def _sql_columns(table: Table) -> dict[str, Column]:
    kinds = ((JSON, Kind.JSON), (Boolean, Kind.BOOL), (Integer, Kind.INT), (String, Kind.TEXT))
    found = {}
    for col in table.columns:
        if isinstance(col.type, tables.UTCDateTime):
            kind = Kind.DATETIME
        else:
            kind = next(k for t, k in kinds if isinstance(col.type, t))
        found[col.name] = Column(kind, bool(col.nullable) and not col.primary_key)
    return found


@pytest.mark.parametrize(
    ("fake", "table"),
    [
        (JOB_COLUMNS, tables.JOBS),
        (APP_COLUMNS, tables.AppRow.__table__),
        (columns_of_record(SessionRecord), tables.SessionRow.__table__),
    ],
)
def test_records_have_the_columns_of_the_sql_tables(fake: dict[str, Column], table: Table) -> None:
    assert fake == _sql_columns(table)


def test_constants_follow_the_sql_backend() -> None:
    assert memcreate.CHUNK == creation.CHUNK
    assert memcreate.working_directory("w", "n", "0123456789") == creation.working_directory(
        "w", "n", "0123456789"
    )
    for states, predicate in (
        (LAUNCHER_CLAIMABLE_STATES, tables.CLAIMABLE_PREDICATE),
        (PROCESSING_STATES, tables.PROCESSING_PREDICATE),
    ):
        listed = predicate.split("IN (")[1].rstrip(")").replace("'", "").split(", ")
        assert set(listed) == {s.value for s in states}


# --- failing loudly -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "error", "match"),
    [
        (q(nosuch=1), ValidationError, "unknown field 'nosuch'"),
        (q(_sa_instance_state=1), ValidationError, "unknown field"),
        (q(parents="x"), ValidationError, "unknown field 'parents'"),
        (q(data__contains="a"), ValidationError, "JSON field 'data'"),
        (JobQuery(order_by=["-nosuch"]), ValidationError, "unknown field 'nosuch'"),
        (q(name=5), NotImplementedError, "text field 'name' with int"),
        (q(num_nodes="2"), NotImplementedError, "integer field 'num_nodes' with str"),
        (q(num_nodes=True), NotImplementedError, "with bool"),
        (q(wait_for_parents=1), NotImplementedError, "boolean field"),
        (q(num_nodes=2**40), NotImplementedError, "num_nodes"),
        (q(num_nodes__contains="1"), NotImplementedError, "contains on integer"),
        (q(description__icontains="é"), NotImplementedError, "folds"),
        (q(name__in=["x", 3]), NotImplementedError, "with int"),
        # Refused by the query schema first; built past it, the fake refuses it too.
        (unchecked(description="a\x00b"), NotImplementedError, "NUL"),
        (JobQuery(order_by=["data"]), NotImplementedError, "ordering by JSON"),
        (JobQuery(limit=-1), NotImplementedError, "negative"),
        (q(created_at__gt="2024-01-01"), DatabaseError, "created_at"),
        (q(created_at__contains="2024"), DatabaseError, "created_at"),
        (q(return_code__gt=None), DatabaseError, "return_code"),
        (q(post_error_handler__lt=True), DatabaseError, "post_error_handler"),
    ],
)
def test_queries_the_fake_cannot_answer_as_sql_does_raise(
    backend: MemoryBackend, job_id: str, query: JobQuery, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        backend.query_jobs(query)


def test_queries_both_databases_answer_alike_are_answered(
    backend: MemoryBackend, job_id: str
) -> None:
    found = lambda query: [j.job_id for j in backend.query_jobs(query)]  # noqa: E731
    assert found(q(description__icontains="CLAIR")) == [job_id]
    assert found(q(num_nodes=1.0)) == [job_id]
    assert found(q(created_at__gt=datetime(2000, 1, 1))) == [job_id]  # naive: taken as UTC
    assert found(JobQuery(clauses=[clause_from_kwargs({"return_code": 0}, negate=True)])) == []
    assert found(q(return_code__in=[None])) == []
    assert found(JobQuery(order_by=["return_code"])) == [job_id]  # all NULL: no question


def test_ordering_where_the_databases_put_nulls_apart_is_refused(backend: MemoryBackend) -> None:
    first, _ = backend.create_jobs([spec("a"), spec("b")])
    sess = backend.open_session("t", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest(job_ids=[first.job_id]))
    backend.record_updates(sess.id, [StateUpdate(job_id=first.job_id, state=S.RUNNING)])
    with pytest.raises(NotImplementedError, match="NULLs"):
        backend.query_jobs(JobQuery(order_by=["-session_id"]))
    # A count never orders.
    assert backend.count_jobs(JobQuery(order_by=["-session_id", "nosuch"])) == 2


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"description": "a\x00b"}, NotImplementedError, "NUL"),
        ({"data": {"x": math.nan}}, NotImplementedError, "NaN"),
        ({"data": {"x": {1, 2}}}, TypeError, "not JSON serializable"),
    ],
)
def test_jobs_postgresql_cannot_store_are_refused_and_nothing_is_made(
    backend: MemoryBackend, fields: dict[str, Any], error: type[Exception], match: str
) -> None:
    # The schema refuses them where they enter; a spec that skipped it is refused here too.
    with pytest.raises(PydanticValidationError):
        spec("bad", **fields)
    unchecked = spec("bad").model_copy(update=fields)
    with pytest.raises(error, match=match):
        backend.create_jobs([spec("ok"), unchecked])
    assert backend.count_jobs(JobQuery()) == 0


def test_an_update_postgresql_cannot_store_is_refused_whole(
    backend: MemoryBackend, job_id: str
) -> None:
    sess = backend.open_session("t", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest())
    updates = [
        StateUpdate(job_id=job_id, state=S.RUNNING),
        StateUpdate(job_id=job_id, state=S.RUN_DONE, return_code=2**40),
    ]
    with pytest.raises(NotImplementedError, match="return_code"):
        backend.record_updates(sess.id, updates)
    assert backend.get_job(job_id).state is S.PREPROCESSED
    with pytest.raises(NotImplementedError, match="client_key"):
        backend.open_session("t", "h", 1, client_key="k" * 65)
    # Data that is not JSON is refused by the job's validation, as on both databases.
    with pytest.raises(ValidationError, match="data is not JSON"):
        backend.update_jobs(JobQuery(), {"data": {"x": {1}}})


def test_a_request_field_the_fake_does_not_know_is_refused(backend: MemoryBackend) -> None:
    class NewerClaim(ClaimRequest):
        priority: int = 0

    sess = backend.open_session("t", "h", 1)
    assert backend.claim_jobs(sess.id, NewerClaim()) == []
    with pytest.raises(NotImplementedError, match=r"NewerClaim\.priority"):
        backend.claim_jobs(sess.id, NewerClaim(priority=3))


def test_a_state_given_as_text_is_validated_as_one(backend: MemoryBackend, job_id: str) -> None:
    with pytest.raises(InvalidTransition, match="already"):
        backend.set_state(job_id, "PREPROCESSED")  # type: ignore[arg-type]
    backend.kill_jobs(job_id)
    backend.set_state(job_id, "READY")  # type: ignore[arg-type]
    assert backend.get_job(job_id).state is S.PREPROCESSED


def test_a_call_from_inside_a_call_is_refused_not_deadlocked(backend: MemoryBackend) -> None:
    def specs() -> Any:
        yield spec("a")
        backend.count_jobs(JobQuery())
        yield spec("b")

    with pytest.raises(NotImplementedError, match="inside one of its own calls"):
        backend.bulk_create_jobs(specs())
    assert backend.count_jobs(JobQuery()) == 0


def test_create_is_all_or_nothing_across_chunks(
    backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memcreate, "CHUNK", 2)
    specs = [spec("a"), spec("b"), spec("c"), JobCreate(name="d", application="Nope")]
    with pytest.raises(NotFound, match="Nope"):
        backend.bulk_create_jobs(specs)
    assert backend.count_jobs(JobQuery()) == 0


# --- copies ---------------------------------------------------------------------------------


def test_returned_jobs_are_copies(backend: MemoryBackend, job_id: str) -> None:
    (child,) = backend.create_jobs([spec("c", parents=[job_id])])
    for out in (backend.get_job(child.job_id), backend.query_jobs(JobQuery())[1], child):
        out.data["new"] = 1
        out.tags["k"] = "changed"
        out.environ_vars["X"] = "1"
        out.parents.append("someone")
        out.state = S.FAILED
    again = backend.get_job(child.job_id)
    assert (again.data, again.tags, again.environ_vars) == ({}, {}, {})
    assert again.parents == [job_id] and again.state is S.AWAITING_PARENTS
    nested = backend.get_job(job_id)
    nested.data["a"].append(3)
    assert backend.get_job(job_id).data == {"a": [1, 2]}


def test_inputs_are_copied_in(backend: MemoryBackend) -> None:
    data: dict[str, Any] = {"a": [1, (2, 3)]}
    new = spec("x", data=data)
    (job,) = backend.create_jobs([new])
    new.data["a"].append(4)
    values: dict[str, Any] = {"data": {"b": [1]}}
    backend.update_jobs(q(job_id=job.job_id), values)
    values["data"]["b"].append(2)
    assert backend.get_job(job.job_id).data == {"b": [1]}


def test_apps_sessions_and_events_are_copies(backend: MemoryBackend, job_id: str) -> None:
    app = backend.get_app("A")
    app.executable = "false"
    backend.list_apps()[0].description = "changed"
    assert backend.get_app("A").model_dump() == {**app.model_dump(), "executable": "true"}
    sess = backend.open_session("t", "h", 1)
    sess.label = "changed"
    assert backend.list_sessions()[0].label == "t"
    event = backend.history(job_id)[0]
    event.message = "changed"
    assert backend.history(job_id)[0].message == "created"
    (result,) = backend.record_updates(sess.id, [StateUpdate(job_id=job_id, state=S.RUNNING)])
    result.state = S.FAILED
    assert backend.get_job(job_id).state is S.PREPROCESSED


# --- time and threads -----------------------------------------------------------------------


def test_times_are_utc_and_naive_update_times_are_taken_as_utc(
    backend: MemoryBackend, job_id: str
) -> None:
    assert backend.get_job(job_id).created_at.tzinfo is UTC
    sess = backend.open_session("t", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest())
    naive = datetime(2030, 1, 2, 3, 4, 5)
    backend.record_updates(sess.id, [StateUpdate(job_id=job_id, state=S.RUNNING, timestamp=naive)])
    assert backend.get_job(job_id).state_timestamp == naive.replace(tzinfo=UTC)
    assert backend.history(job_id)[-1].timestamp == naive.replace(tzinfo=UTC)


def test_threads_claiming_at_once_never_share_a_job(backend: MemoryBackend) -> None:
    backend.create_jobs([spec(f"j{i}") for i in range(200)])
    taken: list[str] = []
    lock = threading.Lock()

    def launcher(pid: int) -> None:
        sess = backend.open_session("t", "h", pid)
        while got := backend.claim_jobs(sess.id, ClaimRequest(limit=3)):
            with lock:
                taken.extend(j.job_id for j in got)

    threads = [threading.Thread(target=launcher, args=(pid,)) for pid in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == len(set(taken)) == 200


def test_closing_keeps_the_backend_usable(backend: MemoryBackend, job_id: str) -> None:
    backend.close()
    assert backend.get_job(job_id).job_id == job_id

"""Jobs, their dependencies and events: viewers read, submitters add and change, owners delete."""

from __future__ import annotations

from fastapi import APIRouter, Request

from balsam.schemas.jobs import BulkCreated, EventOut, JobCreate, JobOut, JobShape
from balsam.schemas.queries import Clause, Condition, JobQuery
from balsam.schemas.remote import Edge, JobValues, KillRequest, Notes, StateChange
from balsam.server.deps import (
    Caller,
    JobChanger,
    Owner,
    Submitter,
    Viewer,
    check_creator,
    check_items,
    check_page,
    not_yours,
)
from balsam.server.responses import CONFLICT, DB_ROUTE

router = APIRouter(prefix="/db/{name}", tags=["jobs"], responses=DB_ROUTE)


@router.post("/jobs", response_model=list[JobOut], responses=CONFLICT)
def create_jobs(caller: JobChanger, request: Request, specs: list[JobCreate]) -> list[JobOut]:
    """Add jobs, all or nothing, as made by the caller."""
    check_items(request, len(specs))
    return caller.backend.create_jobs(made_by(caller, specs))


@router.post("/jobs/bulk", response_model=BulkCreated, responses=CONFLICT)
def bulk_create_jobs(caller: JobChanger, request: Request, specs: list[JobCreate]) -> BulkCreated:
    """Add many jobs, all or nothing, as made by the caller; ids and states only."""
    check_items(request, len(specs))
    return caller.backend.bulk_create_jobs(made_by(caller, specs))


def made_by(caller: Caller, specs: list[JobCreate]) -> list[JobCreate]:
    """``specs`` as made by the caller, whatever their ``created_by`` said."""
    for spec in specs:
        # Assigned, not copied: a bulk create carries up to 20,000 specs, made for this call.
        spec.created_by = caller.user
    return specs


@router.post("/jobs/query", response_model=list[JobOut])
def query_jobs(backend: Viewer, request: Request, query: JobQuery) -> list[JobOut]:
    """Jobs matching the query, at most the server's page of them (``limit`` is required;
    page on with ``after``)."""
    check_page(request, query)
    return backend.query_jobs(query)


@router.post("/jobs/count", response_model=int)
def count_jobs(backend: Viewer, query: JobQuery) -> int:
    """How many jobs match."""
    return backend.count_jobs(query)


@router.post("/jobs/count-by-state", response_model=dict[str, int])
def count_by_state(backend: Viewer, query: JobQuery) -> dict[str, int]:
    """Matching jobs per state."""
    return backend.count_by_state(query)


@router.post("/jobs/shapes", response_model=list[JobShape])
def job_shapes(backend: Viewer, query: JobQuery) -> list[JobShape]:
    """Matching jobs per size."""
    return backend.job_shapes(query)


@router.post("/jobs/update", response_model=int, responses=CONFLICT)
def update_jobs(caller: JobChanger, request: Request, body: JobValues) -> int:
    """Change fields (not the state) of matching jobs (a submitter's: only its own)."""
    if not caller.changes_any_job:
        mine = own_jobs(caller, body.query)
        if caller.backend.count_jobs(mine) != caller.backend.count_jobs(body.query):
            raise not_yours(request, caller)
        return caller.backend.update_jobs(mine, body.values)
    return caller.backend.update_jobs(body.query, body.values)


def own_jobs(caller: Caller, query: JobQuery) -> JobQuery:
    """``query`` narrowed to the jobs the caller made."""
    mine = Clause(conditions=[Condition(field="created_by", value=caller.user)])
    return query.model_copy(update={"clauses": [*query.clauses, mine]})


@router.post("/jobs/delete", response_model=int, responses=CONFLICT)
def delete_jobs(backend: Owner, query: JobQuery) -> int:
    """Delete matching jobs (not running ones)."""
    return backend.delete_jobs(query)


@router.post("/jobs/notes", response_model=int)
def note_jobs(backend: Submitter, request: Request, body: Notes) -> int:
    """Add a message to jobs' histories."""
    check_items(request, len(body.job_ids))
    return backend.note_jobs(body.job_ids, body.message)


@router.get("/job-ids/{prefix}", response_model=str, responses=CONFLICT)
def resolve_job_id(backend: Viewer, prefix: str) -> str:
    """The full id of the one job whose id starts with the prefix."""
    return backend.resolve_job_id(prefix)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(backend: Viewer, job_id: str) -> JobOut:
    """One job by full id."""
    return backend.get_job(job_id)


@router.post("/jobs/{job_id}/state", response_model=JobOut, responses=CONFLICT)
def set_state(backend: Submitter, job_id: str, body: StateChange) -> JobOut:
    """A user's validated state change."""
    return backend.set_state(job_id, body.state, body.message)


@router.post("/jobs/{job_id}/kill", response_model=list[str], responses=CONFLICT)
def kill_jobs(caller: JobChanger, request: Request, job_id: str, body: KillRequest) -> list[str]:
    """Kill a job (and its descendants); a submitter only a job it made."""
    if not caller.changes_any_job:
        check_creator(request, caller, [caller.backend.get_job(job_id).created_by])
    return caller.backend.kill_jobs(job_id, body.recursive)


@router.get("/jobs/{job_id}/children", response_model=list[str])
def children_of(backend: Viewer, job_id: str) -> list[str]:
    """Ids of a job's children."""
    return backend.children_of(job_id)


@router.get("/jobs/{job_id}/history", response_model=list[EventOut])
def history(backend: Viewer, job_id: str) -> list[EventOut]:
    """A job's state changes, oldest first."""
    return backend.history(job_id)


@router.post("/events/query", response_model=list[EventOut])
def events(backend: Viewer, query: JobQuery) -> list[EventOut]:
    """The state changes of every matching job, oldest first."""
    return backend.events(query)


@router.post("/dependencies", response_model=None, responses=CONFLICT)
def add_dependency(caller: JobChanger, request: Request, edge: Edge) -> None:
    """Make the child wait for the parent; a submitter only for a child it made."""
    if not caller.changes_any_job:
        check_creator(request, caller, [caller.backend.get_job(edge.child_id).created_by])
    caller.backend.add_dependency(edge.parent_id, edge.child_id)


@router.post("/dependencies/remove", response_model=None, responses=CONFLICT)
def remove_dependency(caller: JobChanger, request: Request, edge: Edge) -> None:
    """Stop the child waiting for the parent; a submitter only for a child it made."""
    if not caller.changes_any_job:
        check_creator(request, caller, [caller.backend.get_job(edge.child_id).created_by])
    caller.backend.remove_dependency(edge.parent_id, edge.child_id)

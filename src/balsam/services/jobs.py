"""Job use cases: create, query, modify, delete, dependencies, kill, history."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import Engine, Select, delete, func, select
from sqlalchemy.orm import Session

from balsam.domain.states import TERMINAL_STATES, TRANSITIONS, JobState
from balsam.errors import (
    AlreadyExists,
    Ambiguous,
    DependencyError,
    InvalidTransition,
    NotFound,
    ValidationError,
)
from balsam.schemas.jobs import (
    INT_MAX,
    STORED,
    BulkCreated,
    EventOut,
    JobCreate,
    JobFields,
    JobOut,
    JobShape,
)
from balsam.schemas.problems import first_error
from balsam.schemas.queries import JobQuery
from balsam.services.creation import JobMaker, Repeat
from balsam.services.state_engine import StateEngine
from balsam.store import repository as repo
from balsam.store.changes import notify_job_change
from balsam.store.engine import unit_of_work
from balsam.store.queries import apply_job_query, where_sql
from balsam.store.tables import EVENTS, JOBS, EventRow, JobParentRow, JobRow, utcnow

S = JobState


#: The stored fields a JobOut shows (everything but its parents, which are edges).
OUT_FIELDS = tuple(name for name in JobOut.model_fields if name != "parents")
OUT_COLUMNS = tuple(JOBS.c[name] for name in OUT_FIELDS)


def rows_to_out(session: Any, rows: list[JobRow]) -> list[JobOut]:
    """Output models for ORM ``rows``, with their parent ids (one query for all)."""
    return _outs(session, [{name: getattr(row, name) for name in OUT_FIELDS} for row in rows])


def _outs(session: Any, rows: list[dict[str, Any]]) -> list[JobOut]:
    """Output models for stored jobs' values, with their parent ids (one query for all)."""
    parents = repo.parent_ids(session, [row["job_id"] for row in rows])
    return [
        JobOut.model_validate({**row, "parents": parents.get(row["job_id"], [])}, context=STORED)
        for row in rows
    ]


def select_outs() -> Select[Any]:
    """A select of the columns :func:`job_outs` turns into output models."""
    return select(*OUT_COLUMNS)


def job_outs(session: Session, stmt: Select[Any], **changes: Any) -> list[JobOut]:
    """Run ``stmt`` (built on :func:`select_outs`) and return its jobs with their parents.

    Core rows, not ORM objects: reading thousands of jobs (a claim, a listing) skips the
    identity map and attribute instrumentation, which cost more than the query. ``changes``
    are values the caller is writing to these rows in the same transaction.
    """
    rows = [dict(values._mapping, **changes) for values in session.connection().execute(stmt)]
    return _outs(session, rows)


def create_jobs(engine: Engine, specs: Iterable[JobCreate]) -> list[JobOut]:
    """Add jobs (and their parent edges) in one transaction; all or nothing.

    A repeat of a call whose ids the client chose returns the jobs it made (see
    :mod:`balsam.services.creation`).
    """
    with unit_of_work(engine) as session:
        maker = JobMaker(session)
        maker.add(specs)
        ids = list(maker.states)
        found: dict[str, JobOut] = {}
        for start in range(0, len(ids), 500):
            stmt = select_outs().where(JobRow.job_id.in_(ids[start : start + 500]))
            found.update((out.job_id, out) for out in job_outs(session, stmt))
        return [found[job_id] for job_id in ids]


def bulk_create_jobs(engine: Engine, specs: Iterable[JobCreate]) -> BulkCreated:
    """Add many jobs, streamed in chunks, in one transaction; returns their states only.

    For calls of many thousands: nothing per job is kept but its id and state.
    """
    with unit_of_work(engine) as session:
        maker = JobMaker(session)
        maker.add(specs)
        return BulkCreated.model_construct(
            job_ids=list(maker.states),
            states=list(maker.states.values()),
            created_at=maker.now,
            repeated=maker.repeat is Repeat.REPEAT,
        )


def _check_apps(session: Any, specs: list[JobCreate]) -> None:
    names = {s.application for s in specs}
    missing = names - set(repo.apps_by_name(session, names))
    if missing:
        raise NotFound(f"unknown application(s): {', '.join(sorted(missing))}")


def query_jobs(engine: Engine, query: JobQuery) -> list[JobOut]:
    """Jobs matching ``query``."""
    with unit_of_work(engine, write=False) as session:
        return job_outs(session, apply_job_query(select_outs(), query))


def count_jobs(engine: Engine, query: JobQuery) -> int:
    """How many jobs match ``query`` (limit and offset ignored)."""
    with unit_of_work(engine, write=False) as session:
        stmt = select(func.count()).select_from(JobRow).where(where_sql(JobRow, query.clauses))
        return int(session.scalar(stmt) or 0)


def count_by_state(engine: Engine, query: JobQuery) -> dict[str, int]:
    """Number of matching jobs in each state."""
    with unit_of_work(engine, write=False) as session:
        return repo.count_by_state(session, where_sql(JobRow, query.clauses))


def job_shapes(engine: Engine, query: JobQuery) -> list[JobShape]:
    """How many matching jobs ask for each size (nodes, packing, wall time)."""
    with unit_of_work(engine, write=False) as session:
        found = repo.job_shapes(session, where_sql(JobRow, query.clauses))
    return [
        JobShape(num_nodes=n, node_packing_count=p, wall_time_minutes=w, count=c)
        for n, p, w, c in found
    ]


def resolve_job_id(engine: Engine, prefix: str) -> str:
    """The full id of the one job whose id starts with ``prefix``."""
    prefix = prefix.strip()
    if not prefix:
        raise ValidationError("empty job id")
    # Ids are lower-case hex and dashes: nothing else can match (nor reach the driver safely).
    found = [] if not ID_CHARACTERS.issuperset(prefix) else _ids_with_prefix(engine, prefix)
    if not found:
        raise NotFound(f"no job with id {prefix!r}")
    if len(found) > 1:
        raise Ambiguous(f"job id prefix {prefix!r} matches more than one job; give more characters")
    return found[0]


def get_job(engine: Engine, job_id: str) -> JobOut:
    """One job by full id."""
    with unit_of_work(engine, write=False) as session:
        row = session.get(JobRow, job_id)
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return rows_to_out(session, [row])[0]


def update_jobs(engine: Engine, query: JobQuery, values: dict[str, Any]) -> int:
    """Change fields (never the state) of every matching job; each result is validated."""
    if "state" in values:
        raise ValidationError("change the state with set_state (balsam modify ... state X)")
    with unit_of_work(engine) as session:
        # Check the app first: assigning an unknown one would autoflush into an FK error.
        if "application" in values:
            _check_apps(session, [_fake_spec(values["application"])])
        rows = list(session.scalars(apply_job_query(select(JobRow), query)))
        for row in rows:
            _apply_fields(row, values)
        return len(rows)


def _fake_spec(app: str) -> JobCreate:
    return JobCreate.model_construct(application=app)


def _apply_fields(row: JobRow, values: dict[str, Any]) -> None:
    current = {name: getattr(row, name) for name in JobFields.model_fields}
    try:
        checked = JobFields.model_validate({**current, **values})
    except PydanticValidationError as exc:
        raise ValidationError(first_error(exc)) from None
    for name in values:
        setattr(row, name, getattr(checked, name))
    request = checked.resources()
    # Stored in 32-bit columns: a need beyond any node is the same need however big.
    row.cpus_needed = min(INT_MAX, request.cpus_per_node)
    row.gpus_needed = min(INT_MAX, request.gpus_per_node)


def set_state(engine: Engine, job_id: str, state: JobState, message: str = "") -> JobOut:
    """A user's state change (``balsam modify ID state X``), validated."""
    state = S(state)
    with unit_of_work(engine) as session:
        row = _get_row(session, job_id)
        engine_ = StateEngine(session)
        held = row.session_id is not None
        engine_.move(row, state, message or "set by user", keep_hold=held, by_user=True)
        engine_.finish()
        return rows_to_out(session, [row])[0]


def _ids_with_prefix(engine: Engine, prefix: str) -> list[str]:
    with unit_of_work(engine, write=False) as session:
        return repo.ids_with_prefix(session, prefix)


#: What a job id is made of (a UUID's canonical text).
ID_CHARACTERS = frozenset("0123456789abcdef-")


def _get_row(session: Any, job_id: str) -> JobRow:
    row = session.get(JobRow, job_id) if ID_CHARACTERS.issuperset(job_id) else None
    if row is None:
        raise NotFound(f"no job with id {job_id!r}")
    return row  # type: ignore[no-any-return]


def delete_jobs(engine: Engine, query: JobQuery) -> int:
    """Delete matching jobs with their edges and history; running jobs are refused."""
    with unit_of_work(engine) as session:
        ids = list(session.scalars(apply_job_query(select(JobRow.job_id), query)))
        running = (
            session.scalar(
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.job_id.in_(ids), JobRow.state == S.RUNNING)
            )
            if ids
            else 0
        )
        if running:
            raise InvalidTransition(f"{running} of these jobs are RUNNING; kill them first")
        orphans = _orphans_of(session, ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            session.execute(delete(EventRow).where(EventRow.job_id.in_(chunk)))
            session.execute(
                delete(JobParentRow).where(
                    JobParentRow.child_id.in_(chunk) | JobParentRow.parent_id.in_(chunk)
                )
            )
            session.execute(delete(JobRow).where(JobRow.job_id.in_(chunk)))
        _resettle_orphans(session, orphans)
        return len(ids)


def _orphans_of(session: Session, ids: list[str]) -> list[str]:
    """Children of ``ids`` that are not deleted with them and wait for their parents."""
    gone = set(ids)
    children: dict[str, None] = {}
    for _, child in repo.child_edges(session, ids):
        if child not in gone:
            children[child] = None
    return list(children)


def _resettle_orphans(session: Session, child_ids: list[str]) -> None:
    """A job whose unfinished parent was deleted may be free to go now: look again."""
    waiting = [
        row
        for row in repo.jobs_by_id(session, child_ids).values()
        if row.state in (S.CREATED, S.AWAITING_PARENTS)
    ]
    if not waiting:
        return
    engine_ = StateEngine(session)
    now = utcnow()
    for row in waiting:
        engine_.settle(row, now, parent_states=repo.parent_states(session, row.job_id))
    engine_.finish()


def add_dependency(engine: Engine, parent_id: str, child_id: str) -> None:
    """Make ``child_id`` wait for ``parent_id``; refuses self-dependencies and cycles."""
    if parent_id == child_id:
        raise DependencyError("a job cannot depend on itself")
    with unit_of_work(engine) as session:
        rows = repo.jobs_by_id(session, [parent_id, child_id], lock=True)
        for jid in (parent_id, child_id):
            if jid not in rows:
                raise NotFound(f"no job with id {jid!r}")
        if _reaches(session, child_id, parent_id):
            upper, lower = rows[parent_id].name, rows[child_id].name
            raise DependencyError(f"{upper} already depends on {lower}: that makes a cycle")
        if parent_id in repo.parent_ids(session, [child_id]).get(child_id, []):
            raise AlreadyExists("that dependency exists already")
        child = rows[child_id]
        if not _can_gain_parent(child):
            raise InvalidTransition(f"job {child.name} is {child.state}: too late to add a parent")
        repo.add_edges(session, [(parent_id, child_id)])
        _rewait(session, child, rows[parent_id])


def remove_dependency(engine: Engine, parent_id: str, child_id: str) -> None:
    """Stop ``child_id`` waiting for ``parent_id``; a child left waiting for nothing more
    moves on (READY, and on through the steps it has nothing to do for)."""
    with unit_of_work(engine) as session:
        child = repo.jobs_by_id(session, [child_id], lock=True).get(child_id)
        if child is None:
            raise NotFound(f"no job with id {child_id!r}")
        if parent_id not in repo.parent_ids(session, [child_id]).get(child_id, []):
            raise NotFound(f"job {child.name} does not depend on {parent_id[:8]}")
        if not _can_gain_parent(child):
            raise InvalidTransition(f"job {child.name} is {child.state}: too late to drop a parent")
        session.execute(
            delete(JobParentRow).where(
                JobParentRow.parent_id == parent_id, JobParentRow.child_id == child_id
            )
        )
        if child.state == S.AWAITING_PARENTS:
            engine_ = StateEngine(session)
            engine_.settle(child, utcnow())
            engine_.finish()


def _can_gain_parent(child: JobRow) -> bool:
    """A job can wait for a new parent until a launcher holds it."""
    if child.state == S.AWAITING_PARENTS:
        return True
    return child.session_id is None and S.AWAITING_PARENTS in TRANSITIONS[S(child.state)]


def _reaches(session: Any, start: str, target: str) -> bool:
    """True when ``target`` is ``start`` or one of its descendants."""
    seen, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        if node == target:
            return True
        for child in repo.child_ids(session, node):
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return False


def _rewait(session: Any, child: JobRow, parent: JobRow) -> None:
    """A READY child that gains an unfinished parent goes back to waiting."""
    if not child.wait_for_parents or parent.state == S.JOB_FINISHED:
        return
    engine_ = StateEngine(session)
    if parent.state in (S.FAILED, S.USER_KILLED):
        engine_.move(
            child, S.FAILED, f"parent {parent.job_id[:8]} ({parent.name}) ended {parent.state}"
        )
        engine_.finish()
    elif child.state != S.AWAITING_PARENTS:
        engine_.move(child, S.AWAITING_PARENTS, f"new parent {parent.job_id[:8]} ({parent.name})")
        engine_.finish()


def kill_jobs(engine: Engine, job_id: str, recursive: bool = False) -> list[str]:
    """Mark a job (and with ``recursive`` its descendants) USER_KILLED; returns the ids killed."""
    with unit_of_work(engine) as session:
        root = _get_row(session, job_id)
        if root.state in TERMINAL_STATES:
            raise InvalidTransition(f"job {root.name} is already {root.state}")
        targets = [job_id] + (_descendants(session, job_id) if recursive else [])
        engine_ = StateEngine(session)
        killed = []
        for row in repo.jobs_by_id(session, targets).values():
            if row.state not in TERMINAL_STATES:
                held = row.session_id is not None
                engine_.move(row, S.USER_KILLED, "killed by user", keep_hold=held)
                killed.append(row.job_id)
        engine_.finish()
        return killed


def _descendants(session: Any, job_id: str) -> list[str]:
    seen: dict[str, None] = {}
    frontier = [job_id]
    while frontier:
        for child in repo.child_ids(session, frontier.pop()):
            if child not in seen and child != job_id:
                seen[child] = None
                frontier.append(child)
    return list(seen)


def note_jobs(engine: Engine, job_ids: list[str], message: str) -> int:
    """Add ``message`` to the history of each job without changing its state.

    A job whose latest event already says ``message`` gets no second copy, so a launcher that
    reports the same thing every time it starts does not flood the history. Returns how many
    notes were written.
    """
    with unit_of_work(engine) as session:
        rows = repo.jobs_by_id(session, job_ids)
        latest = repo.latest_messages(session, list(rows))
        events = [
            repo.event(jid, row.state, row.state, message)
            for jid, row in rows.items()
            if latest.get(jid) != message
        ]
        repo.add_events(session, events)
        if events:
            notify_job_change(session)
        return len(events)


def history(engine: Engine, job_id: str) -> list[EventOut]:
    """Every state change of one job, oldest first."""
    with unit_of_work(engine, write=False) as session:
        _get_row(session, job_id)
        stmt = select(EventRow).where(EventRow.job_id == job_id).order_by(EventRow.id)
        return [EventOut.model_validate(r) for r in session.scalars(stmt)]


#: The columns an EventOut shows.
EVENT_COLUMNS = tuple(EVENTS.c[name] for name in EventOut.model_fields)


def events(engine: Engine, query: JobQuery) -> list[EventOut]:
    """The state changes of the jobs ``query`` selects, oldest first, in one read.

    Core rows, not ORM objects, as in :func:`job_outs`: ``balsam report`` reads a campaign's
    millions of events through here, and the identity map cost 5x the query.
    """
    with unit_of_work(engine, write=False) as session:
        chosen = apply_job_query(select(JobRow.job_id), query).scalar_subquery()
        stmt = select(*EVENT_COLUMNS).where(EVENTS.c.job_id.in_(chosen)).order_by(EVENTS.c.id)
        rows = session.connection().execute(stmt)
        return [EventOut.model_validate(dict(r._mapping)) for r in rows]


def children_of(engine: Engine, job_id: str) -> list[str]:
    """Ids of jobs that depend on ``job_id``."""
    with unit_of_work(engine, write=False) as session:
        return repo.child_ids(session, job_id)

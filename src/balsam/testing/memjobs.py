"""Job calls of :class:`~balsam.testing.MemoryBackend`, as :mod:`balsam.services.jobs` has them.

Each function is one backend call on a store the caller has locked. A call checks everything
before it changes anything, so a refused call leaves the store as it was (the SQL backend
rolls its transaction back).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from balsam.domain.resources import ResourceRequest
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
    BulkCreated,
    EventOut,
    EventPage,
    JobCreate,
    JobFields,
    JobOut,
    JobShape,
    StreamEvent,
    check_event_limit,
)
from balsam.schemas.problems import first_error
from balsam.schemas.queries import JobQuery
from balsam.testing.memchecks import check_known, check_text, disagree, stored_json
from balsam.testing.memcreate import MemoryJobMaker, Repeat
from balsam.testing.memengine import MemoryStateEngine
from balsam.testing.memquery import Kind, columns_of_record, ordered, ordering, where
from balsam.testing.memstore import CALL_FIELDS, JSON_FIELDS, JobRecord, Store, utcnow

S = JobState
#: The queryable columns of a job: the SQL table's.
JOB_COLUMNS = columns_of_record(JobRecord)
_TEXT_FIELDS = frozenset(name for name, col in JOB_COLUMNS.items() if col.kind is Kind.TEXT)


def create_jobs(store: Store, specs: Iterable[JobCreate]) -> list[JobOut]:
    """Add jobs (and their parent edges); a repeat returns the jobs the first call made."""
    maker = MemoryJobMaker(store)
    maker.add(specs)
    maker.commit()
    return [store.out(store.jobs[job_id]) for job_id in maker.states]


def bulk_create_jobs(store: Store, specs: Iterable[JobCreate]) -> BulkCreated:
    """Add many jobs; returns their ids and states only."""
    maker = MemoryJobMaker(store)
    maker.add(specs)
    maker.commit()
    return BulkCreated(
        job_ids=list(maker.states),
        states=list(maker.states.values()),
        created_at=maker.now,
        repeated=maker.repeat is Repeat.REPEAT,
    )


#: The query fields the fake acts on; a newer one set to anything but its default is refused.
_QUERY_FIELDS = frozenset({"clauses", "order_by", "limit", "offset", "after"})


def matching(store: Store, query: JobQuery) -> list[JobRecord]:
    """Records matching the query's clauses (in insertion order; order and page ignored)."""
    check_known(query, _QUERY_FIELDS)
    test = where(JOB_COLUMNS, query.clauses)
    return [job for job in store.jobs.values() if test(job)]


def paged(store: Store, query: JobQuery) -> list[JobRecord]:
    """Records matching ``query``, ordered and paged."""
    check_known(query, _QUERY_FIELDS)
    test = where(JOB_COLUMNS, query.clauses)
    order = ordering(JOB_COLUMNS, query)
    found = [job for job in store.jobs.values() if test(job)]
    return ordered(found, order, query)


def query_jobs(store: Store, query: JobQuery) -> list[JobOut]:
    """Jobs matching ``query``, ordered and paged."""
    return [store.out(job) for job in paged(store, query)]


def count_by_state(store: Store, query: JobQuery) -> dict[str, int]:
    """Number of matching jobs in each state that has any."""
    counts = Counter(job.state.value for job in matching(store, query))
    return dict(sorted(counts.items()))


def job_shapes(store: Store, query: JobQuery) -> list[JobShape]:
    """Matching jobs per (nodes, packing, wall time), largest first."""
    counts = Counter(
        (job.num_nodes, job.node_packing_count, float(job.wall_time_minutes))
        for job in matching(store, query)
    )
    return [
        JobShape(num_nodes=n, node_packing_count=p, wall_time_minutes=w, count=c)
        for (n, p, w), c in sorted(counts.items(), reverse=True)
    ]


def resolve_job_id(store: Store, prefix: str) -> str:
    """The full id of the one job whose id starts with ``prefix``."""
    prefix = prefix.strip()
    if not prefix:
        raise ValidationError("empty job id")
    found = [job_id for job_id in store.jobs if job_id.startswith(prefix)][:2]
    if not found:
        raise NotFound(f"no job with id {prefix!r}")
    if len(found) > 1:
        raise Ambiguous(f"job id prefix {prefix!r} matches more than one job; give more characters")
    return found[0]


def update_jobs(store: Store, query: JobQuery, values: dict[str, Any]) -> int:
    """Change fields (never the state) of every matching job; each result is validated."""
    if "state" in values:
        raise ValidationError("change the state with set_state (balsam modify ... state X)")
    if "application" in values:
        _check_app(store, values["application"])
    jobs = paged(store, query)
    changes = [_changes(job, values) for job in jobs]
    for job, (new, request) in zip(jobs, changes, strict=True):
        for name, value in new.items():
            setattr(job, name, value)
        job.cpus_needed, job.gpus_needed = request.cpus_per_node, request.gpus_per_node
    return len(jobs)


def _check_app(store: Store, name: Any) -> None:
    if not isinstance(name, str):
        raise disagree(f"application={name!r}", "finds no such app", "refuses the query")
    if name not in store.apps:
        raise NotFound(f"unknown application(s): {name}")


def _changes(job: JobRecord, values: dict[str, Any]) -> tuple[dict[str, Any], ResourceRequest]:
    """The values to store on ``job`` (validated with its other fields), and its request."""
    current = {name: getattr(job, name) for name in JobFields.model_fields}
    try:
        checked = JobFields.model_validate({**current, **values})
    except PydanticValidationError as exc:
        raise ValidationError(first_error(exc)) from None
    new = {name: getattr(checked, name) for name in values}
    for name, value in new.items():
        if name in _TEXT_FIELDS:
            check_text(value, name)
        if name in JSON_FIELDS or (name in CALL_FIELDS and value is not None):
            try:
                new[name] = stored_json(value, name)
            except TypeError as exc:
                raise disagree(
                    f"a non-JSON value in {name} ({exc})", "raises DatabaseError", "TypeError"
                ) from None
    return new, checked.resources()


def set_state(store: Store, job_id: str, state: JobState, message: str = "") -> JobOut:
    """A user's state change, validated."""
    state = S(state)
    check_text(message, "the message")
    job = store.job(job_id)
    engine = MemoryStateEngine(store)
    held = job.session_id is not None
    engine.move(job, state, message or "set by user", keep_hold=held, by_user=True)
    engine.finish()
    return store.out(job)


def delete_jobs(store: Store, query: JobQuery) -> int:
    """Delete matching jobs with their edges and history; running jobs are refused."""
    jobs = paged(store, query)
    running = sum(job.state is S.RUNNING for job in jobs)
    if running:
        raise InvalidTransition(f"{running} of these jobs are RUNNING; kill them first")
    gone = {job.job_id for job in jobs}
    orphans = {c: None for j in jobs for c in store.child_ids(j.job_id) if c not in gone}
    for job in jobs:
        store.remove_job(job.job_id)
    _resettle(store, list(orphans))
    return len(jobs)


def _resettle(store: Store, child_ids: list[str]) -> None:
    """A job whose unfinished parent was deleted may be free to go now: look again."""
    engine = MemoryStateEngine(store)
    for child_id in child_ids:
        child = store.jobs[child_id]
        if child.state in (S.CREATED, S.AWAITING_PARENTS):
            engine.settle(child, utcnow())
    engine.finish()


def add_dependency(store: Store, parent_id: str, child_id: str) -> None:
    """Make ``child_id`` wait for ``parent_id``; refuses self-dependencies and cycles."""
    if parent_id == child_id:
        raise DependencyError("a job cannot depend on itself")
    parent, child = store.job(parent_id), store.job(child_id)
    if _reaches(store, child_id, parent_id):
        raise DependencyError(f"{parent.name} already depends on {child.name}: that makes a cycle")
    if parent_id in store.parents.get(child_id, []):
        raise AlreadyExists("that dependency exists already")
    if not _can_gain_parent(child):
        raise InvalidTransition(f"job {child.name} is {child.state}: too late to add a parent")
    store.add_edge(parent_id, child_id)
    _rewait(store, child, parent)


def remove_dependency(store: Store, parent_id: str, child_id: str) -> None:
    """Stop ``child_id`` waiting for ``parent_id``; a child left waiting for nothing moves on."""
    child = store.job(child_id)
    if parent_id not in store.parents.get(child_id, []):
        raise NotFound(f"job {child.name} does not depend on {parent_id[:8]}")
    if not _can_gain_parent(child):
        raise InvalidTransition(f"job {child.name} is {child.state}: too late to drop a parent")
    store.parents[child_id].remove(parent_id)
    store.children[parent_id].remove(child_id)
    if child.state is S.AWAITING_PARENTS:
        engine = MemoryStateEngine(store)
        engine.settle(child, utcnow())
        engine.finish()


def _can_gain_parent(child: JobRecord) -> bool:
    """A job can wait for a new parent until a launcher holds it."""
    if child.state is S.AWAITING_PARENTS:
        return True
    return child.session_id is None and S.AWAITING_PARENTS in TRANSITIONS[child.state]


def _reaches(store: Store, start: str, target: str) -> bool:
    """True when ``target`` is ``start`` or one of its descendants."""
    seen, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        if node == target:
            return True
        for child in store.child_ids(node):
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return False


def _rewait(store: Store, child: JobRecord, parent: JobRecord) -> None:
    """A READY child that gains an unfinished parent goes back to waiting."""
    if not child.wait_for_parents or parent.state is S.JOB_FINISHED:
        return
    engine = MemoryStateEngine(store)
    if parent.state in (S.FAILED, S.USER_KILLED):
        reason = f"parent {parent.job_id[:8]} ({parent.name}) ended {parent.state}"
        engine.move(child, S.FAILED, reason)
        engine.finish()
    elif child.state is not S.AWAITING_PARENTS:
        engine.move(child, S.AWAITING_PARENTS, f"new parent {parent.job_id[:8]} ({parent.name})")
        engine.finish()


def kill_jobs(store: Store, job_id: str, recursive: bool = False) -> list[str]:
    """Mark a job (and with ``recursive`` its descendants) USER_KILLED; returns the ids killed."""
    root = store.job(job_id)
    if root.state in TERMINAL_STATES:
        raise InvalidTransition(f"job {root.name} is already {root.state}")
    targets = [job_id] + (_descendants(store, job_id) if recursive else [])
    engine = MemoryStateEngine(store)
    killed = []
    # By id: the order SQLite reads rows by key in.
    for target in sorted(targets):
        job = store.jobs[target]
        if job.state not in TERMINAL_STATES:
            held = job.session_id is not None
            engine.move(job, S.USER_KILLED, "killed by user", keep_hold=held)
            killed.append(target)
    engine.finish()
    return killed


def _descendants(store: Store, job_id: str) -> list[str]:
    seen: dict[str, None] = {}
    frontier = [job_id]
    while frontier:
        for child in store.child_ids(frontier.pop()):
            if child not in seen and child != job_id:
                seen[child] = None
                frontier.append(child)
    return list(seen)


def note_jobs(store: Store, job_ids: list[str], message: str) -> int:
    """Add ``message`` to each job's history, state unchanged, unless it is its latest."""
    check_text(message, "the note")
    written = 0
    for job_id in dict.fromkeys(job_ids):
        job = store.jobs.get(job_id)
        events = store.events.get(job_id, [])
        if job is None or (events and events[-1].message == message):
            continue
        store.add_event(job_id, job.state, job.state, message, utcnow())
        written += 1
    return written


def history(store: Store, job_id: str) -> list[EventOut]:
    """Every state change of one job, oldest first."""
    store.job(job_id)
    return store.history(job_id)


def events(store: Store, query: JobQuery) -> list[EventOut]:
    """The state changes of the jobs ``query`` selects, oldest first."""
    found = [e for job in paged(store, query) for e in store.history(job.job_id)]
    return sorted(found, key=lambda e: e.timestamp)


def events_since(store: Store, after: int, limit: int, workflow: str | None) -> EventPage:
    """The events after id ``after`` in id order, as the SQL backends page them: the first
    ``limit`` ids are scanned, those of ``workflow`` (when given) are returned."""
    check_event_limit(limit)
    after = max(0, after)
    scanned = [(i, job_id, e) for i, (job_id, e) in store.event_log.items() if i > after][:limit]
    if not scanned:
        newest = next(reversed(store.event_log), 0)
        return EventPage(cursor=min(after, newest))
    events = [
        StreamEvent(
            id=i,
            job_id=job_id,
            workflow=store.jobs[job_id].workflow,
            timestamp=e.timestamp,
            from_state=e.from_state,
            to_state=e.to_state,
            message=e.message,
        )
        for i, job_id, e in scanned
        if workflow is None or store.jobs[job_id].workflow == workflow
    ]
    return EventPage(events=events, cursor=scanned[-1][0], more=len(scanned) == limit)


def children_of(store: Store, job_id: str) -> list[str]:
    """Ids of jobs that depend on ``job_id``."""
    return store.child_ids(job_id)

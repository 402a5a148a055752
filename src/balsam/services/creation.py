"""Creating jobs at database speed: streamed in chunks, one transaction, all or nothing.

A campaign adds its jobs by the hundred thousand. Building an ORM object and running the
state engine per job cost ~400 µs a job and kept every row alive until the commit; here each
chunk of specs becomes plain tuples handed to the driver in one ``executemany`` per table (jobs,
dependency edges, history), and the chunk is then dropped, so memory stays flat however many
jobs one call makes.

The state a new job starts in is decided as the state engine would (``domain.states``): it
is created, then fast-forwarded through the steps it has nothing to do in, each hop an event.
New jobs have no children yet, so nothing else changes with them.

Ids may be chosen by the client (``JobCreate.job_id``): a call repeated after its answer was
lost finds every one of its ids taken and returns the jobs as they are, creating nothing; a
call where only some ids are taken is refused (AlreadyExists), creating nothing.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Iterable, Iterator
from enum import Enum
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from balsam.domain.functions import call_problem
from balsam.domain.states import JobFacts, JobState, fast_forward
from balsam.errors import AlreadyExists, NotFound, ValidationError
from balsam.schemas.jobs import INT_MAX, JobCreate
from balsam.store import repository as repo
from balsam.store.bulk import insert_rows
from balsam.store.changes import notify_job_change
from balsam.store.tables import EVENTS, JOB_PARENTS, JOBS, utcnow

S = JobState
#: Specs turned into rows per round trip: big enough to amortise the statements, small enough
#: that a chunk's tuples stay in the CPU cache and a huge call's memory stays flat.
CHUNK = 2000
#: The user's fields, as stored (parents are edges, job_id is the key).
SPEC_FIELDS = tuple(
    name for name in JobCreate.model_fields if name not in ("parents", "job_id", "user_workdir")
)
#: Columns of a new job row, in the order :func:`_row` gives its values.
JOB_COLUMNS = (
    "job_id",
    *SPEC_FIELDS,
    "state",
    "state_timestamp",
    "created_at",
    "working_directory",
    "error_count",
    "timeout_count",
    "lost_count",
    "cpus_needed",
    "gpus_needed",
)
EDGE_COLUMNS = ("parent_id", "child_id")
EVENT_COLUMNS = ("job_id", "timestamp", "from_state", "to_state", "message")


def working_directory(workflow: str, name: str, job_id: str) -> str:
    """A job's working directory, relative to the workflow database directory."""
    return f"data/{workflow}/{name}_{job_id[:8]}"


class Repeat(Enum):
    """Whether a call's client-chosen ids are new, or all taken by an earlier same call."""

    UNKNOWN = "unknown"
    NEW = "new"
    REPEAT = "repeat"


class JobMaker:
    """Adds jobs to one open transaction, chunk by chunk (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.now = utcnow()
        if session.get_bind().dialect.name == "postgresql":
            # The look-ups of ids this call makes run against rows it inserted, uncommitted,
            # which the planner's statistics do not count: it would scan the whole table for
            # each chunk (quadratic in the call's size). The primary key is always right here.
            session.execute(text("SET LOCAL enable_seqscan = off"))
        #: (has preprocess) of every app seen so far, by name.
        self._apps: dict[str, bool] = {}
        #: Names of the function apps among them.
        self._function_apps: set[str] = set()
        #: States of the jobs this call made (or found, when repeated), by id, in order.
        self.states: dict[str, JobState] = {}
        self.repeat = Repeat.UNKNOWN
        self._paths: dict[tuple[bool, bool, bool, bool], list[JobState]] = {}

    def add(self, specs: Iterable[JobCreate]) -> None:
        """Create every job of ``specs`` (any iterable: it is read one chunk at a time)."""
        for chunk in _chunks(iter(specs), CHUNK):
            self._add_chunk(chunk)

    def _add_chunk(self, specs: list[JobCreate]) -> None:
        ids = [spec.job_id or str(uuid.uuid4()) for spec in specs]
        if self._is_repeat(specs, ids):
            return
        self._check_apps(specs)
        outside = self._parent_states(specs, set(ids))
        rows: list[tuple[Any, ...]] = []
        edges: list[tuple[str, str]] = []
        events: list[tuple[Any, ...]] = []
        for spec, job_id in zip(specs, ids, strict=True):
            if job_id in self.states:
                raise ValidationError(f"job id {job_id} is given twice")
            self._check_call(spec)
            parents = list(dict.fromkeys(spec.parents))
            parent_states = [self._parent_state(p, outside) for p in parents]
            path = self._path(spec, parent_states)
            state = path[-1]
            self.states[job_id] = state
            rows.append(self._row(spec, job_id, state))
            edges += [(parent, job_id) for parent in parents]
            events += self._events(job_id, path)
        insert_rows(self.session, JOBS, JOB_COLUMNS, rows)
        insert_rows(self.session, JOB_PARENTS, EDGE_COLUMNS, edges)
        insert_rows(self.session, EVENTS, EVENT_COLUMNS, events)
        notify_job_change(self.session)

    def _is_repeat(self, specs: list[JobCreate], ids: list[str]) -> bool:
        """True when this chunk's jobs exist already because the same call was made before."""
        chosen = [job_id for spec, job_id in zip(specs, ids, strict=True) if spec.job_id]
        if not chosen:
            if self.repeat is Repeat.REPEAT:
                raise AlreadyExists("a repeated create call must give every job's id")
            self.repeat = Repeat.NEW
            return False
        found = _existing_states(self.session, chosen)
        every = len(found) == len(ids)
        if self.repeat is not Repeat.NEW and every:
            self.repeat = Repeat.REPEAT
            self.states.update((job_id, found[job_id]) for job_id in ids)
            return True
        if found or self.repeat is Repeat.REPEAT:
            taken = sorted(found) or sorted(set(ids) - set(found))
            raise AlreadyExists(
                f"job id(s) {', '.join(i[:8] for i in taken[:5])} exist already: "
                "this is neither a new call nor a repeat of one"
            )
        self.repeat = Repeat.NEW
        return False

    def _check_apps(self, specs: list[JobCreate]) -> None:
        names = {spec.application for spec in specs} - set(self._apps)
        if not names:
            return
        apps = repo.apps_by_name(self.session, names)
        missing = names - set(apps)
        if missing:
            raise NotFound(f"unknown application(s): {', '.join(sorted(missing))}")
        self._apps.update((name, bool(app.preprocess)) for name, app in apps.items())
        self._function_apps.update(name for name, app in apps.items() if app.function)

    def _check_call(self, spec: JobCreate) -> None:
        """Refuse arguments that do not suit the job's app (args for an executable app, a
        call for a function app)."""
        has_call = spec.function_args is not None or spec.function_kwargs is not None
        if not spec.args and not has_call:
            return
        problem = call_problem(spec.application in self._function_apps, spec.args, has_call)
        if problem:
            raise ValidationError(f"job {spec.name!r}: {problem} (app {spec.application!r})")

    def _parent_state(self, parent: str, outside: dict[str, JobState]) -> JobState:
        state = self.states.get(parent) or outside.get(parent)
        if state is None:
            raise NotFound(f"parent job {parent} is created after its child in this call")
        return state

    def _parent_states(self, specs: list[JobCreate], chunk: set[str]) -> dict[str, JobState]:
        """States of the parents that this call did not make (NotFound for unknown ones)."""
        wanted = {p for spec in specs for p in spec.parents if p not in self.states}
        wanted -= chunk
        if not wanted:
            return {}
        found = _existing_states(self.session, list(wanted))
        missing = wanted - set(found)
        if missing:
            raise NotFound(f"unknown parent job id(s): {', '.join(sorted(missing))}")
        return found

    def _path(self, spec: JobCreate, parent_states: list[JobState]) -> list[JobState]:
        """CREATED and the states a new job passes through by itself (cached by its facts)."""
        waits = spec.wait_for_parents
        key = (
            waits and any(s in (S.FAILED, S.USER_KILLED) for s in parent_states),
            waits and any(s is not S.JOB_FINISHED for s in parent_states),
            bool(spec.stage_in_url) or (bool(parent_states) and bool(spec.input_files)),
            self._apps[spec.application],
        )
        path = self._paths.get(key)
        if path is None:
            # A new job goes no further than PREPROCESSED: only these facts matter.
            facts = JobFacts(
                has_failed_parents=key[0],
                has_unfinished_parents=key[1],
                needs_stage_in=key[2],
                needs_preprocess=key[3],
            )
            path = [S.CREATED, *fast_forward(S.CREATED, facts)]
            self._paths[key] = path
        return path

    def _row(self, spec: JobCreate, job_id: str, state: JobState) -> tuple[Any, ...]:
        values = spec.__dict__
        ranks, threads = spec.ranks_per_node, spec.threads_per_rank
        return (
            job_id,
            *[values[name] for name in SPEC_FIELDS],
            state.value,
            self.now,
            self.now,
            spec.user_workdir or working_directory(spec.workflow, spec.name, job_id),
            0,
            0,
            0,
            min(INT_MAX, math.ceil(ranks * threads / spec.threads_per_core)),
            min(INT_MAX, ranks * spec.gpus_per_rank),
        )

    def _events(self, job_id: str, path: list[JobState]) -> list[tuple[Any, ...]]:
        now = self.now
        events = [(job_id, now, "", S.CREATED.value, "created")]
        events += [(job_id, now, a.value, b.value, "") for a, b in itertools.pairwise(path)]
        return events


def _existing_states(session: Session, ids: list[str]) -> dict[str, JobState]:
    found: dict[str, JobState] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        stmt = select(JOBS.c.job_id, JOBS.c.state).where(JOBS.c.job_id.in_(chunk))
        found.update((job_id, S(state)) for job_id, state in session.execute(stmt))
    return found


def _chunks(items: Iterator[JobCreate], size: int) -> Iterator[list[JobCreate]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk

"""Creating jobs in memory as :mod:`balsam.services.creation` does, all or nothing.

Specs are read a chunk at a time, with the same checks in the same order per chunk: the
repeat test on client-chosen ids, unknown apps, unknown parents, ids given twice. New jobs are
staged and reach the store only when every chunk succeeded. A new job is created, then
fast-forwarded through the steps it has nothing to do in, each hop an event.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator
from enum import Enum
from typing import Any

from balsam.domain.functions import call_problem
from balsam.domain.states import JobState, fast_forward, job_facts
from balsam.errors import AlreadyExists, NotFound, ValidationError
from balsam.schemas.jobs import JobCreate
from balsam.testing.memchecks import check_text, stored_json
from balsam.testing.memquery import Kind, columns_of_record
from balsam.testing.memstore import (
    CALL_FIELDS,
    JSON_FIELDS,
    EventRecord,
    JobRecord,
    Store,
    utcnow,
)

S = JobState
#: Specs per chunk, as balsam.services.creation.CHUNK (a repeat is judged per chunk).
CHUNK = 2000
#: The user's fields, as stored (parents are edges, job_id is the key).
SPEC_FIELDS = tuple(
    name for name in JobCreate.model_fields if name not in ("parents", "job_id", "user_workdir")
)
_TEXT_FIELDS = tuple(
    name
    for name, column in columns_of_record(JobRecord).items()
    if column.kind is Kind.TEXT and name in SPEC_FIELDS
)


def working_directory(workflow: str, name: str, job_id: str) -> str:
    """A job's working directory, relative to the workflow database directory."""
    return f"data/{workflow}/{name}_{job_id[:8]}"


class Repeat(Enum):
    """Whether a call's client-chosen ids are new, or all taken by an earlier same call."""

    UNKNOWN = "unknown"
    NEW = "new"
    REPEAT = "repeat"


class MemoryJobMaker:
    """Stages the jobs of one create call; :meth:`commit` adds them to the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.now = utcnow()
        #: States of the jobs this call made (or found, when repeated), by id, in order.
        self.states: dict[str, JobState] = {}
        self.repeat = Repeat.UNKNOWN
        self._new: dict[str, JobRecord] = {}
        self._edges: list[tuple[str, str]] = []
        self._events: list[tuple[str, EventRecord]] = []

    def add(self, specs: Iterable[JobCreate]) -> None:
        """Stage every job of ``specs`` (any iterable: it is read one chunk at a time)."""
        for chunk in _chunks(iter(specs), CHUNK):
            self._add_chunk(chunk)

    def commit(self) -> None:
        """Add the staged jobs, edges and events to the store."""
        for job in self._new.values():
            self.store.insert_job(job)
        for parent, child in self._edges:
            self.store.add_edge(parent, child)
        for job_id, event in self._events:
            self.store.append_event(job_id, event)

    def _add_chunk(self, specs: list[JobCreate]) -> None:
        ids = [spec.job_id or str(uuid.uuid4()) for spec in specs]
        if self._is_repeat(specs, ids):
            return
        self._check_apps(specs)
        outside = self._parent_states(specs, set(ids))
        made = []
        for spec, job_id in zip(specs, ids, strict=True):
            if job_id in self.states:
                raise ValidationError(f"job id {job_id} is given twice")
            self._check_call(spec)
            parents = list(dict.fromkeys(spec.parents))
            parent_states = [self._parent_state(p, outside).value for p in parents]
            job = self._record(spec, job_id)
            made.append(job)
            app = self.store.apps[spec.application]
            facts = job_facts(job, app, parent_states, has_parents=bool(parent_states))
            path = [S.CREATED, *fast_forward(S.CREATED, facts)]
            job.state = path[-1]
            self.states[job_id] = job.state
            self._new[job_id] = job
            self._edges += [(parent, job_id) for parent in parents]
            self._events.append((job_id, EventRecord(self.now, "", S.CREATED.value, "created")))
            self._events += [
                (job_id, EventRecord(self.now, a.value, b.value, ""))
                for a, b in itertools.pairwise(path)
            ]
        # After the chunk, as the SQL backend's insert finds these.
        for job in made:
            _make_storable(job)

    def _existing_states(self, ids: Iterable[str]) -> dict[str, JobState]:
        """States of the jobs among ``ids`` that exist (in the store or staged by this call)."""
        found: dict[str, JobState] = {}
        for job_id in ids:
            job = self._new.get(job_id) or self.store.jobs.get(job_id)
            if job is not None:
                found[job_id] = job.state
        return found

    def _is_repeat(self, specs: list[JobCreate], ids: list[str]) -> bool:
        """True when this chunk's jobs exist already because the same call was made before."""
        chosen = [job_id for spec, job_id in zip(specs, ids, strict=True) if spec.job_id]
        if not chosen:
            if self.repeat is Repeat.REPEAT:
                raise AlreadyExists("a repeated create call must give every job's id")
            self.repeat = Repeat.NEW
            return False
        found = self._existing_states(chosen)
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
        missing = {spec.application for spec in specs} - set(self.store.apps)
        if missing:
            raise NotFound(f"unknown application(s): {', '.join(sorted(missing))}")

    def _check_call(self, spec: JobCreate) -> None:
        """Refuse arguments that do not suit the job's app, as balsam.services.creation."""
        has_call = spec.function_args is not None or spec.function_kwargs is not None
        function_app = bool(self.store.apps[spec.application].function)
        problem = call_problem(function_app, spec.args, has_call)
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
        found = self._existing_states(wanted)
        missing = wanted - set(found)
        if missing:
            raise NotFound(f"unknown parent job id(s): {', '.join(sorted(missing))}")
        return found

    def _record(self, spec: JobCreate, job_id: str) -> JobRecord:
        """A new job's record, in CREATED (see :func:`_make_storable`)."""
        values: dict[str, Any] = {name: getattr(spec, name) for name in SPEC_FIELDS}
        request = spec.resources()
        return JobRecord(
            job_id=job_id,
            **values,
            state=S.CREATED,
            state_timestamp=self.now,
            created_at=self.now,
            working_directory=(
                spec.user_workdir or working_directory(spec.workflow, spec.name, job_id)
            ),
            cpus_needed=request.cpus_per_node,
            gpus_needed=request.gpus_per_node,
        )


def _make_storable(job: JobRecord) -> None:
    """Copy ``job``'s JSON documents as stored; refuse text PostgreSQL cannot hold."""
    for name in _TEXT_FIELDS:
        check_text(getattr(job, name), name)
    for name in JSON_FIELDS:
        setattr(job, name, stored_json(getattr(job, name), name))
    for name in CALL_FIELDS:
        if getattr(job, name) is not None:
            setattr(job, name, stored_json(getattr(job, name), name))


def _chunks(items: Iterator[JobCreate], size: int) -> Iterator[list[JobCreate]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk

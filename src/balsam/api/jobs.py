"""Jobs as Python objects: Balsam's ``BalsamJob``, backed by any Backend.

``Job(name=..., application=..., args=...)`` is unsaved until :meth:`Job.save`; after that it
mirrors one stored job. Every field of :class:`balsam.schemas.jobs.JobFields` is a plain
attribute; ``state`` may be assigned (a name or a :class:`JobState`) and is applied by ``save()``
through the state machine. Bookkeeping (``job_id``, ``created_at``, retry counters, ...) is
read-only. Assigning an attribute that is not a job field is an error, so a typo such as
``job.num_node = 4`` cannot be silently ignored.

Compatibility with Balsam 0.x scripts: ``environ_vars`` may be given as ``"A=1:B=2"`` and
``args`` as a list of words; ``job.pk`` is the job id; ``Job.DoesNotExist`` and
``Job.MultipleObjectsReturned`` exist (subclasses of :class:`NotFound` and :class:`Ambiguous`).
"""

from __future__ import annotations

import copy
import operator
import shlex
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError

from balsam.api import compat, functions, waiting
from balsam.api.apps import App
from balsam.api.context import get_backend, get_site
from balsam.api.lookups import UnknownField
from balsam.api.query import JobQuerySet, check_moves, require_user_settable
from balsam.backends.base import Backend
from balsam.domain.commands import parse_env_assignments
from balsam.domain.states import (
    JobState,
    parse_state,
)
from balsam.errors import (
    Ambiguous,
    ConfigError,
    InvalidTransition,
    NotFound,
    ValidationError,
)
from balsam.schemas.jobs import EventOut, JobCreate, JobFields, JobOut
from balsam.schemas.problems import first_error
from balsam.schemas.queries import JobQuery, clause_from_kwargs

#: The fields a user sets, in Balsam's order.
FIELDS: tuple[str, ...] = tuple(JobFields.model_fields)
#: Bookkeeping a user reads but never assigns.
READ_ONLY: tuple[str, ...] = (
    "job_id",
    "pk",
    "state_timestamp",
    "created_at",
    "working_directory",
    "parents",
    "error_count",
    "timeout_count",
    "lost_count",
    "session_id",
    "return_code",
    "function_outcome",
)
_SETTABLE = frozenset((*FIELDS, "state", "user_workdir", "coschedule_num_nodes"))
#: The bookkeeping a job object stores (``pk`` and the others are computed).
READ_ONLY_SLOTS = (
    "job_id",
    "state_timestamp",
    "created_at",
    "error_count",
    "timeout_count",
    "lost_count",
    "session_id",
    "return_code",
    "function_outcome",
)
#: The saved value of an empty dict field: shared, never mutated (saved values are only read).
_EMPTY: dict[str, Any] = {}
#: All of a job's field values at once, in FIELDS order (one C call).
_field_values: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*FIELDS)
#: Where the dict fields (environment, data, tags) are in FIELDS: saved as copies.
_DICT_FIELDS = tuple(
    i
    for i, name in enumerate(FIELDS)
    if isinstance(JobFields.model_fields[name].get_default(call_default_factory=True), dict)
)
#: Where a function job's call (function_args, function_kwargs: None or JSON) is in FIELDS:
#: saved as deep copies too (a list or dict edited in place must differ from what was saved).
_CALL_FIELDS = tuple(i for i, name in enumerate(FIELDS) if name.startswith("function_"))
#: The bookkeeping taken from every stored job.
_SYNCED = ("job_id", "state_timestamp", "created_at", "session_id", "return_code")
#: Length of a full job id (a UUID); shorter strings are treated as id prefixes.
FULL_ID_LENGTH = 36


class JobDoesNotExist(NotFound):
    """No job matches (``BalsamJob.DoesNotExist``)."""


class JobMultipleObjectsReturned(Ambiguous):
    """``get()`` matched more than one job (``BalsamJob.MultipleObjectsReturned``)."""


def _defaults() -> dict[str, Any]:
    """Field values of a new job (``application`` has no default: empty until set); the
    mutable ones (dicts) fresh for each job."""
    return {name: (value.copy() if isinstance(value, dict) else value) for name, value in _DEFAULTS}


#: Every field's default, read once (pydantic's lookup of a default costs ~5 µs a field).
_DEFAULTS = tuple(
    (name, "" if info.is_required() else info.get_default(call_default_factory=True))
    for name, info in JobFields.model_fields.items()
)


class JobManager(JobQuerySet):
    """``Job.objects``: a query set over all jobs, and waiting for jobs to end
    (:mod:`balsam.api.waiting`)."""

    def wait(
        self,
        jobs: Iterable[Job | str | uuid.UUID],
        timeout: float | None = None,
        return_when: str = waiting.ALL_COMPLETED,
    ) -> waiting.DoneAndNotDone:
        """Wait until ``jobs`` have all ended (or, with ``return_when=FIRST_COMPLETED``, one
        has) or ``timeout`` seconds passed; returns ``(done, not_done)``."""
        return waiting.wait(jobs, timeout, return_when)

    def as_completed(
        self, jobs: Iterable[Job | str | uuid.UUID], timeout: float | None = None
    ) -> Iterator[Job]:
        """Yield ``jobs`` as they end; TimeoutError if some have not after ``timeout`` s."""
        return waiting.as_completed(jobs, timeout)


class _Objects:
    """``Job.objects``: a fresh manager (a query set over all jobs) on each access."""

    def __get__(self, obj: object, owner: type[Any]) -> JobManager:
        return JobManager()


class Job:
    """One job of the workflow database (Balsam's ``BalsamJob``)."""

    # Slots, not a __dict__: campaigns build jobs by the hundred thousand before one
    # bulk_create (a third of the memory per job).
    __slots__ = (
        *FIELDS,
        *READ_ONLY_SLOTS,
        "_state",
        "_saved_state",
        "_workdir",
        "_parent_ids",
        "_pending_parents",
        "_saved",
        "_new_id",
        "_user_workdir",
    )

    DoesNotExist = JobDoesNotExist
    MultipleObjectsReturned = JobMultipleObjectsReturned
    objects = _Objects()

    # Balsam 0.5's helpers (balsam.api.compat).
    num_ranks = property(compat.num_ranks)
    app_cmd = property(compat.app_cmd)
    state_history = property(compat.state_history)
    runtime_seconds = property(compat.runtime_seconds)
    get_child_by_name = compat.get_child_by_name
    read_file_in_workdir = compat.read_file_in_workdir
    get_envs = compat.get_envs
    get_recent_state_str = compat.get_recent_state_str
    get_state_times = compat.get_state_times
    required_num_cores = property(compat.required_num_cores)
    preprocess = property(compat.app_preprocess)
    postprocess = property(compat.app_postprocess)
    envscript = property(compat.app_envscript)
    get_application = compat.get_application
    get_parents_by_id = compat.get_parents_by_id
    get_children_by_id = compat.get_children_by_id
    parse_envstring = staticmethod(compat.parse_envstring)
    to_dict = compat.to_dict

    @classmethod
    def batch_update_state(
        cls, pk_list: Iterable[Any], new_state: JobState | str, message: str = ""
    ) -> int:
        """Balsam 0.5's: move the jobs of ``pk_list`` (ids or jobs) to ``new_state`` with
        ``message`` in their history; USER_KILLED jobs are left alone, as in 0.5. Returns
        how many moved."""
        ids = [p.job_id if isinstance(p, Job) else str(p) for p in pk_list]
        try:
            target = parse_state(str(new_state))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        backend = get_backend()
        # One read of the jobs as stored: checked all before any is moved.
        found = backend.query_jobs(JobQuery(clauses=[clause_from_kwargs({"job_id__in": ids})]))
        spared = (JobState.USER_KILLED, target)
        moving = [job for job in found if job.state not in spared]
        check_moves(moving, target)
        for job in moving:
            backend.set_state(job.job_id, target, message or "set by user")
        return len(moving)

    name: str
    workflow: str
    description: str
    application: str
    args: str
    num_nodes: int
    ranks_per_node: int
    threads_per_rank: int
    threads_per_core: int
    gpus_per_rank: int
    cpu_affinity: str
    node_packing_count: int
    wall_time_minutes: int
    environ_vars: dict[str, str]
    mpi_flags: str
    input_files: str
    stage_in_url: str
    stage_out_files: str
    stage_out_url: str
    post_error_handler: bool
    post_timeout_handler: bool
    auto_timeout_retry: bool
    wait_for_parents: bool
    max_error_retries: int
    max_timeout_retries: int
    max_lost_retries: int
    data: dict[str, Any]
    tags: dict[str, str]
    function_args: list[Any] | None
    function_kwargs: dict[str, Any] | None

    job_id: str | None
    state_timestamp: datetime | None
    created_at: datetime | None
    error_count: int
    timeout_count: int
    lost_count: int
    session_id: int | None
    return_code: int | None
    #: What the function of a function app's job did in its last run (docs/functions.md).
    function_outcome: dict[str, Any] | None

    def __init__(self, **fields: Any) -> None:
        parents = fields.pop("parents", ())
        state = fields.pop("state", None)
        self._user_workdir = str(fields.pop("user_workdir", "") or "")
        coschedule = fields.pop("coschedule_num_nodes", None)
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise UnknownField(
                f"unknown job field(s) {', '.join(unknown)}; fields are: {', '.join(FIELDS)}"
            )
        for name in (*_SYNCED, "function_outcome"):
            object.__setattr__(self, name, None)
        for name in ("error_count", "timeout_count", "lost_count"):
            object.__setattr__(self, name, 0)
        self._state = JobState.CREATED
        self._saved_state = JobState.CREATED
        self._workdir: str | None = None
        self._parent_ids: list[str] = []
        self._pending_parents: list[Job | str | uuid.UUID] = list(parents)
        self._saved: tuple[Any, ...] = ()
        self._new_id: str | None = None
        for name, value in {**_defaults(), **fields}.items():
            object.__setattr__(self, name, value)
        if state is not None:
            # Balsam 0.5's BalsamJob(state="CREATED"): as if set before the first save.
            self.state = state
        if coschedule is not None:
            self.coschedule_num_nodes = coschedule

    @classmethod
    def from_out(cls, out: JobOut) -> Job:
        """A saved job built from the backend's output model."""
        job = cls.__new__(cls)
        object.__setattr__(job, "_pending_parents", [])
        object.__setattr__(job, "_new_id", None)
        object.__setattr__(job, "_user_workdir", "")
        job._load(out)
        return job

    def _load(self, out: JobOut) -> None:
        """Take every value from ``out`` (discarding unsaved edits)."""
        for name in FIELDS:
            object.__setattr__(self, name, getattr(out, name))
        self._snapshot()
        self._sync(out, keep_edits=False)

    def _snapshot(self) -> None:
        """Remember the field values as saved (what a later save() compares with)."""
        # Dict fields are kept as copies (an empty one as the shared _EMPTY): a dict edited in
        # place (``job.data["k"] = 1``) must differ from what was saved, also when it was empty.
        copied = list(_field_values(self))
        for i in _DICT_FIELDS:
            copied[i] = copy.deepcopy(copied[i]) if copied[i] else _EMPTY
        for i in _CALL_FIELDS:
            copied[i] = copy.deepcopy(copied[i])
        object.__setattr__(self, "_saved", tuple(copied))

    def _saved_values(self) -> dict[str, Any]:
        """The field values as last saved, by name."""
        return dict(zip(FIELDS, self._saved, strict=True))

    def _sync(self, out: JobOut, keep_edits: bool = True) -> None:
        """Take the bookkeeping from ``out``; the state too unless the user changed it."""
        for name in (*_SYNCED, "function_outcome"):
            object.__setattr__(self, name, getattr(out, name))
        for name in ("error_count", "timeout_count", "lost_count"):
            object.__setattr__(self, name, getattr(out, name))
        object.__setattr__(self, "_workdir", out.working_directory)
        object.__setattr__(self, "_parent_ids", list(out.parents))
        if not keep_edits or self._state == self._saved_state:
            object.__setattr__(self, "_state", out.state)
        object.__setattr__(self, "_saved_state", out.state)

    if not TYPE_CHECKING:
        # Hidden from type checkers so they still flag unknown attributes statically.
        def __setattr__(self, key: str, value: Any) -> None:
            if key.startswith("_") or key in _SETTABLE:
                object.__setattr__(self, key, value)
            elif key in READ_ONLY:
                raise ValidationError(f"{key} is read-only")
            else:
                raise UnknownField(f"{key!r} is not a job field; fields are: {', '.join(FIELDS)}")

    # --- identity -------------------------------------------------------------------------

    @property
    def pk(self) -> str | None:
        """The job id (Django's primary key), None before the first save."""
        return self.job_id

    @property
    def cute_id(self) -> str:
        """Balsam 0.5's short label: ``[name | id8]`` (``[id8]`` without a name)."""
        return f"[{self.name} | {self._id8}]" if self.name else f"[{self._id8}]"

    @property
    def _id8(self) -> str:
        """The first 8 characters of the id (what ``balsam ls`` shows)."""
        return self.job_id[:8] if self.job_id else "unsaved"

    @property
    def state(self) -> JobState:
        """The job's state; assign a new one and ``save()`` to change it (validated)."""
        return self._state

    @state.setter
    def state(self, value: JobState | str) -> None:
        try:
            self._state = parse_state(str(value))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    @property
    def parents(self) -> list[str]:
        """Ids of the job's parents as last loaded (use :meth:`get_parents` for fresh ones)."""
        if self.job_id is None:
            ids = (_pending_id(p) for p in self._pending_parents)
            return [i for i in ids if i is not None]
        return list(self._parent_ids)

    @property
    def working_directory(self) -> str:
        """Absolute path of the job's working directory on this site."""
        if self._workdir is None:
            raise ValidationError(
                f"job {self.name!r} is not saved yet: it has no working directory"
            )
        site = get_site()
        if site is None:
            raise ConfigError(
                "no active workflow database: the working directory lies under it "
                "(source balsamactivate NAME, set BALSAM_DB_PATH, or pass site= to use_backend)"
            )
        return str(site.job_dir(self._workdir))

    @property
    def user_workdir(self) -> str:
        """Balsam 0.5's ``user_workdir``: the absolute directory the job runs in instead of
        one under the workflow database ("" when it has its own; made by the launcher when
        missing); set before the first save."""
        if self.job_id is None:
            return self._user_workdir
        workdir = self._workdir or ""
        return workdir if workdir.startswith("/") else ""

    @user_workdir.setter
    def user_workdir(self, value: str) -> None:
        if self.job_id is not None:
            raise ValidationError("user_workdir is fixed when the job is created")
        self._user_workdir = str(value or "")

    @property
    def coschedule_num_nodes(self) -> int:
        """Balsam 0.5's extra nodes to reserve beside the job; kept in ``data`` (only a
        record: launchers do not reserve them)."""
        return int(self.data.get("coschedule_num_nodes", 0))

    @coschedule_num_nodes.setter
    def coschedule_num_nodes(self, value: int) -> None:
        self.data["coschedule_num_nodes"] = int(value)

    def __str__(self) -> str:
        return (
            f"{self.name} [{self._id8}] workflow={self.workflow} "
            f"app={self.application} state={self.state.value}"
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self._id8} name={self.name!r} "
            f"workflow={self.workflow!r} state={self.state.value}>"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        if self.job_id is None:
            return self is other
        return self.job_id == other.job_id

    def __hash__(self) -> int:
        if self.job_id is None:
            raise TypeError("an unsaved job is unhashable (it has no id yet)")
        return hash(self.job_id)

    # --- saving ---------------------------------------------------------------------------

    def save(self, update_fields: Iterable[str] | None = None) -> None:
        """Create the job, or write the fields and state changed since it was loaded.

        ``update_fields`` (Balsam 0.5's, from Django): write only the changes to these
        fields (``state`` among them for a state change); other edits stay unsaved on the
        object. Ignored when the job is created, which writes everything.
        """
        if self.job_id is None:
            self.create_many([self])
            return
        only = None if update_fields is None else set(update_fields)
        if only is not None:
            unknown = sorted(only - set(FIELDS) - {"state", "state_history", "parents"})
            if unknown:
                raise UnknownField(f"unknown job field(s) in update_fields: {', '.join(unknown)}")
        self._save_changes(get_backend(), self.job_id, only)

    @classmethod
    def create_many(cls, jobs: list[Job]) -> None:
        """Create unsaved ``jobs`` in one backend call (all or nothing) and load the results."""
        for job in jobs:
            if job.job_id is not None:
                raise ValidationError(f"job {job.name!r} is saved already")
        if not jobs:
            return
        backend = get_backend()
        specs = [job._create_spec(backend) for job in jobs]
        for job, out in zip(jobs, backend.create_jobs(specs), strict=True):
            job._load(out)
            job._pending_parents = []

    def _create_spec(self, backend: Backend) -> JobCreate:
        if self._state is not JobState.CREATED:
            raise InvalidTransition("a new job starts CREATED; save it first, then set its state")
        values = self.compat_values(dict(zip(FIELDS, _field_values(self), strict=True)))
        values["parents"] = [job_id_of(p, backend) for p in self._pending_parents]
        if self._user_workdir:
            values["user_workdir"] = self._user_workdir
        # Chosen here, once: a create repeated after its answer was lost creates the job once.
        if self._new_id is None:
            object.__setattr__(self, "_new_id", str(uuid.uuid4()))
        values["job_id"] = self._new_id
        try:
            spec = JobCreate.model_validate(values)
        except PydanticValidationError as exc:
            raise ValidationError(f"job {self.name!r}: {first_error(exc)}") from None
        # The values as they will be stored (0.x spellings converted, numbers coerced).
        for name in FIELDS:
            object.__setattr__(self, name, spec.__dict__[name])
        self._parent_ids = spec.parents
        return spec

    @classmethod
    def create_bulk(cls, jobs: list[Job]) -> None:
        """Create unsaved ``jobs`` in one streamed backend call (all or nothing).

        The specs are built and validated as the backend reads them, a chunk at a time, and
        only each job's id and state come back: memory does not grow with a copy per job.
        """
        for job in jobs:
            if job.job_id is not None:
                raise ValidationError(f"job {job.name!r} is saved already")
        if not jobs:
            return
        backend = get_backend()
        made = backend.bulk_create_jobs(_Specs(jobs, backend))
        for job, job_id, state in zip(jobs, made.job_ids, made.states, strict=True):
            job._created(job_id, state, made.created_at)

    def _created(self, job_id: str, state: JobState, when: datetime) -> None:
        """Become the job just created with ``job_id`` (its fields as validated)."""
        for name in ("job_id", "state_timestamp", "created_at"):
            object.__setattr__(self, name, job_id if name == "job_id" else when)
        self._workdir = f"data/{self.workflow}/{self.name}_{job_id[:8]}"
        self._pending_parents = []
        self._state = self._saved_state = state
        self._snapshot()

    def _save_changes(self, backend: Backend, job_id: str, only: set[str] | None = None) -> None:
        saved = self._saved_values()
        edited = {n: getattr(self, n) for n in FIELDS if getattr(self, n) != saved[n]}
        kept = {} if only is None else {n: v for n, v in edited.items() if n not in only}
        changes = self.compat_values({n: v for n, v in edited.items() if n not in kept})
        target = self._state if self._state != self._saved_state else None
        if only is not None and not only & {"state", "state_history"}:
            target = None
        if changes:
            try:
                JobFields.model_validate({**saved, **changes})
            except PydanticValidationError as exc:
                raise ValidationError(f"job {self.name!r}: {first_error(exc)}") from None
        if target is not None:
            _check_move(backend.get_job(job_id), target)
        if changes and backend.update_jobs(_by_id(job_id), changes) == 0:
            raise JobDoesNotExist(f"job {job_id} no longer exists")
        if target is not None:
            backend.set_state(job_id, target, "set by user")
        unsaved_state = self._state if target is None else None
        self._load(backend.get_job(job_id))
        for name, value in kept.items():
            object.__setattr__(self, name, value)
        if unsaved_state is not None and unsaved_state != self._saved_state:
            self._state = unsaved_state

    @staticmethod
    def compat_values(values: dict[str, Any]) -> dict[str, Any]:
        """Accept Balsam 0.x spellings: ``environ_vars="A=1:B=2"`` and ``args`` as a list."""
        out = dict(values)
        env = out.get("environ_vars")
        if isinstance(env, str):
            try:
                out["environ_vars"] = parse_env_assignments([env]) if env.strip() else {}
            except ValueError as exc:
                raise ValidationError(f"environ_vars: {exc}") from None
        args = out.get("args")
        if isinstance(args, list | tuple):
            out["args"] = shlex.join(str(a) for a in args)
        return out

    def refresh_from_db(self) -> None:
        """Reload every value from the database (unsaved edits are dropped)."""
        self._load(self._fetch(get_backend()))

    def refresh_state(self) -> None:
        """Reload the state, parents and bookkeeping from the database; field edits are kept."""
        self._sync(self._fetch(get_backend()), keep_edits=False)

    def _fetch(self, backend: Backend) -> JobOut:
        if self.job_id is None:
            raise ValidationError(f"job {self.name!r} is not saved yet")
        try:
            return backend.get_job(self.job_id)
        except NotFound:
            raise JobDoesNotExist(f"job {self.job_id} no longer exists") from None

    def delete(self) -> None:
        """Delete the job (with its dependencies and history); it becomes unsaved."""
        if self.job_id is None:
            raise ValidationError(f"job {self.name!r} is not saved, so it cannot be deleted")
        get_backend().delete_jobs(_by_id(self.job_id))
        object.__setattr__(self, "job_id", None)
        self._workdir = None
        self._state = self._saved_state = JobState.CREATED

    def update_state(self, state: JobState | str, message: str = "") -> None:
        """Change the state now (Balsam 0.x's ``update_state``), validated by the backend."""
        self.state = state
        if self.job_id is None:
            raise ValidationError(f"job {self.name!r} is not saved yet")
        out = get_backend().set_state(self.job_id, self._state, message or "set by user")
        self._sync(out, keep_edits=False)

    # --- function apps (docs/functions.md) ------------------------------------------------

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to end; return what its function returned. Raises
        :class:`~balsam.errors.RemoteError` (the function raised: remote type, message and
        traceback), :class:`~balsam.errors.JobError` (no result: killed, failed, ...) or
        :class:`TimeoutError` (not ended within ``timeout`` seconds)."""
        return functions.result(self, timeout)

    @classmethod
    def calling(
        cls,
        fn: Callable[..., Any] | App | str,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Job:
        """An unsaved job that calls ``fn`` (an importable function, whose app is found or
        registered: ``App.for_function``; or a function app, or its name) with ``args`` and
        ``kwargs``; ``fields`` are the job's other fields (name, workflow, resources...)."""
        return functions.job_calling(cls, fn, args, kwargs, **fields)

    def history(self) -> list[EventOut]:
        """The job's state changes, oldest first."""
        if self.job_id is None:
            raise ValidationError(f"job {self.name!r} is not saved yet")
        try:
            return get_backend().history(self.job_id)
        except NotFound:
            raise JobDoesNotExist(f"job {self.job_id} no longer exists") from None

    # --- dependencies ---------------------------------------------------------------------

    def get_parents(self) -> JobQuerySet:
        """The jobs this job waits for (a query set)."""
        if self.job_id is None:
            backend = get_backend()
            ids = [job_id_of(p, backend) for p in self._pending_parents]
        else:
            ids = self._fetch(get_backend()).parents
        return JobQuerySet().filter(job_id__in=ids)

    def get_children(self) -> JobQuerySet:
        """The jobs that wait for this one (a query set)."""
        ids = [] if self.job_id is None else get_backend().children_of(self.job_id)
        return JobQuerySet().filter(job_id__in=ids)

    def set_parents(self, parents: Iterable[Job | str | uuid.UUID]) -> None:
        """Make this job depend on ``parents`` (jobs, ids or unique id prefixes).

        Before the first save the list is stored and created with the job. After it, the
        list replaces the parents, as in Balsam 0.5: new ones are added (cycles are refused),
        those left out dropped, until a launcher holds the job (InvalidTransition after).
        """
        refs = list(parents)
        if self.job_id is None:
            self._pending_parents = refs
            return
        backend = get_backend()
        wanted = list(dict.fromkeys(job_id_of(p, backend) for p in refs))
        current = self._fetch(backend).parents
        # Balsam 0.5 replaced the list: parents left out are dropped (set_parents([]) too).
        for parent_id in current:
            if parent_id not in wanted:
                backend.remove_dependency(parent_id, self.job_id)
        for parent_id in wanted:
            if parent_id not in current:
                backend.add_dependency(parent_id, self.job_id)
        self._sync(self._fetch(backend))


class _Specs:
    """The specs of new jobs, built when read (re-readable: a repeated call rebuilds them)."""

    def __init__(self, jobs: list[Job], backend: Backend) -> None:
        self.jobs = jobs
        self.backend = backend

    def __iter__(self) -> Iterator[JobCreate]:
        return (job._create_spec(self.backend) for job in self.jobs)


def _by_id(job_id: str) -> JobQuery:
    return JobQuery(clauses=[clause_from_kwargs({"job_id": job_id})])


def _pending_id(ref: Job | str | uuid.UUID) -> str | None:
    """The id of a parent given before the first save, if known without asking the backend."""
    if isinstance(ref, Job):
        return ref.job_id
    return str(ref).strip()


def _check_move(current: JobOut, target: JobState) -> None:
    """Refuse a user's state change before any field is written."""
    check_moves([current], require_user_settable(target))


def job_id_of(ref: Job | str | uuid.UUID, backend: Backend) -> str:
    """The full id of a job given as a saved job, a full id, a UUID or a unique id prefix."""
    if isinstance(ref, Job):
        if ref.job_id is None:
            raise ValidationError(f"job {ref.name!r} is not saved yet; save it first")
        return ref.job_id
    if isinstance(ref, uuid.UUID):
        return str(ref)
    if isinstance(ref, str):
        ref = ref.strip()
        return ref if len(ref) == FULL_ID_LENGTH else backend.resolve_job_id(ref)
    raise ValidationError(f"expected a job or a job id, got {ref!r}")

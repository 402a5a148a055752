"""Job models: creation, update, output, state updates and history events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from balsam.domain.commands import CommandError, split_words
from balsam.domain.functions import arguments_problem, outcome_problem
from balsam.domain.resources import ResourceRequest, resource_problems
from balsam.domain.states import JobState
from balsam.domain.text import (
    ENVIRONMENT_LIMIT,
    TAGS_LIMIT,
    data_problem,
    field_problem,
    mapping_problem,
    name_problem,
)
from balsam.errors import ValidationError as BalsamValidationError

NAME_PATTERN = r"^[A-Za-z0-9_.+=@-]+$"

#: Validation context for jobs read back from the database: their fields were checked when
#: they were written, so the checks that parse and add up are not run again (claims and
#: listings read thousands).
STORED: dict[str, bool] = {"stored": True}


def is_stored(info: ValidationInfo) -> bool:
    """Whether the values being validated were read back from the database."""
    return bool(info.context and info.context.get("stored"))


#: Free-text fields of a job, checked for what cannot be stored or passed on (see
#: :mod:`balsam.domain.text`); names are held to :data:`NAME_PATTERN` instead.
TEXT_FIELDS = (
    "description",
    "application",
    "args",
    "mpi_flags",
    "input_files",
    "stage_in_url",
    "stage_out_files",
    "stage_out_url",
)


def text_problems(values: dict[str, Any]) -> list[str]:
    """What in a job's text, names, environment, tags and data cannot be stored or run."""
    problems = []
    for field in ("name", "workflow"):
        value = values.get(field)
        if isinstance(value, str) and (problem := name_problem(value)):
            problems.append(f"{field} {problem}")
    for field in TEXT_FIELDS:
        value = values.get(field)
        if isinstance(value, str) and value and (problem := field_problem(field, value)):
            problems.append(f"{field} {problem}")
    env, tags, data = values.get("environ_vars"), values.get("tags"), values.get("data")
    if env and (problem := mapping_problem(env, ENVIRONMENT_LIMIT, env=True)):
        problems.append(f"environ_vars {problem}")
    if tags and (problem := mapping_problem(tags, TAGS_LIMIT)):
        problems.append(f"tags {problem}")
    if data and (problem := data_problem(data)):
        problems.append(f"data {problem}")
    args, kwargs = values.get("function_args"), values.get("function_kwargs")
    if (args is not None or kwargs is not None) and (problem := arguments_problem(args, kwargs)):
        problems.append(problem)
    return problems


#: The largest value of an integer job field: PostgreSQL's integer columns are 32-bit signed
#: (SQLite's hold more), so this is what both store; a bigger value fails in the driver.
INT_MAX = 2**31 - 1
#: The smallest value of each integer job field (each is at most :data:`INT_MAX`). Checked
#: here rather than with ``Field(ge=...)`` so that every bound is reported in Balsam's words.
INT_MINIMUMS: dict[str, int] = {
    "num_nodes": 1,
    "ranks_per_node": 1,
    "threads_per_rank": 1,
    "threads_per_core": 1,
    "gpus_per_rank": 0,
    "node_packing_count": 1,
    "wall_time_minutes": 0,
    "max_error_retries": 0,
    "max_timeout_retries": 0,
    "max_lost_retries": 0,
}


def range_problems(values: dict[str, Any]) -> list[str]:
    """Why integer job fields in ``values`` are out of range, empty when all fit."""
    problems = []
    for field, low in INT_MINIMUMS.items():
        value = values.get(field)
        if not isinstance(value, int):
            continue
        if value < low:
            problems.append(f"{field} must be at least {low} (got {value})")
        elif value > INT_MAX:
            problems.append(f"{field} must be at most {INT_MAX} (got {value})")
    return problems


class JobFields(BaseModel):
    """The fields a user sets on a job (Balsam's names), shared by create and update."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(default="job", min_length=1, max_length=256, pattern=NAME_PATTERN)
    workflow: str = Field(default="default", min_length=1, max_length=256, pattern=NAME_PATTERN)
    description: str = ""
    application: str = Field(min_length=1)
    args: str = ""
    num_nodes: int = 1
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    threads_per_core: int = 1
    gpus_per_rank: int = 0
    cpu_affinity: str = "none"
    node_packing_count: int = 1
    wall_time_minutes: int = 1
    environ_vars: dict[str, str] = Field(default_factory=dict)
    mpi_flags: str = ""
    input_files: str = "*"
    stage_in_url: str = ""
    stage_out_files: str = ""
    stage_out_url: str = ""
    post_error_handler: bool = False
    post_timeout_handler: bool = False
    auto_timeout_retry: bool = True
    wait_for_parents: bool = True
    max_error_retries: int = 0
    max_timeout_retries: int = 3
    max_lost_retries: int = 3
    data: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    #: The call of a function app's job (docs/functions.md): its positional arguments (a JSON
    #: list) and its arguments by name (a JSON object); None for none.
    function_args: list[Any] | None = None
    function_kwargs: dict[str, Any] | None = None

    @field_validator("args")
    @classmethod
    def _args_parse(cls, value: str, info: ValidationInfo) -> str:
        if is_stored(info):
            return value
        try:
            split_words(value, "args")
        except CommandError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("cpu_affinity")
    @classmethod
    def _affinity(cls, value: str) -> str:
        if value not in ("none", "depth", "core"):
            raise ValueError("cpu_affinity must be one of none, depth, core")
        return value

    @model_validator(mode="after")
    def _storable_and_possible(self, info: ValidationInfo) -> JobFields:
        if is_stored(info):
            return self
        # One validator for the whole job (not one per field): bulk creation checks 100,000.
        text = text_problems(self.__dict__)
        if text:
            raise ValueError("; ".join(text))
        # Bounds first: the resource arithmetic is only meaningful on values that can be stored.
        values = self.__dict__
        if all(
            isinstance(v, int) and low <= v <= INT_MAX
            for v, low in zip(map(values.get, INT_MINIMUMS), INT_MINIMUMS.values(), strict=True)
        ):
            # Every bound holds, and they include the domain's resource rules: nothing to say.
            return self
        problems = range_problems(values) or resource_problems(self.resources())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def resources(self) -> ResourceRequest:
        """The job's resource request."""
        return ResourceRequest(
            num_nodes=self.num_nodes,
            ranks_per_node=self.ranks_per_node,
            threads_per_rank=self.threads_per_rank,
            threads_per_core=self.threads_per_core,
            gpus_per_rank=self.gpus_per_rank,
            node_packing_count=self.node_packing_count,
        )


#: A job id: a UUID in its canonical text form.
JOB_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class JobCreate(JobFields):
    """A new job; ``parents`` are job ids (full) it depends on.

    ``job_id`` may be chosen by the client (a UUID): creating the same jobs twice (a retry
    whose first answer was lost) then creates them once. Without it the database picks one.
    """

    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN)
    parents: list[str] = Field(default_factory=list)
    #: Balsam 0.5's ``user_workdir``: an absolute directory the job runs in instead of one
    #: made under the workflow database (made by the launcher if missing; fixed at creation).
    user_workdir: str = Field(default="", max_length=4096)
    #: The edge-service user who made the job. A server sets it from the caller's token
    #: whatever the request says; on a database reached directly it is whatever is given.
    created_by: str | None = Field(default=None, max_length=256)

    @field_validator("user_workdir")
    @classmethod
    def _absolute_workdir(cls, value: str) -> str:
        if value and (not value.startswith("/") or "\x00" in value):
            raise ValueError("user_workdir must be an absolute path")
        return value.rstrip("/") or value


class JobUpdate(BaseModel):
    """A partial change to jobs' fields (never the state: that goes through transitions)."""

    model_config = ConfigDict(extra="forbid")

    values: dict[str, Any]

    @field_validator("values")
    @classmethod
    def _known_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = set(value) - set(JobFields.model_fields)
        if unknown:
            raise ValueError(f"unknown job field(s): {', '.join(sorted(unknown))}")
        return value


class JobOut(JobFields):
    """A job as stored, with its state and bookkeeping."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    job_id: str
    state: JobState
    state_timestamp: datetime
    created_at: datetime
    working_directory: str
    parents: list[str] = Field(default_factory=list)
    error_count: int = 0
    timeout_count: int = 0
    lost_count: int = 0
    session_id: int | None = None
    return_code: int | None = None
    #: What the function of a function app's job did in its last run: ``{"value": ...}`` or
    #: ``{"exception": {"type", "message", "traceback"}}`` (None: no run has told yet).
    function_outcome: dict[str, Any] | None = None
    #: The edge-service user who made the job (None: made on the database directly).
    created_by: str | None = None


class JobShape(BaseModel):
    """How many matching jobs ask for one size: nodes, jobs per node, wall time.

    The service sizes launchers from these (``balsam.site.elastic``): a job takes
    ``num_nodes / node_packing_count`` nodes for ``wall_time_minutes`` (0: not given).
    """

    num_nodes: int
    node_packing_count: int
    wall_time_minutes: float
    count: int


class BulkCreated(BaseModel):
    """What a bulk create made: each job's id and state, in the order given."""

    model_config = ConfigDict(extra="forbid")

    job_ids: list[str]
    states: list[JobState]
    created_at: datetime
    #: The call was a repeat: every job existed already (nothing was created now).
    repeated: bool = False


class StateUpdate(BaseModel):
    """A launcher's report of one job's new state (validated by the state machine), and of
    what a function job's run returned or raised (``outcome``).

    ``seq`` numbers a session's calls (claims and updates share one counter, increasing):
    an update whose job already carries this session's ``seq`` or a later one was applied
    before and is reported as a duplicate, not applied again. 0 means unnumbered.
    ``from_state`` is the state the launcher believes the job is in: when the job has moved
    meanwhile (a user, or the job's own pre/postprocess, changed it), the update is refused
    with :attr:`RefusalCode.STATE_CHANGED` and the job's current state, and the launcher
    carries on from that. None skips the check.
    """

    model_config = ConfigDict(extra="forbid")

    job_id: str
    state: JobState
    message: str = ""
    return_code: int | None = None
    timestamp: datetime | None = None
    release: bool = False
    #: RESTART_READY because the run was lost with its node or its launcher's lease.
    lost: bool = False
    seq: int = Field(default=0, ge=0)
    from_state: JobState | None = None
    #: A function job's outcome, stored with the state it came with (the run's end), so that
    #: it is applied exactly when the state is, repeats included; ``{}`` clears the stored
    #: one (a new run starts). None leaves it as it is.
    outcome: dict[str, Any] | None = None

    @field_validator("outcome")
    @classmethod
    def _an_outcome(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and (problem := outcome_problem(value)):
            raise ValueError(f"outcome {problem}")
        return value


class UpdateOutcome(StrEnum):
    """What became of one state update."""

    APPLIED = "applied"
    """Applied now."""
    DUPLICATE = "duplicate"
    """Applied before (the same update sent again): nothing changed now."""
    REFUSED = "refused"
    """Not applied: see the code."""


class RefusalCode(StrEnum):
    """Why a state update was refused (machine-readable; the reason says it for humans)."""

    NOT_FOUND = "not_found"
    """The job does not exist (deleted)."""
    NOT_HELD = "not_held"
    """This session does not hold the job (its lease expired, or it released the job)."""
    STATE_CHANGED = "state_changed"
    """The job is no longer in ``from_state``: it moved meanwhile (its current state is given)."""
    INVALID_TRANSITION = "invalid_transition"
    """The state machine does not allow the move."""


class UpdateResult(BaseModel):
    """The outcome of one :class:`StateUpdate`, with where the job stands now."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    seq: int = 0
    outcome: UpdateOutcome
    code: RefusalCode | None = None
    reason: str = ""
    #: The job's state after this update (and the steps skipped with it); None if not found.
    state: JobState | None = None
    #: Whether the session still holds the job.
    held: bool = False

    @property
    def ok(self) -> bool:
        """Applied now or before."""
        return self.outcome is not UpdateOutcome.REFUSED


class EventOut(BaseModel):
    """One row of a job's history."""

    model_config = ConfigDict(from_attributes=True)

    job_id: str
    timestamp: datetime
    from_state: str
    to_state: str
    message: str


#: The most events one ``Backend.events_since`` page may hold.
MAX_EVENT_PAGE = 5000
#: The largest event id a database can hold (a signed 64-bit integer on every dialect).
MAX_EVENT_ID = 2**63 - 1


def check_event_limit(limit: int) -> None:
    """ValidationError unless ``1 <= limit <= MAX_EVENT_PAGE``."""
    if not 1 <= limit <= MAX_EVENT_PAGE:
        raise BalsamValidationError(f"limit must be between 1 and {MAX_EVENT_PAGE} (got {limit})")


class StreamEvent(BaseModel):
    """One job event as a stream carries it: its id (the position in the database's event
    log, which only grows) and the job's workflow, beside the history row's fields."""

    id: int
    job_id: str
    workflow: str
    timestamp: datetime
    from_state: str
    to_state: str
    message: str


class EventPage(BaseModel):
    """One read of the event log after some id (see ``Backend.events_since``)."""

    #: The events found, in id order (those of the asked workflow only, when one was).
    events: list[StreamEvent] = Field(default_factory=list)
    #: Where the next read starts (its ``after``): every event up to here was returned or
    #: did not match the filter. Beyond the last event returned when a filter skipped some.
    cursor: int = 0
    #: Whether more events past ``cursor`` exist already: the page hit its limit, or (on
    #: PostgreSQL) a transaction still in flight holds a lower id, so later events wait for it.
    #: Read again (at once when the page had events, after a short pause when not).
    more: bool = False

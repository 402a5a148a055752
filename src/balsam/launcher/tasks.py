"""A task: one job a launcher holds, with an explicit state of its own.

A job's state (``domain.states``) is what the workflow database says; a task's state is what
the launcher is doing with the job right now. Like job states, task states are data: an enum
with a docstring each, a transition table, and one function that validates every move
(:meth:`Task.move`), so what happens when a command ends is decided by the state the task is
in, never by the order in which flags are tested.

::

    WAITING --start--> STARTING --started--> RUNNING --exit--> SETTLING | DONE
    RUNNING --killed by a signal not ours--> SIGNALLED --moment passed--> SETTLING | DONE
    WAITING --queue behind a run--> QUEUED --started--> RUNNING
    SETTLING --answer--> PREPROCESSING | WAITING | POSTPROCESSING | STAGING | DONE
    STAGING --copied--> SETTLING | WAITING | DONE
    PREPROCESSING, POSTPROCESSING --exit--> SETTLING | DONE
    any with a command, SIGNALLED --stop--> STOPPING --exit--> DONE

A task whose command the launcher ends itself is STOPPING with a :class:`StopCause`, which says
what to record when the command is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from balsam.domain.states import JobFacts, JobState, job_facts
from balsam.launcher.children import Child
from balsam.launcher.placement import Placement
from balsam.schemas.apps import AppOut
from balsam.schemas.jobs import JobOut


class TaskState(StrEnum):
    """What the launcher is doing with a job it holds."""

    SETTLING = "settling"
    """A state change was recorded; the next step waits for the database's answer."""
    WAITING = "waiting"
    """Runnable, waiting for room on the nodes."""
    QUEUED = "queued"
    """Its run is queued at a worker, to start the moment the run ahead of it exits."""
    STARTING = "starting"
    """Its run was sent to a worker, which has not said yet that it started."""
    RUNNING = "running"
    """Its run is running (recorded RUNNING)."""
    SIGNALLED = "signalled"
    """Its run was ended by a signal the launcher did not send (SIGTERM, SIGKILL, ...). A
    batch system that ends an allocation signals every process in it at once, the runs a
    moment before or after the launcher: for a short while the run's end waits to learn
    whether the launcher is being stopped too (then it is a timeout, not the job's error)."""
    PREPROCESSING = "preprocessing"
    """The app's preprocess command runs."""
    POSTPROCESSING = "postprocessing"
    """The app's postprocess command (or error or timeout handler) runs."""
    STAGING = "staging"
    """Its inputs (READY) or outputs (POSTPROCESSED) are being copied by a helper thread."""
    STOPPING = "stopping"
    """The launcher is ending the task's command (see :class:`StopCause`)."""
    DONE = "done"
    """The launcher no longer holds the job."""


class StopCause(StrEnum):
    """Why the launcher ends a task's command itself, which says what it records after."""

    KILLED = "killed"
    """A user killed the job: record nothing, let go of it."""
    REFUSED = "refused"
    """The database refused the task's state change: record nothing, let go of it."""
    LOST = "lost"
    """The launcher's lease expired: the job is others' now; record nothing."""
    FENCED = "fenced"
    """The database was unreachable too long: a run is recorded lost (to run again)."""
    SHUTDOWN = "shutdown"
    """The launcher stops (time limit, signal): a run is RUN_TIMEOUT, a step is handed back."""


T = TaskState
#: Allowed moves of a task.
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    T.SETTLING: frozenset(
        {T.WAITING, T.PREPROCESSING, T.POSTPROCESSING, T.STAGING, T.SETTLING, T.DONE}
    ),
    T.STAGING: frozenset({T.SETTLING, T.WAITING, T.DONE}),
    T.WAITING: frozenset({T.STARTING, T.QUEUED, T.SETTLING, T.DONE}),
    T.QUEUED: frozenset({T.RUNNING, T.WAITING, T.SETTLING, T.STOPPING, T.DONE}),
    T.STARTING: frozenset({T.RUNNING, T.WAITING, T.SETTLING, T.STOPPING, T.DONE}),
    T.RUNNING: frozenset({T.SETTLING, T.SIGNALLED, T.STOPPING, T.DONE}),
    T.SIGNALLED: frozenset({T.SETTLING, T.STOPPING, T.DONE}),
    T.PREPROCESSING: frozenset({T.SETTLING, T.STOPPING, T.DONE}),
    T.POSTPROCESSING: frozenset({T.SETTLING, T.STOPPING, T.DONE}),
    T.STOPPING: frozenset({T.DONE}),
    T.DONE: frozenset(),
}
#: Task states in which a command of the job is at a worker.
WITH_COMMAND: frozenset[TaskState] = frozenset(
    {T.QUEUED, T.STARTING, T.RUNNING, T.PREPROCESSING, T.POSTPROCESSING, T.STOPPING}
)


class TaskTransitionError(RuntimeError):
    """A task move the table does not allow: a bug in the launcher, never a user's error."""


@dataclass(eq=False)
class Task:
    """One job this launcher holds."""

    job: JobOut
    app: AppOut
    state: TaskState = T.WAITING
    #: The job's state in the database as the launcher last knew or recorded it; sent as
    #: ``from_state`` with the next update so a move made by someone else is noticed.
    db_state: JobState | None = None
    child: Child | None = None
    placement: Placement | None = None
    stop_cause: StopCause | None = None
    #: Why the launcher stopped the command (for the history), when it did.
    stop_reason: str = ""
    #: The sequence number of the update whose answer a SETTLING task waits for.
    awaiting_seq: int = 0
    #: Its working directory exists (see :mod:`balsam.launcher.workdirs`).
    workdir_made: bool = False
    #: Runs this task queued (a rerun after its handler asked for one is the second).
    runs: int = 0
    #: The call number issued last before the task was made: answers to updates numbered up
    #: to it belong to an earlier task of the same job (one the launcher let go of, whose
    #: answer came late), not to this one.
    born_seq: int = 0
    #: A function job's run: the token its outcome file must carry (balsam.launcher.calls).
    call_token: str = ""

    def __post_init__(self) -> None:
        if self.db_state is None:
            self.db_state = self.job.state

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.job.job_id

    def move(self, new: TaskState) -> None:
        """Change the task's state (TaskTransitionError if the table does not allow it)."""
        if new not in TASK_TRANSITIONS[self.state]:
            raise TaskTransitionError(f"task {self.job_id[:8]}: {self.state} -> {new}")
        self.state = new

    def stop(self, cause: StopCause, reason: str) -> None:
        """Mark the task's command as being ended by the launcher (first cause wins)."""
        if self.state is not T.STOPPING:
            self.move(T.STOPPING)
            self.stop_cause, self.stop_reason = cause, reason

    def reload(self, job: JobOut) -> None:
        """Take the job's fields as the database has them now (a preprocess may have changed
        its arguments, environment or resources through the API); its state stays ours."""
        self.job = job.model_copy(update={"state": self.job.state})
        for derived in ("facts", "priority", "shape"):
            self.__dict__.pop(derived, None)

    @property
    def attempt(self) -> int:
        """Which run of the job this is (1 for the first), counting reruns in this task."""
        job = self.job
        return job.error_count + job.timeout_count + job.lost_count + max(self.runs, 1)

    @cached_property
    def facts(self) -> JobFacts:
        """What the state machine knows of the job (for the steps still to do)."""
        return job_facts(self.job, self.app, [], has_parents=bool(self.job.parents))

    @cached_property
    def priority(self) -> tuple[int, int, int, int]:
        """Sort key of waiting jobs: biggest (nodes, then cores, then GPUs), then longest."""
        req = self.job.resources()
        return (-req.num_nodes, -req.cpus_per_node, -req.gpus_per_node, -self.job.wall_time_minutes)

    @cached_property
    def shape(self) -> tuple[int, int, int, int]:
        """What the job takes of a node: jobs of one shape can run in each other's place."""
        req = self.job.resources()
        return (req.num_nodes, req.cpus_per_node, req.gpus_per_node, req.node_packing_count)

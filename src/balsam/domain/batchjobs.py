"""Where a launcher batch job stands, as the workflow database records it.

A batch job's row is written ``submitting`` before the scheduler is asked, so a submission
that crashes half-way is never forgotten; it then becomes ``queued`` (with the scheduler's id)
or ``submit_failed`` (with the scheduler's one-line reason). After that the states follow what
the scheduler reports (``balsam ls queues`` asks it) until one of :data:`ENDED_BATCH_STATES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class BatchJobState(StrEnum):
    """The recorded state of one launcher batch job."""

    SUBMITTING = "submitting"
    """Written, not yet known to have reached the scheduler (reconciled by its job name)."""
    SUBMIT_FAILED = "submit_failed"
    """The scheduler refused it, or it never reached the scheduler; the message says why."""
    QUEUED = "queued"
    """Waiting in the scheduler's queue (or held)."""
    RUNNING = "running"
    """Its allocation runs the launcher."""
    FINISHED = "finished"
    """The allocation ended normally (the launcher exited, or the wall time ran out)."""
    FAILED = "failed"
    """The scheduler reports a failure (a node failed, the script exited non-zero, ...)."""
    CANCELLED = "cancelled"
    """Cancelled (``balsam queue rm``, ``scancel``, preempted)."""
    GONE = "gone"
    """The scheduler no longer knows it: it ended long enough ago to be forgotten."""


#: States a batch job never leaves: the scheduler is not asked about them again.
ENDED_BATCH_STATES = frozenset(
    {
        BatchJobState.SUBMIT_FAILED,
        BatchJobState.FINISHED,
        BatchJobState.FAILED,
        BatchJobState.CANCELLED,
        BatchJobState.GONE,
    }
)

#: The environment variables in which a batch system gives a job its id (Slurm, PBS, Cobalt,
#: LSF, Flux), in the order a launcher looks for them.
BATCH_JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "COBALT_JOBID", "LSB_JOBID", "FLUX_JOB_ID")


def batch_job_name(row_id: int) -> str:
    """The scheduler job name of the batch job recorded as row ``row_id``: ``balsam-<id>``."""
    return f"balsam-{row_id}"


def batch_job_id(environ: Mapping[str, str]) -> str | None:
    """The batch job id a batch system gave this process (the first of
    :data:`BATCH_JOB_ID_VARIABLES` set and not empty), or None outside a batch job."""
    for name in BATCH_JOB_ID_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None

"""Launcher batch jobs: recorded by ``balsam submit-launch``, listed by ``balsam ls queues``,
cancelled by ``balsam queue rm ID``.

A submission is written before it is sent: the row (state ``submitting``) gives the job its
scheduler name ``balsam-<row id>``; then the row gets the scheduler's id and ``queued``, or
``submit_failed`` with the scheduler's one-line reason. A row left ``submitting`` (the command
was killed, or the database did not take the answer) is reconciled by ``balsam ls queues``: the
scheduler is asked for a job of that name (Slurm: ``squeue --name``); found, the row gets its
id; not found after :data:`RECONCILE_AFTER_SECONDS`, the row is ``submit_failed``. So no
launcher is submitted twice by a retry, and none is forgotten.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import click

from balsam.backends.base import Backend
from balsam.cli.common import BalsamCommand, BalsamGroup, active_backend, format_time, print_rows
from balsam.domain.batchjobs import ENDED_BATCH_STATES, BatchJobState, batch_job_name
from balsam.errors import InvalidTransition, SchedulerError
from balsam.platform.schedulers import LaunchRequest, Scheduler, Submission, get_scheduler
from balsam.schemas.batchjobs import BatchJobCreate, BatchJobOut, BatchJobUpdate

B = BatchJobState
#: How long a row may stay ``submitting`` before a scheduler that knows no job of its name
#: means the submission never arrived (a submit-launch still running is given that long).
RECONCILE_AFTER_SECONDS = 120.0
QUEUE_COLUMNS = (
    "ID",
    "SCHEDULER",
    "SCHED_ID",
    "PROJECT",
    "QUEUE",
    "NODES",
    "MINUTES",
    "MODE",
    "STATE",
    "UPDATED",
    "MESSAGE",
)


def submit_recorded(
    backend: Backend, scheduler: Scheduler, request: LaunchRequest
) -> tuple[BatchJobOut, Submission]:
    """Record the batch job, submit it under its row's name, record the answer.

    A refusal is recorded (``submit_failed``, with its reason) and raised again.
    """
    spec = BatchJobCreate(
        scheduler=scheduler.name,
        project=request.project,
        queue=request.queue,
        num_nodes=request.num_nodes,
        wall_time_minutes=request.wall_time_minutes,
        job_mode=request.job_mode,
        wf_filter=request.wf_filter,
        client_key=uuid.uuid4().hex,
    )
    row = backend.create_batch_job(spec)
    named = dataclasses.replace(request, job_name=batch_job_name(row.id))
    try:
        submission = scheduler.submit(named)
    except SchedulerError as exc:
        failed = BatchJobUpdate(state=B.SUBMIT_FAILED, status_message=str(exc))
        backend.update_batch_job(row.id, failed)
        raise
    queued = BatchJobUpdate(
        scheduler_id=submission.launch_id, state=B.QUEUED, script=str(submission.script)
    )
    return backend.update_batch_job(row.id, queued), submission


def refresh(backend: Backend, rows: list[BatchJobOut]) -> list[BatchJobOut]:
    """``rows`` with the scheduler's current state of each that has not ended (saved).

    A scheduler that cannot be asked leaves its rows as they are, with a warning on stderr.
    """
    fresh = {row.id: row for row in rows}
    by_scheduler: dict[str, list[BatchJobOut]] = {}
    for row in rows:
        if row.state not in ENDED_BATCH_STATES:
            by_scheduler.setdefault(row.scheduler, []).append(row)
    for name, live in by_scheduler.items():
        try:
            scheduler = get_scheduler(name)
            for row in _refreshed(backend, scheduler, live):
                fresh[row.id] = row
        except SchedulerError as exc:
            click.echo(f"balsam: warning: cannot ask the {name} scheduler: {exc}", err=True)
    return [fresh[row.id] for row in rows]


def _refreshed(
    backend: Backend, scheduler: Scheduler, rows: list[BatchJobOut]
) -> list[BatchJobOut]:
    rows = [_reconcile(backend, scheduler, row) for row in rows]
    known = [row for row in rows if row.scheduler_id and row.state not in ENDED_BATCH_STATES]
    states = scheduler.status([row.scheduler_id for row in known if row.scheduler_id])
    changed = []
    for row in known:
        now = B(states.get(row.scheduler_id or "", B.GONE).value)
        if now is not row.state:
            changed.append(backend.update_batch_job(row.id, BatchJobUpdate(state=now)))
    return rows + changed


def _reconcile(backend: Backend, scheduler: Scheduler, row: BatchJobOut) -> BatchJobOut:
    """A row left ``submitting``: its scheduler id found by name, or given up on."""
    if row.state is not B.SUBMITTING:
        return row
    found = scheduler.find(batch_job_name(row.id))
    if found:
        message = "submitted; its id was found by name after the submitter lost it"
        change = BatchJobUpdate(scheduler_id=found[0], state=B.QUEUED, status_message=message)
        return backend.update_batch_job(row.id, change)
    age = datetime.now(UTC) - row.created_at
    if age < timedelta(seconds=RECONCILE_AFTER_SECONDS):
        return row
    message = (
        f"never reached the {scheduler.name} scheduler (no job named {batch_job_name(row.id)})"
    )
    return backend.update_batch_job(
        row.id, BatchJobUpdate(state=B.SUBMIT_FAILED, status_message=message)
    )


def queue_rows(rows: list[BatchJobOut]) -> list[list[str]]:
    """The cells of ``balsam ls queues``, one row per batch job."""
    return [
        [
            str(row.id),
            row.scheduler,
            row.scheduler_id or "-",
            row.project,
            row.queue,
            str(row.num_nodes),
            f"{row.wall_time_minutes:g}",
            row.job_mode,
            row.state.value,
            format_time(row.updated_at),
            row.status_message,
        ]
        for row in rows
    ]


def list_queues(backend: Backend) -> None:
    """Print every recorded batch job with its scheduler's current state."""
    print_rows(QUEUE_COLUMNS, queue_rows(refresh(backend, backend.list_batch_jobs())))


@click.group("queue", cls=BalsamGroup)
def queue_group() -> None:
    """Launcher batch jobs (see 'balsam ls queues')."""


@queue_group.command("rm", cls=BalsamCommand)
@click.argument("batch_id", metavar="ID", type=click.IntRange(min=1))
def queue_rm(batch_id: int) -> None:
    """Cancel the launcher batch job ID (as 'balsam ls queues' numbers them)."""
    with active_backend() as (_site, backend):
        row = backend.get_batch_job(batch_id)
        if row.state in ENDED_BATCH_STATES:
            raise InvalidTransition(f"batch job {batch_id} has ended already ({row.state})")
        if not row.scheduler_id:
            raise InvalidTransition(
                f"batch job {batch_id} has no scheduler id yet (it is being submitted): "
                "see 'balsam ls queues'"
            )
        get_scheduler(row.scheduler).cancel(row.scheduler_id)
        backend.update_batch_job(
            batch_id,
            BatchJobUpdate(state=B.CANCELLED, status_message="cancelled by balsam queue rm"),
        )
    click.echo(f"Cancelled batch job {batch_id} ({row.scheduler} job {row.scheduler_id})")


#: Commands this module adds to ``balsam``.
COMMANDS: list[click.Command] = [queue_group]

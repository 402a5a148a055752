"""Launcher batch jobs: recorded by ``balsam submit-launch``, listed by ``balsam ls queues``,
shown with their history by ``balsam queue show ID``, cancelled by ``balsam queue rm ID``.

How a submission is recorded and reconciled is in :mod:`balsam.site.batchjobs`.
"""

from __future__ import annotations

import click

from balsam.backends.base import Backend
from balsam.cli.common import BalsamCommand, BalsamGroup, active_backend, format_time, print_rows
from balsam.domain.batchjobs import ENDED_BATCH_STATES, BatchJobState, batch_job_name
from balsam.errors import InvalidTransition
from balsam.platform.schedulers import get_scheduler
from balsam.schemas.batchjobs import BatchJobOut, BatchJobUpdate
from balsam.site.batchjobs import refresh

B = BatchJobState
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
    rows = refresh(backend, backend.list_batch_jobs(), warn=_warn)
    print_rows(QUEUE_COLUMNS, queue_rows(rows))


def _warn(message: str) -> None:
    click.echo(f"balsam: warning: {message}", err=True)


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


@queue_group.command("show", cls=BalsamCommand)
@click.argument("batch_id", metavar="ID", type=click.IntRange(min=1))
def queue_show(batch_id: int) -> None:
    """Show the launcher batch job ID: its fields, the scheduler's state, its history and the
    launcher sessions that ran in it."""
    with active_backend() as (_site, backend):
        (row,) = refresh(backend, [backend.get_batch_job(batch_id)], warn=_warn)
        events = backend.batch_job_history(batch_id)
        sessions = [
            s
            for s in backend.list_sessions()
            if row.scheduler_id and s.batch_job == row.scheduler_id
        ]
    fields = [
        ("batch job", str(row.id)),
        (
            "scheduler",
            f"{row.scheduler} (job {row.scheduler_id or '-'}, name {batch_job_name(row.id)})",
        ),
        ("project / queue", f"{row.project or '-'} / {row.queue or '-'}"),
        ("nodes, minutes", f"{row.num_nodes}, {row.wall_time_minutes:g}"),
        ("job mode", row.job_mode + (f", workflow {row.wf_filter}" if row.wf_filter else "")),
        ("state", row.state.value + (f": {row.status_message}" if row.status_message else "")),
        ("script", row.script or "-"),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name:<{width}}  {value}")
    click.echo("\nhistory:")
    for event in events:
        hop = f"{event.from_state or '(new)'} -> {event.to_state}"
        said = f"  {event.message}" if event.message else ""
        click.echo(f"  {format_time(event.timestamp)}  {hop}{said}")
    if sessions:
        click.echo("\nlauncher sessions:")
        for found in sessions:
            started = format_time(found.created_at)
            click.echo(f"  session {found.id} on {found.hostname} (pid {found.pid}), {started}")


#: Commands this module adds to ``balsam``.
COMMANDS: list[click.Command] = [queue_group]

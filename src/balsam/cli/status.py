"""``balsam status``: the campaign on one screen.

Jobs per state, the launchers running now (open sessions, with their last heartbeat), the
batch jobs not yet ended (as recorded: the scheduler is not asked, so the command stays quick
on a login node), and the last jobs that failed or hit an error, each with the tail of its
error. Every part is one or two queries whatever the database's size (the error tails: one
history read per job shown).
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from balsam.backends.base import Backend
from balsam.cli.common import BalsamCommand, client_backend, format_time, print_rows
from balsam.cli.queues import QUEUE_COLUMNS, queue_rows
from balsam.config import Site
from balsam.domain.batchjobs import ENDED_BATCH_STATES
from balsam.domain.states import JobState
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import JobQuery, clause_from_kwargs

S = JobState
#: States whose jobs are listed under "last errors", newest first.
ERROR_STATES = (S.RUN_ERROR, S.FAILED)
#: How many lines of each error message are shown.
TAIL_LINES = 3


@click.command("status", cls=BalsamCommand)
@click.option(
    "--errors",
    "error_count",
    type=click.IntRange(min=0, max=100),
    default=5,
    show_default=True,
    help="How many of the last failed jobs to show.",
)
def status_command(error_count: int) -> None:
    """One screen: jobs per state, running launchers, batch jobs, the last errors.

    \b
    Examples:
      balsam status
      watch balsam status --errors 10
    """
    with client_backend() as (site, backend):
        _print_status(site, backend, error_count)


def _print_status(site: Site | None, backend: Backend, error_count: int) -> None:
    counts = backend.count_by_state(JobQuery())
    total = sum(counts.values())
    click.echo(f"Workflow database {_where(site, backend)}: {total} job(s)")
    _section("Jobs per state")
    if total:
        cells = [(state.value, str(counts[state.value])) for state in S if counts.get(state.value)]
        print_rows(("STATE", "COUNT"), cells)
    else:
        click.echo("no jobs")

    _section("Launchers running")
    sessions = backend.list_sessions()
    if sessions:
        now = datetime.now(UTC)
        print_rows(
            ("SESSION", "HOST", "PID", "BATCH JOB", "STARTED", "LAST HEARTBEAT"),
            (
                [
                    str(s.id),
                    s.hostname,
                    str(s.pid),
                    s.batch_job or "-",
                    format_time(s.created_at),
                    f"{_seconds_since(s.heartbeat, now)} s ago",
                ]
                for s in sessions
            ),
        )
    else:
        click.echo("none")

    _section("Batch jobs not ended (as recorded; 'balsam ls queues' asks the scheduler)")
    batch = [b for b in backend.list_batch_jobs() if b.state not in ENDED_BATCH_STATES]
    if batch:
        print_rows(QUEUE_COLUMNS, queue_rows(batch))
    else:
        click.echo("none")

    if error_count:
        _section(f"Last errors (up to {error_count})")
        failing = _last_errors(backend, error_count)
        if not failing:
            click.echo("none")
        for job in failing:
            click.echo(
                f"{job.job_id[:8]}  {job.name}  ({job.workflow})  {job.state}"
                f"  {format_time(job.state_timestamp)}"
            )
            for line in _error_tail(backend, job):
                click.echo(f"    {line}")


def _section(title: str) -> None:
    click.echo("")
    click.secho(title, bold=True)


def _where(site: Site | None, backend: Backend) -> str:
    """The database's path and kind, or its URL on a server."""
    from balsam.backends.remote import served_url  # httpx only for this command

    url = served_url(backend)
    if url is not None:
        return f"{url} (Balsam server)"
    assert site is not None, "a local Backend always has its site"
    return f"{site.path} ({_kind(site)})"


def _kind(site: Site) -> str:
    database = site.settings.database
    if database.kind == "url":
        return "PostgreSQL" if database.url.startswith("postgresql") else database.url.split(":")[0]
    return {"sqlite": "SQLite", "postgres": "owned PostgreSQL"}[database.kind]


def _seconds_since(when: datetime, now: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int((now - when).total_seconds()))


def _last_errors(backend: Backend, count: int) -> list[JobOut]:
    states = [s.value for s in ERROR_STATES]
    query = JobQuery(
        clauses=[clause_from_kwargs({"state__in": states})],
        order_by=["-state_timestamp"],
        limit=count,
    )
    return backend.query_jobs(query)


def _error_tail(backend: Backend, job: JobOut) -> list[str]:
    """The last lines of the newest run error's message (the run's output tail), else of the
    message that failed the job (a failed stage-in, a parent that failed, ...)."""
    history = list(reversed(backend.history(job.job_id)))
    for wanted in (S.RUN_ERROR.value, S.FAILED.value):
        for event in history:
            if event.to_state == wanted and event.message.strip():
                return event.message.strip().splitlines()[-TAIL_LINES:]
    return []


COMMANDS: list[click.Command] = [status_command]

"""Launcher batch jobs around the scheduler: recorded before they are sent, refreshed after.

A submission is written before it is sent: the row (state ``submitting``) gives the job its
scheduler name ``balsam-<row id>``; then the row gets the scheduler's id and ``queued``, or
``submit_failed`` with the scheduler's one-line reason. A row left ``submitting`` (the
submitter was killed, or the database did not take the answer) is reconciled by
:func:`refresh` (``balsam ls queues``, every pass of the service): the scheduler is asked for
a job of that name (Slurm: ``squeue --name``); found, the row gets its id; not found after
:data:`RECONCILE_AFTER_SECONDS`, the row is ``submit_failed``. So no launcher is submitted
twice by a retry, and none is forgotten.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.domain.batchjobs import ENDED_BATCH_STATES, BatchJobState, batch_job_name
from balsam.errors import ConfigError, SchedulerError
from balsam.platform.schedulers import LaunchRequest, Scheduler, Submission, get_scheduler
from balsam.schemas.batchjobs import BatchJobCreate, BatchJobOut, BatchJobUpdate

B = BatchJobState
#: How long a row may stay ``submitting`` before a scheduler that knows no job of its name
#: means the submission never arrived (a submit-launch still running is given that long).
RECONCILE_AFTER_SECONDS = 120.0
#: Told each problem that does not stop the caller (a scheduler that cannot be asked).
Warn = Callable[[str], None]


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


def refresh(
    backend: Backend,
    rows: list[BatchJobOut],
    warn: Warn,
    schedulers: Callable[[str], Scheduler] = get_scheduler,
) -> list[BatchJobOut]:
    """``rows`` with the scheduler's current state of each that has not ended (saved).

    A scheduler that cannot be asked leaves its rows as they are, and ``warn`` is told why.
    """
    fresh = {row.id: row for row in rows}
    by_scheduler: dict[str, list[BatchJobOut]] = {}
    for row in rows:
        if row.state not in ENDED_BATCH_STATES:
            by_scheduler.setdefault(row.scheduler, []).append(row)
    for name, live in by_scheduler.items():
        try:
            scheduler = schedulers(name)
            for row in _refreshed(backend, scheduler, live):
                fresh[row.id] = row
        except SchedulerError as exc:
            warn(f"cannot ask the {name} scheduler: {exc}")
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
            change = BatchJobUpdate(state=now)
            changed.append(backend.update_batch_job(row.id, change))
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


def read_site_template(site: Site) -> str | None:
    """The text of the site's batch-script template (``platform.batch_script_template``), None
    when it has none; ConfigError when the file cannot be read."""
    name = site.settings.platform.batch_script_template
    if not name:
        return None
    path = site.path / name
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"platform.batch_script_template: cannot read {path}: {reason}") from None

"""``balsam service``: one loop per workflow database that keeps launchers queued for its work.

Each pass, under the database's service lock (:mod:`balsam.services.service_lock`):

1. refresh the launcher batch jobs from the scheduler (reconciling submissions a crash left
   half-done, :func:`balsam.site.batchjobs.refresh`);
2. recover the jobs of launcher sessions whose lease expired (the launchers' own rule,
   ``launcher.lease_seconds``; the database's compare-and-set makes two recoverers harmless);
3. read the backlog by size (``Backend.job_shapes``) and ask :func:`balsam.site.elastic.plan`
   what to submit and withdraw, within the site's queue policy and the queues backing off;
4. submit (recorded before sent, as ``balsam submit-launch`` does) and withdraw (cancel, then
   record why), logging each decision with its reason;
5. renew the lock with a JSON report of the pass, which ``balsam service status`` shows.

Nothing is kept in memory between passes that the database does not also hold: a service
killed at any moment (SIGKILL included) is followed by one that carries on from the rows. A
scheduler that refuses a submission leaves a ``submit_failed`` row with its reason; the queue
is left alone for ``service.submit_backoff_seconds``, doubled after each refusal in a row
(:func:`blocked_queues`, read from those rows). An error in a pass is logged and the next pass
comes after a pause that grows while errors repeat; the loop itself never dies of one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from balsam.backends.base import Backend
from balsam.batch_settings import ServiceSettings
from balsam.config import Site
from balsam.domain.batchjobs import ENDED_BATCH_STATES, BatchJobState
from balsam.domain.states import LAUNCHER_CLAIMABLE_STATES, PROCESSING_STATES
from balsam.errors import BalsamError, ConfigError, SchedulerError
from balsam.platform.schedulers import LaunchRequest, Scheduler
from balsam.platform.schedulers.base import BackfillWindow
from balsam.schemas.batchjobs import BatchJobOut, BatchJobUpdate
from balsam.schemas.queries import Clause, Condition, JobQuery, Lookup
from balsam.schemas.service import SERVICE_LOCK
from balsam.site import elastic
from balsam.site.batchjobs import read_site_template, refresh, submit_recorded
from balsam.site.processing import ProcessingLauncher

log = logging.getLogger(__name__)
B = BatchJobState
#: How many of its latest decisions the service's report keeps (the log keeps all).
RECENT_DECISIONS = 20
#: Longest pause after passes that fail one after another.
MAX_ERROR_PAUSE_SECONDS = 300.0


@dataclass
class PassReport:
    """What one pass saw and did (stored as JSON with the lock, for ``service status``)."""

    at: str
    summary: str = ""
    submitted: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    unrunnable: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    recovered_sessions: list[int] = field(default_factory=list)
    #: The processing launcher's state, with ``service.processing`` (else empty).
    processing: str = ""
    errors: list[str] = field(default_factory=list)
    #: The service's latest decisions of earlier passes too, newest last (``RECENT_DECISIONS``).
    recent: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The report as the lock's ``status`` text."""
        return json.dumps(self.__dict__)


def service_queues(site: Site) -> list[elastic.Queue]:
    """The queues the service may submit to, in order, with the site's limits (ConfigError
    when there are none, or the service names a queue the site does not list)."""
    settings = site.settings
    names = settings.service.queues or list(settings.queues)
    if not names:
        raise ConfigError(
            "the service has no queue to submit to: list queues in settings.yml "
            "(queues: {NAME: {max_nodes: ..., max_wall_time_minutes: ...}})"
        )
    queues = []
    for name in names:
        limits = settings.queues.get(name)
        if limits is None and settings.queues:
            known = ", ".join(settings.queues)
            raise ConfigError(f"service.queues names {name!r}, not one of the queues ({known})")
        if limits is None:
            queues.append(elastic.Queue(name))
            continue
        queues.append(
            elastic.Queue(
                name,
                min_nodes=limits.min_nodes,
                max_nodes=limits.max_nodes,
                max_wall_time_minutes=limits.max_wall_time_minutes,
                max_queued_jobs=limits.max_queued_jobs,
            )
        )
    return queues


def service_project(site: Site) -> str:
    """What the service's launchers charge: ``service.project``, else the first project."""
    settings = site.settings
    project = settings.service.project or (settings.projects[0] if settings.projects else "")
    if settings.projects and project not in settings.projects:
        raise ConfigError(f"service.project {project!r} is not one of the site's projects")
    return project


def blocked_queues(
    rows: Sequence[BatchJobOut], now: datetime, settings: ServiceSettings
) -> dict[str, str]:
    """Queues whose last submissions were refused, backing off, with why.

    The pause is ``submit_backoff_seconds`` doubled for each refusal in a row (to
    ``max_backoff_seconds``), counted from the last refusal; a submission that went through
    ends the run of refusals.
    """
    blocked = {}
    for queue in {row.queue for row in rows}:
        mine = sorted((r for r in rows if r.queue == queue), key=lambda r: r.id, reverse=True)
        refusals = 0
        for row in mine:
            if row.state is not B.SUBMIT_FAILED:
                break
            refusals += 1
        if not refusals:
            continue
        pause = min(
            settings.max_backoff_seconds,
            settings.submit_backoff_seconds * 2 ** min(refusals - 1, 30),
        )
        until = mine[0].updated_at + timedelta(seconds=pause)
        if now < until:
            left = (until - now).total_seconds()
            blocked[queue] = (
                f"{refusals} refusal(s) in a row, last: {mine[0].status_message}; "
                f"next try in {left:.0f} s"
            )
    return blocked


def backlog_query(state_names: Sequence[str], wf_filter: str) -> JobQuery:
    """Jobs in these states that no launcher holds (of the workflow, when given)."""
    conditions = [
        Condition(field="state", lookup=Lookup.IN, value=list(state_names)),
        Condition(field="session_id", lookup=Lookup.ISNULL, value=True),
    ]
    if wf_filter:
        conditions.append(Condition(field="workflow", value=wf_filter))
    return JobQuery(clauses=[Clause(conditions=conditions)])


class ElasticService:
    """The service's passes for one workflow database (see the module docstring).

    ``holder`` is this service's lock token; ``stop`` is set to end the loop (SIGTERM, or a
    stop request seen in the lock). ``clock`` gives the time (UTC).
    """

    def __init__(
        self,
        site: Site,
        backend: Backend,
        scheduler: Scheduler,
        holder: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.site = site
        self.settings = site.settings.service
        self.backend = backend
        self.scheduler = scheduler
        self.holder = holder
        self.clock = clock
        self.stop = threading.Event()
        self.recent: deque[str] = deque(maxlen=RECENT_DECISIONS)
        self.queues = service_queues(site)
        self.project = service_project(site)
        self.processing = (
            ProcessingLauncher(site, self.settings.wf_filter) if self.settings.processing else None
        )

    def run(self) -> None:
        """Pass after pass until stopped or the lock is lost (then NotFound is raised)."""
        try:
            self._passes()
        finally:
            if self.processing is not None:
                self.processing.stop(self.site.settings.launcher.kill_grace_seconds + 30)

    def _passes(self) -> None:
        failures = 0
        while not self.stop.is_set():
            report = self.one_pass()
            failures = failures + 1 if report.errors else 0
            lock = self.backend.renew_service_lock(
                SERVICE_LOCK,
                self.holder,
                lease_seconds=self.settings.lock_seconds,
                status=report.to_json(),
            )
            if lock.stop_requested:
                log.info("stop requested through the database: stopping")
                return
            self.stop.wait(self._pause(failures))

    def _pause(self, failures: int) -> float:
        """The period; after failing passes, longer (doubling, but never past the lock's
        renewal time, which must come before another service may take over)."""
        period = self.settings.period_seconds
        if not failures:
            return period
        longer = min(MAX_ERROR_PAUSE_SECONDS, period * 2.0 ** min(failures, 10))
        return min(longer, self.settings.lock_seconds / 3)

    def one_pass(self) -> PassReport:
        """Observe, decide, act; every error is caught, logged and put in the report."""
        report = PassReport(at=self.clock().isoformat(timespec="seconds"))
        try:
            if self.processing is not None:
                report.processing = self.processing.ensure()
            self._pass(report)
        except (BalsamError, OSError) as exc:
            report.errors.append(f"{type(exc).__name__}: {exc}")
            log.warning("pass failed: %s: %s", type(exc).__name__, exc)
        except Exception as exc:
            report.errors.append(f"{type(exc).__name__}: {exc}")
            log.error("pass failed unexpectedly:\n%s", traceback.format_exc())
        for kind, items in (("submitted", report.submitted), ("withdrew", report.withdrawn)):
            self.recent.extend(f"{report.at} {kind} {item}" for item in items)
        report.recent = list(self.recent)
        return report

    def _pass(self, report: PassReport) -> None:
        mine = [r for r in self.backend.list_batch_jobs() if r.scheduler == self.scheduler.name]
        rows = refresh(self.backend, mine, self._warn(report), lambda _name: self.scheduler)
        report.recovered_sessions = self._recover_leases()
        given = self._observe(rows, report)
        decided = elastic.plan(given)
        report.summary = decided.summary
        for each in decided.unrunnable:
            text = f"{each.shape.describe()}: {each.reason}"
            report.unrunnable.append(text)
            log.warning("cannot be run by any queue: %s", text)
        live = {row.id: row for row in rows if row.state not in ENDED_BATCH_STATES}
        for withdraw in decided.withdraw:
            self._withdraw(live[withdraw.batch_id], withdraw.reason, report)
        for submit in decided.submit:
            self._submit(submit, report)
        if not (decided.submit or decided.withdraw):
            log.info("no change: %s", decided.summary)

    def _warn(self, report: PassReport) -> Callable[[str], None]:
        def warn(message: str) -> None:
            report.errors.append(message)
            log.warning("%s", message)

        return warn

    def _recover_leases(self) -> list[int]:
        lease = self.site.settings.launcher.expire_after_seconds
        recovered = self.backend.expire_sessions(lease)
        if recovered:
            log.warning("recovered the jobs of expired launcher session(s) %s", recovered)
        return recovered

    def _observe(self, rows: list[BatchJobOut], report: PassReport) -> elastic.PolicyInput:
        wf = self.settings.wf_filter
        claimable = sorted(s.value for s in LAUNCHER_CLAIMABLE_STATES)
        shapes = self.backend.job_shapes(backlog_query(claimable, wf))
        processing = sorted(s.value for s in PROCESSING_STATES)
        waiting = self.backend.count_jobs(backlog_query(processing, wf))
        started = {s.batch_job for s in self.backend.list_sessions() if s.batch_job}
        launchers = [
            elastic.Launcher(
                batch_id=row.id,
                queue=row.queue,
                num_nodes=row.num_nodes,
                wall_time_minutes=row.wall_time_minutes,
                running=row.state is B.RUNNING,
                started=row.scheduler_id in started,
            )
            for row in rows
            if row.state in (B.SUBMITTING, B.QUEUED, B.RUNNING)
        ]
        blocked = blocked_queues(rows, self.clock(), self.settings)
        report.blocked = [f"{name}: {why}" for name, why in sorted(blocked.items())]
        return elastic.PolicyInput(
            backlog=[
                elastic.Shape(s.num_nodes, s.node_packing_count, s.wall_time_minutes, s.count)
                for s in shapes
            ],
            launchers=launchers,
            queues=self.queues,
            wall_time_minutes=self.settings.wall_time_minutes,
            processing_waiting=waiting,
            backfill=self._backfill(report) if self.settings.use_backfill else {},
            blocked=blocked,
        )

    def _backfill(self, report: PassReport) -> dict[str, list[BackfillWindow]]:
        windows = {}
        for queue in self.queues:
            try:
                windows[queue.name] = self.scheduler.backfill(queue.name)
            except SchedulerError as exc:
                report.errors.append(f"backfill of {queue.name}: {exc}")
                log.warning("cannot read the free nodes of %s: %s", queue.name, exc)
        return windows

    def _submit(self, submit: elastic.Submit, report: PassReport) -> None:
        request = LaunchRequest(
            project=self.project,
            queue=submit.queue,
            wall_time_minutes=submit.wall_time_minutes,
            num_nodes=submit.num_nodes,
            job_mode=self.settings.job_mode,
            site_path=self.site.path,
            scripts_dir=self.site.scripts_dir,
            wf_filter=self.settings.wf_filter or None,
            sched_flags=tuple(self.settings.sched_flags),
            script_template=read_site_template(self.site),
        )
        what = f"{submit.num_nodes} node(s) x {request.wall_time_minutes:g} min in {submit.queue}"
        try:
            row, submission = submit_recorded(self.backend, self.scheduler, request)
        except SchedulerError as exc:
            report.errors.append(f"submit {what}: {exc}")
            log.warning("submission of %s refused: %s (wanted: %s)", what, exc, submit.reason)
            return
        text = f"batch job {row.id} ({self.scheduler.name} {submission.launch_id}): {what}"
        report.submitted.append(f"{text}: {submit.reason}")
        log.info("submitted %s, because %s", text, submit.reason)

    def _withdraw(self, row: BatchJobOut, reason: str, report: PassReport) -> None:
        what = f"batch job {row.id} ({self.scheduler.name} {row.scheduler_id or '-'})"
        if row.scheduler_id is None:
            return  # still being submitted: reconciled first, withdrawn on a later pass
        try:
            self.scheduler.cancel(row.scheduler_id)
        except SchedulerError as exc:
            report.errors.append(f"withdraw {what}: {exc}")
            log.warning("cannot withdraw %s: %s", what, exc)
            return
        message = f"withdrawn by the service: {reason}"
        self.backend.update_batch_job(
            row.id, BatchJobUpdate(state=B.CANCELLED, status_message=message)
        )
        report.withdrawn.append(f"{what}: {reason}")
        log.info("withdrew %s, because %s", what, reason)


def lock_age_text(expires_at: datetime, now: datetime | None = None) -> str:
    """``expires in 42 s`` / ``expired 3 min ago``."""
    left = (expires_at - (now or datetime.now(UTC))).total_seconds()
    if left >= 0:
        return f"expires in {left:.0f} s"
    ago = -left
    return f"expired {ago / 60:.0f} min ago" if ago >= 120 else f"expired {ago:.0f} s ago"


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    """Poll ``check`` until true or ``timeout`` seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)

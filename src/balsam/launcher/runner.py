"""The launcher's event loop: one process, one selector, no threads.

The loop wakes on a child's exit (pidfd), on a signal (wakeup fd) or on the next timer
(heartbeat, flush, claim poll, kill escalation, time limit), then:

1. heartbeats the session lease when due, and stops jobs a user killed;
2. claims runnable jobs when there is room, advancing READY/STAGED_IN ones itself;
3. starts waiting jobs on free nodes;
4. flushes buffered state changes when due;
5. with ``--consume-all``, exits once nothing it could run remains (see docs/launcher.md).

On a time limit or SIGTERM/SIGINT it stops every child (SIGTERM, then SIGKILL after
``kill_grace_seconds``), reports running jobs RUN_TIMEOUT and closes its session, which hands
back every job it still holds.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.domain.resources import NodeSpec
from balsam.domain.states import JobState
from balsam.errors import DatabaseError, NotFound
from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.jobflow import JobFlow, Task
from balsam.launcher.logs import job_extra
from balsam.launcher.options import JobMode, LauncherOptions
from balsam.launcher.placement import NodePool
from balsam.launcher.updates import FlushResult, UpdateBuffer
from balsam.platform.mpi import MpiLauncher, find_mpi_launcher, search_path
from balsam.platform.nodes import discover_nodes, local_hostname
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import JobQuery, clause_from_kwargs
from balsam.schemas.sessions import ClaimRequest

log = logging.getLogger(__name__)
S = JobState

#: How often an idle launcher asks for new jobs.
IDLE_POLL_SECONDS = 1.0
#: States of jobs that may still become work for a launcher (see :meth:`Launcher.remaining`).
UPCOMING_STATES = [
    S.CREATED,
    S.AWAITING_PARENTS,
    S.READY,
    S.STAGED_IN,
    S.PREPROCESSED,
    S.RESTART_READY,
]
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Launcher(JobFlow):
    """Runs the jobs of one workflow database on the nodes of one allocation."""

    def __init__(
        self,
        site: Site,
        backend: Backend,
        options: LauncherOptions,
        nodes: list[NodeSpec],
        mpi: MpiLauncher | None,
        hostname: str,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.site = site
        self.backend = backend
        self.options = options
        self.settings = site.settings.launcher
        self.pool = NodePool(nodes)
        self.mpi = mpi
        self.mpi_mode = options.job_mode is JobMode.MPI
        self.hostname = hostname
        self.environ = dict(os.environ if environ is None else environ)
        self.selector = selectors.DefaultSelector()
        self.children = ChildProcesses(self.selector)
        self.tasks: dict[str, Task] = {}
        self.started = time.monotonic()
        self.stop_at = self._stop_time()
        self.stop_reason: str | None = None
        self.finished = False
        self.exit_code = 0
        self.next_claim = 0.0
        self.next_heartbeat = 0.0
        self.session_id = 0
        self.updates = UpdateBuffer(backend, 0, self.settings.flush_interval_seconds)

    def _stop_time(self) -> float | None:
        """When to start stopping jobs: the time limit less the kill grace period.

        The lead is at most a quarter of the limit, so that a short limit still runs jobs.
        """
        if self.options.time_limit_minutes is None:
            return None
        limit = self.options.time_limit_minutes * 60
        return self.started + limit - min(self.settings.kill_grace_seconds, limit / 4)

    # ---- lifecycle -----------------------------------------------------------------------

    def run(self) -> int:
        """Run until done, out of time or signalled; returns the process exit code."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        previous = self._install_signals(wake_w)
        try:
            label = f"{self.options.job_mode} mode, {len(self.pool)} node(s)"
            session = self.backend.open_session(label, self.hostname, os.getpid())
            self.session_id = self.updates.session_id = session.id
            log.info("session %d opened: %s, nodes %s", session.id, label, self._hosts())
            try:
                self._loop()
            finally:
                self._shutdown()
        finally:
            self._restore_signals(previous)
            self.selector.close()
            os.close(wake_r)
            os.close(wake_w)
        return self.exit_code

    def _hosts(self) -> str:
        return ",".join(f"{n.hostname}({n.cpus} cpus)" for n in self.pool.specs)

    def _install_signals(self, wake_w: int) -> dict[int, Any]:
        previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        previous[-1] = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        signal.set_wakeup_fd(previous.pop(-1))
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_reason is None:
            self.stop_reason = f"launcher received {signal.Signals(signum).name}"
            self.exit_code = 128 + signum
        else:
            # A second signal: no more grace for the children.
            for child in self.children:
                child.kill_at = min(child.kill_at or 0.0, time.monotonic())

    def _loop(self) -> None:
        while self.stop_reason is None and not self.finished:
            now = time.monotonic()
            if self.stop_at is not None and now >= self.stop_at:
                self.stop_reason = "launcher time limit reached"
                break
            self._heartbeat(now)
            self.children.escalate(now)
            if self._claim_due(now):
                self._claim(now)
            self._start_waiting(now)
            due = self.updates.due_at()
            if due is not None and now >= due:
                self.flush(now)
            if not self.finished and self.stop_reason is None:
                self._wait(self._timeout(now))

    def _timeout(self, now: float) -> float:
        times = [self.next_heartbeat]
        for when in (self.updates.due_at(), self.children.next_kill_at(), self.stop_at):
            if when is not None:
                times.append(when)
        if self._claim_budget() > 0:
            times.append(self.next_claim)
        return max(0.0, min(times) - now)

    def _wait(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                _drain(key.fd)
            else:
                self._on_exit(key.data, time.monotonic())

    def _shutdown(self) -> None:
        """Stop every child, record what happened, close the session."""
        now = time.monotonic()
        if len(self.children):
            reason = self.stop_reason or "launcher stopped"
            self.stop_reason = reason
            log.info("stopping %d running command(s): %s", len(self.children), reason)
            for child in self.children:
                self.children.terminate(child, self.settings.kill_grace_seconds, now)
            give_up = now + self.settings.kill_grace_seconds + 30
            while len(self.children) and time.monotonic() < give_up:
                self.children.escalate(time.monotonic())
                self._wait(min(0.5, self._until_kill()))
        for _ in range(3):
            if not self.flush(time.monotonic()).failed:
                break
            time.sleep(1.0)
        self.backend.close_session(self.session_id)
        log.info("session %d closed (%s)", self.session_id, self.stop_reason or "done")

    def _until_kill(self) -> float:
        when = self.children.next_kill_at()
        return 0.5 if when is None else max(0.0, when - time.monotonic())

    # ---- lease and claims -------------------------------------------------------------------

    def _heartbeat(self, now: float) -> None:
        if now < self.next_heartbeat:
            return
        self.next_heartbeat = now + self.settings.heartbeat_seconds
        try:
            killed = self.backend.heartbeat(self.session_id)
        except NotFound as exc:
            log.error("lost the session lease, stopping: %s", exc)
            self.stop_reason, self.exit_code = "launcher lost its session lease", 1
            return
        except DatabaseError as exc:
            log.warning("heartbeat failed, will retry: %s", exc)
            return
        for job_id in killed:
            self.stop_job(job_id, now, "killed by user")

    def _claim_budget(self) -> int:
        """How many jobs to claim: room for every free slot plus one round of prefetch.

        Holding one round ahead lets the next job start the moment a slot frees, without a
        database round trip; claiming waits until less than a round is queued.
        """
        if self.stop_reason is not None:
            return 0
        waiting = sum(1 for t in self.tasks.values() if t.child is None)
        prefetch = self.pool.capacity(self.mpi_mode)
        if waiting >= prefetch:
            return 0
        free = self.pool.free_slots(self.mpi_mode) + prefetch - waiting
        return max(0, min(self.settings.claim_batch, free))

    def _claim_due(self, now: float) -> bool:
        return now >= self.next_claim and self._claim_budget() > 0

    def remaining_minutes(self, now: float) -> float | None:
        """Minutes left before jobs are stopped (None without a time limit)."""
        if self.stop_at is None:
            return None
        return max(0.0, (self.stop_at - now) / 60)

    def _claim(self, now: float) -> None:
        # The service must see finished jobs first: they may free their children.
        self.flush(now)
        budget = self._claim_budget()
        request = ClaimRequest(
            limit=budget,
            workflows=self.options.workflows,
            max_nodes=len(self.pool),
            serial_only=not self.mpi_mode,
            max_wall_time_minutes=self.remaining_minutes(now),
        )
        try:
            jobs = self.backend.claim_jobs(self.session_id, request)
        except NotFound as exc:
            log.error("lost the session lease, stopping: %s", exc)
            self.stop_reason, self.exit_code = "launcher lost its session lease", 1
            return
        except DatabaseError as exc:
            log.warning("cannot claim jobs, will retry: %s", exc)
            self.next_claim = now + IDLE_POLL_SECONDS
            return
        self.next_claim = now if len(jobs) >= budget else now + IDLE_POLL_SECONDS
        if jobs:
            log.info("claimed %d job(s)", len(jobs))
            self._admit_claimed(jobs, now)
        elif self.options.consume_all and not self.tasks and not len(self.updates):
            self._check_exhausted(now)

    def _admit_claimed(self, jobs: list[JobOut], now: float) -> None:
        try:
            self.admit(jobs, now)
        except DatabaseError as exc:
            # Cannot even look up their apps: hand back what has not started yet.
            log.warning("cannot take %d claimed job(s), handing them back: %s", len(jobs), exc)
            idle = []
            for job in jobs:
                task = self.tasks.get(job.job_id)
                if task is None or task.child is None:
                    self.tasks.pop(job.job_id, None)
                    idle.append(job.job_id)
            self.flush(now)
            self.release(idle)

    def remaining(self, now: float) -> JobQuery:
        """Jobs this launcher could still run: the ``--consume-all`` exit test counts them.

        Jobs in the filter that are on their way to running (CREATED, AWAITING_PARENTS,
        READY, STAGED_IN, PREPROCESSED, RESTART_READY), held by no launcher, and that fit this
        launcher (node count, serial mode, remaining wall time). AWAITING_PARENTS jobs count
        whatever their parents are doing, so a launcher waits while parents run elsewhere.
        """
        filters: dict[str, Any] = {
            "state__in": [s.value for s in UPCOMING_STATES],
            "session_id__isnull": True,
            "num_nodes__lte": 1 if not self.mpi_mode else len(self.pool),
        }
        if self.options.workflows:
            filters["workflow__in"] = list(self.options.workflows)
        minutes = self.remaining_minutes(now)
        if minutes is not None:
            filters["wall_time_minutes__lte"] = minutes
        return JobQuery(clauses=[clause_from_kwargs(filters)])

    def _check_exhausted(self, now: float) -> None:
        try:
            left = self.backend.count_jobs(self.remaining(now))
        except DatabaseError as exc:
            log.warning("cannot count remaining jobs, will retry: %s", exc)
            return
        if left == 0:
            log.info("no runnable jobs remain: exiting (--consume-all)")
            self.finished = True

    # ---- starting jobs ---------------------------------------------------------------------

    def _start_waiting(self, now: float) -> None:
        if self.stop_reason is not None:
            return
        remaining = self.remaining_minutes(now)
        for task in [t for t in self.tasks.values() if t.child is None]:
            if remaining is not None and task.job.wall_time_minutes > remaining:
                self.give_back(task, now, "does not fit the launcher's remaining time")
                continue
            placement = self.pool.place(task.job.resources(), self.mpi_mode)
            if placement is not None:
                self.start_run(task, placement, now)

    def _on_exit(self, child: Child, now: float) -> None:
        code = self.children.reap(child)
        task = self.tasks.get(child.job_id)
        if task is None:
            return
        task.child = None
        if task.placement is not None:
            self.pool.release(task.placement)
            task.placement = None
            self.next_claim = now
        if task.killed:
            self.forget(task)
            self.release([task.job.job_id])
        elif self.stop_reason is not None:
            self._stopped(task, child.step, code, now)
        else:
            self.step_done(task, child.step, code, now)

    def _stopped(self, task: Task, step: Step, code: int, now: float) -> None:
        """A command ended because the launcher is stopping."""
        if step is Step.RUN:
            message = f"stopped: {self.stop_reason} (exit code {code})"
            self.record(task.job.job_id, S.RUN_TIMEOUT, now, message, release=True)
        else:
            log.info("%s interrupted", step, extra=job_extra(task.job.job_id))
        self.forget(task)

    # ---- state changes -----------------------------------------------------------------------

    def flush(self, now: float) -> FlushResult:
        result = self.updates.flush(now)
        if result.ended_jobs:
            self.next_claim = now
        for job_id, message in result.rejected.items():
            log.warning("state change refused: %s", message, extra=job_extra(job_id))
            if job_id in self.tasks:
                self.stop_job(job_id, now, "refused by the workflow database")
        return result

    def stop_job(self, job_id: str, now: float, why: str) -> None:
        """Stop working on a job at once (a user killed it): end its command, record nothing."""
        self.updates.drop(job_id)
        task = self.tasks.get(job_id)
        if task is None:
            self.release([job_id])
            return
        if task.killed:
            return
        task.killed = True
        log.info("stopping: %s", why, extra=job_extra(job_id))
        if task.child is not None:
            self.children.terminate(task.child, self.settings.kill_grace_seconds, now)
        else:
            self.forget(task)
            self.release([job_id])


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def run_launcher(
    site: Site,
    backend: Backend,
    options: LauncherOptions,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Discover the nodes and the MPI launcher, then run a launcher until it is done."""
    env = dict(os.environ if environ is None else environ)
    platform = site.settings.platform
    nodes = discover_nodes(platform.cpus_per_node, platform.gpus_per_node, env)
    mpi = find_mpi_launcher(platform.mpi_launcher, search_path(env))
    if mpi is None:
        log.info("no MPI launcher found: one-rank jobs run directly, others cannot run")
    else:
        log.info("MPI launcher: %s (%s)", mpi.name, mpi.executable)
    return Launcher(site, backend, options, nodes, mpi, local_hostname(), env).run()

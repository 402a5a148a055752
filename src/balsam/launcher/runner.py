"""The launcher's event loop: one process, one selector, no threads.

The loop wakes on a child's exit (pidfd), a worker's message (socket), a signal (wakeup fd)
or the next timer (lease renewal, kill poll, flush, claim poll, kill escalation, time limit),
then:

1. renews the lease when due and stops jobs a user killed (:mod:`balsam.launcher.lease`);
2. claims runnable jobs when there is room, advancing READY/STAGED_IN ones itself;
3. starts waiting jobs on free nodes, biggest and longest first;
4. flushes buffered state changes when due;
5. with ``--consume-all``, exits once nothing it could run remains (see docs/launcher.md).

On a time limit or SIGTERM/SIGINT it stops every child (SIGTERM, then SIGKILL after
``kill_grace_seconds``), reports running jobs RUN_TIMEOUT and closes its session, which hands
back every job it still holds. Killed with SIGKILL it can do none of that: its workers, cut
off, kill the commands they run, and its peers recover its jobs.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from collections.abc import Mapping
from dataclasses import replace
from types import FrameType
from typing import Any

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.domain.states import JobState
from balsam.errors import DatabaseError, LauncherError
from balsam.launcher import logs
from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.claims import IDLE_POLL_SECONDS, UPCOMING_STATES, Claims
from balsam.launcher.jobflow import JobFlow, Task
from balsam.launcher.lease import Lease, LeaseNews
from balsam.launcher.logs import job_extra
from balsam.launcher.nodework import NodeWork
from balsam.launcher.options import JobMode, LauncherOptions
from balsam.launcher.placement import NodePool, select_nodes
from balsam.launcher.queue import RateMeter, RecentMean, RunQueue
from balsam.launcher.updates import FlushResult, UpdateBuffer
from balsam.launcher.workdirs import DirectoryMaker
from balsam.launcher.workers import WorkerFleet
from balsam.platform.mpi import MpiLauncher, find_mpi_launcher, search_path
from balsam.platform.nodes import discover_nodes, local_hostname, node_index
from balsam.platform.walltime import allocation_minutes_left
from balsam.schemas.jobs import JobOut

log = logging.getLogger(__name__)
S = JobState

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Launcher(Claims, RunQueue, NodeWork, JobFlow):
    """Runs the jobs of one workflow database on the nodes of one allocation."""

    def __init__(
        self,
        site: Site,
        backend: Backend,
        options: LauncherOptions,
        pool: NodePool,
        mpi: MpiLauncher | None,
        hostname: str,
        local_index: int | None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.site = site
        self.backend = backend
        self.options = options
        self.settings = site.settings.launcher
        self.platform = site.settings.platform
        self.pool = pool
        self.mpi = mpi
        self.mpi_mode = options.job_mode is JobMode.MPI
        self.hostname = hostname
        self.local_index = local_index
        self.environ = dict(os.environ if environ is None else environ)
        self.selector = selectors.DefaultSelector()
        self.dirs = DirectoryMaker()
        self.children = ChildProcesses(self.selector)
        self.fleet: WorkerFleet | None = None
        self.tasks: dict[str, Task] = {}
        self.waiting: list[Task] = []
        #: Runs sent to a worker with no successor queued behind them yet.
        self.unchained: dict[int, Child] = {}
        #: Shapes of runs that no waiting job has (so chaining need not look again).
        self.absent_shapes: set[tuple[int, int, int, int]] = set()
        self.started = time.monotonic()
        self.stop_at = self._stop_time()
        self.stop_reason: str | None = None
        self.finished = False
        self.fenced = False
        self.exit_code = 0
        self.next_claim = 0.0
        self.ends = RateMeter()
        self.run_times = RecentMean()
        label = f"{options.job_mode} mode, {len(pool)} node(s)"
        self.lease = Lease(backend, self.settings, label, hostname)
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
            self.start_local_worker()
            self._open_session()
            try:
                self.prepare_nodes(time.monotonic())
                self._loop()
            finally:
                self._shutdown()
        finally:
            if self.fleet is not None:
                self.fleet.close()
            self.dirs.close()
            self._restore_signals(previous)
            self.selector.close()
            os.close(wake_r)
            os.close(wake_w)
        return self.exit_code

    def _open_session(self) -> None:
        session = self.lease.open(time.monotonic())
        self.updates.session_id = session.id
        log.info("session %d opened: %s, nodes %s", session.id, self.lease.label, self._hosts())
        try:
            self.lease.recover_peers()
            self.report_unfit()
        except DatabaseError as exc:
            log.warning("cannot look after other launchers' jobs yet: %s", exc)

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
            self.children.hurry(time.monotonic())

    def _loop(self) -> None:
        while self.stop_reason is None and not self.finished:
            now = time.monotonic()
            if self.stop_at is not None and now >= self.stop_at:
                self.stop_reason = "launcher time limit reached"
                break
            self._tend_lease(now)
            self.children.escalate(now)
            self.check_nodes(now)
            if self._claim_due(now):
                self._claim(now)
            self.start_waiting(now)
            due = self.updates.due_at()
            if due is not None and now >= due and self.lease.session_id:
                self.flush(now)
            if not self.finished and self.stop_reason is None:
                self._wait(self._timeout(now))

    def _timeout(self, now: float) -> float:
        times = [self.lease.due_at(polling=len(self.children) > 0)]
        for when in (self.updates.due_at(), self.children.next_kill_at(), self.stop_at):
            if when is not None:
                times.append(when)
        times.append(self.nodes_due_at())
        if self._claim_budget() > 0:
            times.append(self.next_claim)
        return max(0.0, min(times) - now)

    def _wait(self, timeout: float) -> None:
        if self.fleet is not None:
            self.fleet.flush()
        logs.flush(time.monotonic(), force=timeout > 0)
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                _drain(key.fd)
            elif self.fleet is not None and self.fleet.owns(key.data):
                self.fleet.handle(key.data)

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
        if self.fleet is not None:
            self.fleet.close()
            self.fleet = None
        if self.options.consume_all:
            self.report_unfit()
        self._retry_at_exit("record the last state changes", lambda: self.flush(time.monotonic()))
        self._retry_at_exit("close the session", self.lease.close)
        log.info("session %d closed (%s)", self.session_id, self.stop_reason or "done")

    def _retry_at_exit(self, what: str, action: Any, attempts: int = 10) -> None:
        """Retry ``action`` a while: the database may be restarting as the launcher exits."""
        for attempt in range(attempts):
            try:
                result = action()
            except DatabaseError as exc:
                log.warning("cannot %s (try %d of %d): %s", what, attempt + 1, attempts, exc)
            else:
                if not (isinstance(result, FlushResult) and result.failed):
                    return
            time.sleep(min(2.0, 0.2 * 2**attempt))
        log.error("gave up trying to %s: the jobs go back to others when the lease expires", what)

    def _until_kill(self) -> float:
        when = self.children.next_kill_at()
        return 0.5 if when is None else max(0.0, when - time.monotonic())

    # ---- the lease -----------------------------------------------------------------------

    def _tend_lease(self, now: float) -> None:
        if not self.lease.session_id:
            self._reopen(now)
            return
        news = self.lease.tick(now, polling=len(self.children) > 0)
        if news.lost:
            self._lost_lease(now)
            return
        if news.fence and not self.fenced:
            self._fence(now)
        elif self.fenced and self.lease.renewed_at >= now:
            log.warning("the workflow database answers again: starting jobs again")
            self.fenced = False
        self._stop_killed(news, now)

    def _stop_killed(self, news: LeaseNews, now: float) -> None:
        for job_id in news.killed:
            self.stop_job(job_id, now, "killed by user")

    def _fence(self, now: float) -> None:
        """Stop running jobs before peers may expire the lease and start them again."""
        self.fenced = True
        why = f"the workflow database was unreachable for {now - self.lease.renewed_at:.0f} s"
        log.error(
            "%s: stopping %d running job(s) before the lease expires", why, len(self.children)
        )
        grace = min(self.settings.kill_grace_seconds, self.settings.heartbeat_seconds / 2)
        for task in self.tasks.values():
            if task.child is not None and not task.killed:
                task.abandoned = f"stopped: {why}"
                self.children.terminate(task.child, grace, now)

    def _lost_lease(self, now: float) -> None:
        """Peers expired the lease: everything held may run elsewhere now; start afresh."""
        for task in list(self.tasks.values()):
            if task.child is None:
                self.unqueue(task)
                self.forget(task)
            else:
                task.killed = True
                self.children.signal(task.child, signal.SIGKILL)
        self.updates.clear()
        self.lease.session_id = 0
        self._reopen(now)

    def _reopen(self, now: float) -> None:
        try:
            session = self.lease.open(now)
        except DatabaseError as exc:
            log.warning("cannot open a new session yet: %s", exc)
            return
        self.updates.session_id = session.id
        self.fenced = False
        log.warning("carrying on in new session %d", session.id)

    # ---- starting jobs ---------------------------------------------------------------------

    def admit(self, jobs: list[JobOut], now: float) -> None:
        """Take newly claimed jobs (see :meth:`JobFlow.admit`) and queue the runnable ones."""
        super().admit(jobs, now)
        for job in jobs:
            # Staged in and with no preprocess step running: ready to run.
            task = self.tasks.get(job.job_id)
            if task is not None and task.child is None:
                self.enqueue(task)

    def exited(self, child: Child, code: int, now: float) -> None:
        """A command of a job ended with ``code`` (here or on a remote node)."""
        self.unchained.pop(child.key, None)
        task = self.tasks.get(child.job_id)
        if task is None:
            return
        task.child = None
        if task.placement is not None:
            self.hand_over(task, child, now)
        if task.killed:
            self.drop(task)
        elif task.abandoned and child.step is Step.RUN and task.running:
            self.record(
                task.job.job_id, S.RESTART_READY, now, task.abandoned, release=True, lost=True
            )
            self.forget(task)
        elif self.stop_reason is not None:
            self._stopped(task, child.step, code, now)
        else:
            self.step_done(task, child.step, code, now)
            if task.job.job_id in self.tasks and task.child is None:
                self.enqueue(task)

    def worker_died(self) -> None:
        """The local worker is gone: nothing more can start here, so stop."""
        if self.stop_reason is None:
            self.stop_reason = "the launcher's local worker died"
            self.exit_code = 1

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
            self.unqueue(task)
            self.drop(task)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


__all__ = ["IDLE_POLL_SECONDS", "UPCOMING_STATES", "Launcher", "run_launcher"]


def run_launcher(
    site: Site,
    backend: Backend,
    options: LauncherOptions,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Discover the nodes, the MPI launcher and the time left, then run a launcher."""
    env = dict(os.environ if environ is None else environ)
    platform = site.settings.platform
    found = discover_nodes(platform.cpus_per_node, platform.gpus_per_node, env)
    nodes = select_nodes(found, options.limit_nodes, options.offset_nodes)
    if not nodes:
        raise LauncherError(
            f"--offset-nodes {options.offset_nodes} leaves none of the allocation's "
            f"{len(found)} node(s)"
        )
    mpi = find_mpi_launcher(platform.mpi_launcher, search_path(env), env)
    if mpi is None:
        log.info("no MPI launcher found: one-rank jobs run directly, others cannot run")
    else:
        log.info("MPI launcher: %s (%s)", mpi.name, mpi.executable)
    if options.time_limit_minutes is None:
        left = allocation_minutes_left(env)
        if left is not None:
            log.info("the allocation ends in %.1f minutes: that is the time limit", left)
            options = replace(options, time_limit_minutes=left)
    local = node_index([n.hostname for n in nodes], env)
    pool = NodePool(nodes)
    return Launcher(site, backend, options, pool, mpi, local_hostname(), local, env).run()

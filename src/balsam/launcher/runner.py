"""The launcher: its parts wired together, one event loop, and its life cycle.

The parts, each owning its own state (docs/launcher.md has the map):

* :class:`~balsam.launcher.lease.Lease` — the session lease, heartbeats, kill polling, peers;
* :class:`~balsam.launcher.claims.Claimer` — what fits, how many and when to claim;
* :class:`~balsam.launcher.queue.RunQueue` — waiting tasks, placement, runs queued at workers;
* :class:`~balsam.launcher.nodework.NodeWork` — which nodes take jobs, the workers;
* :class:`~balsam.launcher.jobflow.JobFlow` — the held jobs and the steps each takes;
* :class:`~balsam.launcher.updates.UpdateBuffer` — state changes, written in batches.

The loop wakes on a worker's message (socket), a signal (wakeup fd) or the next timer (lease
renewal, kill poll, flush, claim poll, kill escalation, time limit), then renews the lease when
due and stops jobs a user killed, claims when there is room, starts waiting jobs on free
nodes, flushes state changes when due, and with ``--consume-all`` exits once nothing it could
run remains (see docs/launcher.md).

On a time limit or SIGTERM/SIGINT it stops every command (SIGTERM, then SIGKILL after
``kill_grace_seconds``), records running jobs RUN_TIMEOUT, hands interrupted steps back in
their state and closes its session, which hands back every job it still holds. Killed with
SIGKILL it can do none of that: its workers, cut off, kill the commands they run, and its
peers recover its jobs.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import FrameType
from typing import Any

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.domain.batchjobs import batch_job_id
from balsam.errors import BalsamError, LauncherError
from balsam.launcher import logs, staging
from balsam.launcher.children import ChildProcesses
from balsam.launcher.claims import IDLE_POLL_SECONDS, UPCOMING_STATES, Claimer
from balsam.launcher.commands import site_container_runtime
from balsam.launcher.dispatch import Dispatcher
from balsam.launcher.jobflow import JobFlow
from balsam.launcher.lease import Lease
from balsam.launcher.nodework import NodeWork, UnfitReport
from balsam.launcher.options import JobMode, LauncherOptions, LauncherRole
from balsam.launcher.placement import NodePool, select_nodes
from balsam.launcher.processing import ProcessingSplit
from balsam.launcher.queue import RunQueue
from balsam.launcher.stager import Stager
from balsam.launcher.tasks import StopCause, Task
from balsam.launcher.updates import FlushResult, UpdateBuffer
from balsam.launcher.workdirs import DirectoryMaker
from balsam.launcher.workers import WorkerFleet, WorkerLink
from balsam.platform.mpi import MpiLauncher, find_mpi_launcher, search_path
from balsam.platform.nodes import discover_nodes, local_hostname, node_index
from balsam.platform.processes import kill_marked
from balsam.platform.walltime import allocation_minutes_left
from balsam.schemas.sessions import ClaimRequest

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Launcher:
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
        self.pool = pool
        env = dict(os.environ if environ is None else environ)
        self.selector = selectors.DefaultSelector()
        self.started = time.monotonic()
        self.stop_at = self._stop_time()
        self.stop_reason: str | None = None
        self.finished = False
        self.fenced = False
        self.exit_code = 0
        mpi_mode = options.job_mode is JobMode.MPI
        label = f"{options.job_mode} mode, {len(pool)} node(s)"
        if options.role is LauncherRole.PROCESSING:
            label = "processing (no runs)"
        self.lease = Lease(backend, self.settings, label, hostname, batch_job_id(env))
        self.updates = UpdateBuffer(
            backend, self.settings.flush_interval_seconds, self.lease.next_seq
        )
        self.nodes = NodeWork(site, pool, mpi, mpi_mode, hostname, local_index, env)
        self.claimer = Claimer(
            backend,
            self.lease,
            self.settings,
            options,
            pool,
            self.nodes.capacity(),
            self.minutes_left,
            ProcessingSplit(backend, options.role, site.settings.service.processing),
        )
        self.children = ChildProcesses(self.selector)
        self.queue = RunQueue(pool, self.children, self.minutes_left, self.claimer.ends.rate)
        self.dirs = DirectoryMaker()
        platform = site.settings.platform
        containers = site_container_runtime(platform)
        self.dispatch = Dispatcher(
            site, platform, mpi, mpi_mode, env, self.children, self.dirs, containers
        )
        self.dispatch.launcher_nodes = len(pool)
        self.stager: Stager[Task] = Stager(self.selector)
        self.flow = JobFlow(
            site,
            backend,
            self.settings,
            pool,
            self.children,
            self.queue,
            self.updates,
            self.claimer,
            self.dispatch,
            self.stager,
        )
        self.unfit = UnfitReport(backend, self.claimer, site.settings.platform, hostname)
        self.unfit_reported = False
        self.fleet: WorkerFleet | None = None

    def _stop_time(self) -> float | None:
        """When to start stopping jobs: the time limit less the kill grace period.

        The lead is at most a quarter of the limit, so that a short limit still runs jobs.
        """
        if self.options.time_limit_minutes is None:
            return None
        limit = self.options.time_limit_minutes * 60
        return self.started + limit - min(self.settings.kill_grace_seconds, limit / 4)

    def minutes_left(self, now: float) -> float | None:
        """Minutes left before jobs are stopped (None without a time limit)."""
        if self.stop_at is None:
            return None
        return max(0.0, (self.stop_at - now) / 60)

    # ---- lifecycle -----------------------------------------------------------------------

    def run(self) -> int:
        """Run until done, out of time or signalled; returns the process exit code."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        previous = self._install_signals(wake_w)
        try:
            self.fleet = WorkerFleet(self.selector, self)
            self.dispatch.fleet = self.fleet
            self.nodes.start_local_worker(self.fleet)
            # The other nodes' workers take seconds to start: they do it while the session
            # opens and the first jobs are claimed.
            self.nodes.prepare_nodes(time.monotonic())
            try:
                self._open_session()
                self._loop()
            finally:
                self._shutdown()
        finally:
            if self.fleet is not None:
                self.fleet.close()
            self.dirs.close()
            self.stager.close()
            staging.close_transfers()
            self._restore_signals(previous)
            self.selector.close()
            os.close(wake_r)
            os.close(wake_w)
        return self.exit_code

    def _open_session(self) -> None:
        # Nothing runs before the first session: wait for the database (it may be starting).
        self._retry("open a session", lambda: self.lease.open(time.monotonic()), 30)
        if not self.lease.session_id:
            raise LauncherError("cannot open a launcher session: the workflow database is down")
        self._session_opened()
        log.info(
            "session %d opened: %s, nodes %s",
            self.lease.session_id,
            self.lease.label,
            self._hosts(),
        )
        try:
            self.lease.recover_peers()
        except BalsamError as exc:
            log.warning("cannot look after other launchers' jobs yet: %s", exc)

    def _session_opened(self) -> None:
        self.updates.session_id = self.lease.session_id
        self.dispatch.mark = self.lease.mark
        self.fenced = False

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
            if self._orphaned():
                self.stop_reason = f"process {self.options.exit_with_pid} it serves is gone"
                break
            self._tend_lease(now)
            self.children.escalate(now)
            self.nodes.check(now)
            self.flow.retry_admissions(now)
            self.flow.decide_signalled(now)
            if self._may_claim() and self.claimer.due(now, self._waiting()):
                self._claim(now)
            if not self.fenced and self.lease.session_id and self.stop_reason is None:
                self.queue.start_waiting(now, self.flow)
            due = self.updates.due_at()
            if due is not None and now >= due and self.lease.session_id:
                self.flush(now)
            if not self.finished and self.stop_reason is None:
                self._wait(self._timeout(now))

    def _waiting(self) -> int:
        """Jobs held and not started, which bound the next claim. A processing launcher's
        jobs never wait for room on the nodes: every job it holds counts."""
        return len(self.flow) if self.claimer.split.processing_only else len(self.queue)

    def _may_claim(self) -> bool:
        return self.stop_reason is None and not self.fenced and bool(self.lease.session_id)

    def _orphaned(self) -> bool:
        """The process this launcher serves (``exit_with_pid``) has exited."""
        pid = self.options.exit_with_pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _timeout(self, now: float) -> float:
        times = [self.lease.due_at(polling=len(self.children) > 0), self.nodes.due_at()]
        waits = (self.updates.due_at(), self.children.next_kill_at(), self.stop_at)
        for when in (*waits, self.flow.signalled.next_at()):
            if when is not None:
                times.append(when)
        if self._may_claim() and self.claimer.budget(self._waiting()) > 0:
            times.append(self.claimer.next_at())
        if self.flow.unadmitted:
            times.append(now + IDLE_POLL_SECONDS)
        if self.queue.waiting and self.queue.held_until > now:
            times.append(self.queue.held_until)
        return max(0.0, min(times) - now)

    def _wait(self, timeout: float) -> None:
        if self.fleet is not None:
            self.fleet.flush()
        logs.flush(time.monotonic(), force=timeout > 0)
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                _drain(key.fd)
            elif key.data is self.stager:
                self.flow.staged(self.stager.collect(), time.monotonic())
            elif self.fleet is not None and self.fleet.owns(key.data):
                self.fleet.handle(key.data)

    def _shutdown(self) -> None:
        """Stop every command, record what happened, close the session."""
        now = time.monotonic()
        reason = self.stop_reason or "launcher stopped"
        if len(self.children):
            self.stop_reason = reason
            log.info("stopping %d running command(s): %s", len(self.children), reason)
        grace = self.settings.kill_grace_seconds
        self.flow.stop_all(StopCause.SHUTDOWN, f"stopped: {reason}", now, grace)
        give_up = now + grace + 30
        while len(self.children) and time.monotonic() < give_up:
            self.children.escalate(time.monotonic())
            self._wait(min(0.5, self._until_kill()))
        if self.fleet is not None:
            self.fleet.close()
            self.fleet = None
        if self.options.consume_all or not self.unfit_reported:
            self.unfit.report()
        self._retry("record the last state changes", self._final_flush)
        if self.lease.session_id:
            self._retry("close the session", self.lease.close)
        log.info("session %d closed (%s)", self.lease.session_id, self.stop_reason or "done")

    def _final_flush(self) -> None:
        result = self.flush(time.monotonic())
        if not result.broken and len(self.updates) and self.lease.session_id:
            raise _Unflushed()

    def _retry(self, what: str, action: Callable[[], object], attempts: int = 10) -> None:
        """Retry ``action`` a while: the database may be restarting (at start or exit)."""
        for attempt in range(attempts):
            try:
                action()
                return
            except _Unflushed:
                pass
            except BalsamError as exc:
                if not exc.transient:
                    log.error("cannot %s: %s", what, exc)
                    return
                log.warning("cannot %s (try %d of %d): %s", what, attempt + 1, attempts, exc)
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
        self.flow.killed(news.killed, now)

    def _fence(self, now: float) -> None:
        """Stop running jobs before peers may expire the lease and start them again."""
        self.fenced = True
        why = f"the workflow database was unreachable for {now - self.lease.renewed_at:.0f} s"
        log.error(
            "%s: stopping %d running job(s) before the lease expires", why, len(self.children)
        )
        grace = min(self.settings.kill_grace_seconds, self.settings.heartbeat_seconds / 2)
        self.flow.fence(why, now, grace)

    def _lost_lease(self, now: float) -> None:
        """Peers expired the lease: everything held may run elsewhere now; start afresh."""
        self.flow.stop_all(StopCause.LOST, "the launcher's lease expired", now, 0.0)
        self.updates.clear()
        self.claimer.forget_session()
        self.lease.session_id = 0
        self.updates.session_id = 0
        self._reopen(now)

    def _reopen(self, now: float) -> None:
        try:
            session = self.lease.open(now)
        except BalsamError as exc:
            log.warning("cannot open a new session yet: %s", exc)
            return
        self._session_opened()
        log.warning("carrying on in new session %d", session.id)

    # ---- claims and state changes ------------------------------------------------------------

    def _claim(self, now: float) -> None:
        # Finished jobs first, in the same call: they may free their children for this claim.
        request = self.claimer.prepare(now, self._waiting())
        sent = self.flush(now, claim=request)
        if not self.lease.session_id or sent.lost:
            return
        jobs = self.claimer.answer(now, request, sent)
        if jobs is None:
            self._lost_lease(now)
            return
        if jobs:
            self.flow.admit(jobs, now)
        if self.claimer.drained and not self.unfit_reported:
            # Once there is nothing more it can take: say which jobs wait for another launcher
            # (not before its first jobs start: on a big database this reads many rows).
            self.unfit_reported = True
            self.unfit.report()
        if (
            not jobs
            and self.options.consume_all
            and self._idle()
            and self.claimer.nothing_left(now)
        ):
            log.info("no runnable jobs remain: exiting (--consume-all)")
            self.finished = True

    def _idle(self) -> bool:
        if not self.claimer.answered or self.stager.busy:
            return False
        return not len(self.flow) and not len(self.updates) and not len(self.children)

    def flush(self, now: float, claim: ClaimRequest | None = None) -> FlushResult:
        """Write the buffered state changes now (with ``claim``, if any, in the same call) and
        act on the answers; the jobs the claim took are the caller's."""
        result = self.updates.flush(now, claim)
        if result.lost:
            log.error("session %d expired: its jobs were handed to others", self.lease.session_id)
            self._lost_lease(now)
            return result
        if result.broken and self.stop_reason is None:
            self.stop_reason = (
                f"the workflow database refused the launcher's writes: {result.broken}"
            )
            self.exit_code = 1
        self.flow.answers(result.results, now)
        return result

    # ---- worker events (FleetEvents) ---------------------------------------------------------

    def node_ready(self, index: int) -> None:
        """A remote node's worker connected: the node takes jobs."""
        self.pool.set_ready(index, True)
        self.claimer.soon()

    def node_lost(self, link: WorkerLink) -> None:
        """A worker went away: the commands it ran are lost, its node takes no more jobs."""
        now = time.monotonic()
        if link.index is not None:
            self.pool.set_ready(link.index, False)
        if link.local:
            # Whatever the worker left running on this host must not run on unaccounted.
            killed = kill_marked(self.lease.mark)
            log.error("the local worker died (%d leftover process(es) killed)", killed)
            if self.stop_reason is None:
                self.stop_reason = "the launcher's local worker died"
                self.exit_code = 1
        for child in self.children:
            if child.remote is link and (detached := self.flow.detach(child.key)) is not None:
                self.flow.command_lost(*detached, link.hostname, now)

    def run_started(self, key: int, pid: int) -> None:
        """A worker started a command."""
        self.flow.run_started(key, pid, time.monotonic())

    def run_exited(self, key: int, code: int) -> None:
        """A worker's command exited."""
        child = self.children.remote_exited(key)
        if child is not None:
            self.flow.exited(child, code, time.monotonic())

    def run_failed(self, key: int, error: str, later: bool = False) -> None:
        """A worker could not start a command."""
        self.flow.run_failed(key, error, time.monotonic(), later)

    def run_cancelled(self, key: int) -> None:
        """A queued command was taken off its worker's queue."""
        self.flow.run_cancelled(key, time.monotonic())


class _Unflushed(Exception):
    """The last flush could not write everything yet."""


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

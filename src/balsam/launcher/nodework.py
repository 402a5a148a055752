"""Which of the allocation's nodes a launcher can use, and the workers on the remote ones.

A base of :class:`~balsam.launcher.runner.Launcher`, like :class:`~balsam.launcher.jobflow.JobFlow`.

Every command starts in a worker (:mod:`balsam.launcher.worker`); the local worker, on the
launcher's host, is started first.

* **mpi mode**: every job goes through the MPI launcher, started by the local worker, which
  reaches every node itself. With no MPI launcher only the launcher's own node is used
  (one-rank jobs run directly).
* **serial mode**: jobs on the launcher's own node start in the local worker; every other node
  gets a worker of its own, all started in one step of the MPI launcher (srun, mpiexec, aprun,
  ...). A remote node takes jobs once its worker has connected; a worker that goes away takes
  its node out of the pool and its running jobs are recorded lost (RESTART_READY, counted in
  ``lost_count``). Nodes whose worker has not connected within
  ``launcher.worker_start_seconds`` are left unused, with a warning.
* the local worker dying ends the launcher: what it left running here is killed first.

It also reports the jobs this launcher can never run because they need more nodes than it has
(or several nodes, in serial mode): a note in each one's history, so they do not wait in
silence.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from balsam.backends.base import Backend
from balsam.config import LauncherSettings, PlatformSettings, Site
from balsam.domain.states import JobState
from balsam.errors import DatabaseError
from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.jobflow import Task
from balsam.launcher.lease import Lease
from balsam.launcher.placement import NodePool
from balsam.launcher.workers import WorkerFleet, WorkerLink
from balsam.platform.mpi import MpiLauncher
from balsam.platform.processes import kill_marked
from balsam.schemas.queries import JobQuery, clause_from_kwargs

log = logging.getLogger(__name__)
S = JobState
INF = float("inf")
#: Most jobs noted as unfit per report.
UNFIT_REPORT_LIMIT = 1000


class NodeWork:
    """Node readiness, serial-mode workers and unfit-job reports for a launcher."""

    site: Site
    backend: Backend
    settings: LauncherSettings
    platform: PlatformSettings
    pool: NodePool
    mpi: MpiLauncher | None
    mpi_mode: bool
    hostname: str
    environ: dict[str, str]
    children: ChildProcesses
    tasks: dict[str, Task]
    fleet: WorkerFleet | None
    local_index: int | None
    next_claim: float
    lease: Lease
    workers_due: float = INF

    if TYPE_CHECKING:
        # Provided by JobFlow and Launcher, the classes this one is mixed into.
        def record(
            self,
            job_id: str,
            state: JobState,
            now: float,
            message: str = "",
            return_code: int | None = None,
            release: bool = False,
            lost: bool = False,
        ) -> None: ...

        def forget(self, task: Task) -> None: ...

        def exited(self, child: Child, code: int, now: float) -> None: ...

        def upcoming_filters(self) -> dict[str, Any]: ...

        def drop(self, task: Task) -> None: ...

        def detach(self, key: int) -> tuple[Child, Task] | None: ...

        def worker_died(self) -> None: ...

        def run_started(self, key: int, pid: int) -> None: ...

        def run_failed(self, key: int, error: str) -> None: ...

        def run_cancelled(self, key: int) -> None: ...

    # ---- preparing the nodes ---------------------------------------------------------------

    def start_local_worker(self) -> None:
        """Start the worker on the launcher's host (first: its start-up overlaps the rest)."""
        self.fleet = WorkerFleet(self.children.selector, self)
        logs = self.site.log_dir
        logs.mkdir(parents=True, exist_ok=True)
        local_log = logs / f"worker_{self.hostname}_{os.getpid()}.log"
        self.fleet.start_local(self.local_index, self.hostname, self.environ, local_log)

    def prepare_nodes(self, now: float) -> None:
        """Decide which nodes take jobs; start the workers of remote nodes (serial mode)."""
        assert self.fleet is not None, "start_local_worker() first"
        remote = {
            i: spec.hostname for i, spec in enumerate(self.pool.specs) if i != self.local_index
        }
        if not remote:
            return
        if self.mpi is None:
            for i in remote:
                self.pool.set_ready(i, False)
            log.warning(
                "no MPI launcher (mpiexec, srun, ...) to reach the other nodes (%s): "
                "only this one is used",
                ",".join(remote.values()),
            )
            return
        if self.mpi_mode:
            return
        for i in remote:
            self.pool.set_ready(i, False)
        remote_log = self.site.log_dir / f"workers_{self.hostname}_{os.getpid()}.log"
        cpus = max((spec.cpus for spec in self.pool.specs), default=1)
        self.fleet.start_remote(
            remote, self._listen_address(), self.mpi, cpus, self.environ, remote_log
        )
        self.workers_due = now + self.settings.worker_start_seconds

    def _listen_address(self) -> str:
        """Where the workers connect: the setting, else the address of this host's name."""
        if self.platform.launcher_address:
            return self.platform.launcher_address
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"

    def nodes_due_at(self) -> float:
        """When :meth:`check_nodes` has something to do."""
        return self.workers_due

    def check_nodes(self, now: float) -> None:
        """Give up waiting for workers that did not connect in time."""
        if now < self.workers_due or self.fleet is None:
            return
        self.workers_due = INF
        missing = [h for i, h in self.fleet.remote.items() if i not in self.fleet.links]
        if missing:
            log.warning(
                "no worker connected from %s within %.0f s: those nodes are not used "
                "(see log/workers_*.log)",
                ",".join(missing),
                self.settings.worker_start_seconds,
            )

    # ---- worker events (FleetEvents; run_started and run_failed are JobFlow's) -------------

    def node_ready(self, index: int) -> None:
        """A remote node's worker connected: the node takes jobs."""
        self.pool.set_ready(index, True)
        self.next_claim = 0.0

    def node_lost(self, link: WorkerLink) -> None:
        """A worker went away: the commands it ran are lost, its node takes no more jobs."""
        now = time.monotonic()
        if link.index is not None:
            self.pool.set_ready(link.index, False)
        if link.local:
            # Whatever the worker left running on this host must not run on unaccounted.
            killed = kill_marked(self.lease.mark)
            log.error("the local worker died (%d leftover process(es) killed)", killed)
            self.worker_died()
        for child in self.children:
            if child.remote is link and (detached := self.detach(child.key)) is not None:
                self._lost_command(*detached, link, now)

    def _lost_command(self, child: Child, task: Task, link: WorkerLink, now: float) -> None:
        if not task.killed and task.running and child.step is Step.RUN:
            message = f"lost with node {link.hostname}: its worker went away"
            self.record(task.job.job_id, S.RESTART_READY, now, message, release=True, lost=True)
            self.forget(task)
        else:
            self.drop(task)

    def run_exited(self, key: int, code: int) -> None:
        """A worker's command exited."""
        child = self.children.remote_exited(key)
        if child is not None:
            self.exited(child, code, time.monotonic())

    # ---- jobs that never fit ----------------------------------------------------------------

    def report_unfit(self) -> None:
        """Note, in their histories, the jobs this launcher could never run (too many nodes)."""
        filters = self.upcoming_filters()
        limit = len(self.pool) if self.mpi_mode else 1
        filters["num_nodes__gt"] = limit
        query = JobQuery(clauses=[clause_from_kwargs(filters)], limit=UNFIT_REPORT_LIMIT)
        try:
            unfit = self.backend.query_jobs(query)
        except DatabaseError as exc:
            log.warning("cannot look for jobs too big for this launcher: %s", exc)
            return
        if not unfit:
            return
        if self.mpi_mode:
            note = f"waits: needs more nodes than the {limit}-node launcher on {self.hostname}"
        else:
            note = "waits: a multi-node job runs only under an mpi-mode launcher"
        try:
            self.backend.note_jobs([j.job_id for j in unfit], note)
        except DatabaseError as exc:
            log.warning("cannot note jobs too big for this launcher: %s", exc)
        biggest = max(j.num_nodes for j in unfit)
        log.warning(
            "%d%s job(s) need more nodes than this launcher has (%d; the largest asks for %d): "
            "they wait for a bigger launcher",
            len(unfit),
            "+" if len(unfit) >= UNFIT_REPORT_LIMIT else "",
            limit,
            biggest,
        )

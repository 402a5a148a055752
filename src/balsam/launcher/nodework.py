"""Which of the allocation's nodes a launcher can use, and the workers on the remote ones.

A base of :class:`~balsam.launcher.runner.Launcher`, like :class:`~balsam.launcher.jobflow.JobFlow`.

* **mpi mode**: every job goes through the MPI launcher, which reaches every node itself. With
  no MPI launcher only the launcher's own node is used (one-rank jobs run directly).
* **serial mode**: jobs on the launcher's own node start directly; every other node gets a
  worker (:mod:`balsam.launcher.worker`), all started in one step of the MPI launcher (srun,
  mpiexec, aprun, ...). A remote node takes jobs once its worker has connected; a worker that
  goes away takes its node out of the pool and its running jobs are recorded lost
  (RESTART_READY, counted in ``lost_count``). Nodes whose worker has not connected within
  ``launcher.worker_start_seconds`` are left unused, with a warning.

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
from balsam.launcher.children import Child, ChildProcesses
from balsam.launcher.jobflow import Task
from balsam.launcher.logs import job_extra
from balsam.launcher.placement import NodePool
from balsam.launcher.workers import WorkerFleet, WorkerLink
from balsam.platform.mpi import MpiLauncher
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

    # ---- preparing the nodes ---------------------------------------------------------------

    def prepare_nodes(self, now: float) -> None:
        """Decide which nodes take jobs now; start the workers of remote nodes (serial mode)."""
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
        self.fleet = WorkerFleet(self.children.selector, remote, self, self._listen_address())
        log_path = self.site.log_dir / f"workers_{self.hostname}_{os.getpid()}.log"
        step = self.fleet.start(self.mpi, self._cpus_per_node(), self.environ, log_path)
        if self.children.guard is not None:
            self.children.guard.watch(step.pid)
        self.workers_due = now + self.settings.worker_start_seconds

    def _cpus_per_node(self) -> int:
        return max((spec.cpus for spec in self.pool.specs), default=1)

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

    # ---- worker events (FleetEvents) -------------------------------------------------------

    def node_ready(self, index: int) -> None:
        """A remote node's worker connected: the node takes jobs."""
        self.pool.set_ready(index, True)
        self.next_claim = 0.0

    def node_lost(self, index: int, link: WorkerLink) -> None:
        """A remote node's worker went away: record its running jobs lost."""
        self.pool.set_ready(index, False)
        now = time.monotonic()
        for child in self.children:
            if child.remote is not link:
                continue
            self.children.remote_exited(child.key)
            task = self.tasks.get(child.job_id)
            if task is None or task.placement is None:
                continue
            self.pool.release(task.placement)
            task.child, task.placement = None, None
            if not task.killed:
                message = f"lost with node {link.hostname}: its worker went away"
                self.record(task.job.job_id, S.RESTART_READY, now, message, release=True, lost=True)
            self.forget(task)

    def remote_exit(self, key: int, code: int) -> None:
        """A job's run on a remote node exited."""
        child = self.children.remote_exited(key)
        if child is not None:
            self.exited(child, code, time.monotonic())

    def remote_failed(self, key: int, error: str) -> None:
        """A remote node's worker could not start a job's run."""
        child = self.children.remote_exited(key)
        if child is None:
            return
        task = self.tasks.get(child.job_id)
        now = time.monotonic()
        if task is None or task.placement is None:
            return
        self.pool.release(task.placement)
        task.child, task.placement = None, None
        log.warning("cannot start on its node: %s", error, extra=job_extra(child.job_id))
        if not task.killed:
            self.record(task.job.job_id, S.RUN_ERROR, now, f"cannot start: {error}", release=True)
        self.forget(task)

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

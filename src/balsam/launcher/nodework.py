"""Which of the allocation's nodes a launcher can use, the workers on them, and jobs that fit none.

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

It also reports the jobs this launcher can never run (more nodes, CPUs or GPUs per node, or
ranks, than it has): a note in each one's history, so they do not wait in silence; a job that
needs more of a node than the site settings say the machine's nodes have
(``platform.cpus_per_node``, ``platform.gpus_per_node``, when set) can run nowhere, and is
FAILED with the reason.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from balsam.backends.base import Backend
from balsam.config import LauncherSettings, PlatformSettings, Site
from balsam.domain.states import JobState
from balsam.errors import BalsamError
from balsam.launcher.claims import Capacity, Claimer
from balsam.launcher.placement import NodePool
from balsam.launcher.workers import WorkerFleet
from balsam.platform.mpi import MpiLauncher
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import JobQuery, clause_from_kwargs

log = logging.getLogger(__name__)
S = JobState
INF = float("inf")
#: Most jobs looked at per kind of misfit per report.
UNFIT_REPORT_LIMIT = 1000


class NodeWork:
    """Node readiness and the workers of one launcher."""

    def __init__(
        self,
        site: Site,
        pool: NodePool,
        mpi: MpiLauncher | None,
        mpi_mode: bool,
        hostname: str,
        local_index: int | None,
        environ: Mapping[str, str],
    ) -> None:
        self.site = site
        self.settings: LauncherSettings = site.settings.launcher
        self.platform: PlatformSettings = site.settings.platform
        self.pool = pool
        self.mpi = mpi
        self.mpi_mode = mpi_mode
        self.hostname = hostname
        self.local_index = local_index
        self.environ = dict(environ)
        self.fleet: WorkerFleet | None = None
        self.workers_due = INF

    def start_local_worker(self, fleet: WorkerFleet) -> None:
        """Start the worker on the launcher's host (first: its start-up overlaps the rest)."""
        self.fleet = fleet
        logs = self.site.log_dir
        logs.mkdir(parents=True, exist_ok=True)
        local_log = logs / f"worker_{self.hostname}_{os.getpid()}.log"
        fleet.start_local(self.local_index, self.hostname, self.environ, local_log)

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

    def due_at(self) -> float:
        """When :meth:`check` has something to do."""
        return self.workers_due

    def check(self, now: float) -> None:
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

    def capacity(self) -> Capacity:
        """What the claims may ask for: the nodes, the biggest node's CPUs and GPUs, MPI."""
        specs = self.pool.specs
        return Capacity(
            nodes=len(specs),
            cpus_per_node=max((n.cpus for n in specs), default=1),
            gpus_per_node=max((n.gpus for n in specs), default=0),
            has_mpi=self.mpi is not None,
            serial=not self.mpi_mode,
        )


class UnfitReport:
    """Notes (or fails) the jobs no launcher like this one can run."""

    def __init__(
        self, backend: Backend, claimer: Claimer, platform: PlatformSettings, hostname: str
    ) -> None:
        self.backend = backend
        self.claimer = claimer
        self.platform = platform
        self.hostname = hostname

    def misfits(self) -> list[tuple[dict[str, object], str]]:
        """(filter, note) for each way a job can be too big for this launcher."""
        cap = self.claimer.capacity
        who = f"the launcher on {self.hostname}"
        kinds: list[tuple[dict[str, object], str]] = [
            (
                {"cpus_needed__gt": max(cap.cpus_per_node, 1)},
                f"needs more CPUs per node than {who} has ({cap.cpus_per_node})",
            ),
            (
                {"gpus_needed__gt": cap.gpus_per_node},
                f"needs more GPUs per node than {who} has ({cap.gpus_per_node})",
            ),
        ]
        if cap.serial:
            kinds.append(
                ({"num_nodes__gt": 1}, "a multi-node job runs only under an mpi-mode launcher")
            )
        else:
            kinds.append(
                (
                    {"num_nodes__gt": cap.max_nodes},
                    f"needs more nodes than the {cap.max_nodes}-node launcher on {self.hostname}",
                )
            )
        if not cap.has_mpi:
            kinds.append(
                (
                    {"ranks_per_node__gt": 1},
                    f"needs several MPI ranks but {who} found no MPI launcher",
                )
            )
        return kinds

    def report(self) -> None:
        """Note each misfit in its history once (failing those no node of the site fits)."""
        for extra, note in self.misfits():
            filters = {**self.claimer.upcoming_filters(), **extra}
            query = JobQuery(clauses=[clause_from_kwargs(filters)], limit=UNFIT_REPORT_LIMIT)
            try:
                unfit = self.backend.query_jobs(query)
                self._fail_impossible(unfit)
                waiting = [j for j in unfit if not self._impossible(j)]
                if waiting:
                    self.backend.note_jobs([j.job_id for j in waiting], f"waits: {note}")
                    log.warning("%d job(s) wait: %s", len(waiting), note)
            except BalsamError as exc:
                log.warning("cannot look for jobs this launcher cannot run: %s", exc)
                return

    def _impossible(self, job: JobOut) -> str | None:
        """Why no node of this machine (as the site settings declare it) can run ``job``."""
        req = job.resources()
        cpus, gpus = self.platform.cpus_per_node, self.platform.gpus_per_node
        if cpus and req.cpus_per_node > cpus:
            return f"needs {req.cpus_per_node} CPUs per node; this machine's nodes have {cpus}"
        if gpus and req.gpus_per_node > gpus:
            return f"needs {req.gpus_per_node} GPUs per node; this machine's nodes have {gpus}"
        return None

    def _fail_impossible(self, jobs: list[JobOut]) -> None:
        for job in jobs:
            why = self._impossible(job)
            if why is not None:
                self.backend.set_state(job.job_id, S.FAILED, f"can never run: {why}")

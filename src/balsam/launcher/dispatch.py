"""Sending a task's commands to the workers: its run, its preprocess and postprocess steps.

Builds each command (argv, working directory, environment, output file) and hands it to the
right worker: runs of single-node jobs to the worker of their node (or, queued behind another
run, to that run's worker), MPI launches and pre/postprocess steps to the launcher's local
worker. Every command is tracked as a :class:`~balsam.launcher.children.Child`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import cast

from balsam.config import PlatformSettings, Site
from balsam.domain.commands import CommandError
from balsam.launcher import commands
from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.logs import job_extra
from balsam.launcher.placement import Placement
from balsam.launcher.tasks import Task
from balsam.launcher.workdirs import DirectoryMaker
from balsam.launcher.workers import WorkerFleet, WorkerLink
from balsam.platform.containers import ContainerRuntime
from balsam.platform.mpi import MpiLauncher
from balsam.schemas.jobs import JobOut

log = logging.getLogger(__name__)

#: Why a command can be refused (the job's own values, the node): reported on the job.
EXPECTED_SEND_ERRORS = (OSError, CommandError, commands.CannotRun)
#: What building or sending one job's command may raise: anything. It fails that job, never
#: the launcher (one bad job must not stop every other); see :func:`why_not_sent`.
SEND_ERRORS = (Exception,)


def why_not_sent(exc: Exception, job_id: str) -> str:
    """The reason recorded on a job whose command could not be built or sent; an unexpected
    error (a bug, or stored values no check foresaw) also goes to the log with its traceback."""
    if not isinstance(exc, EXPECTED_SEND_ERRORS):
        log.error("cannot build or send the command", exc_info=exc, extra={"job": job_id[:8]})
        return f"{type(exc).__name__}: {exc}"
    return str(exc)


class Dispatcher:
    """Builds and sends the commands of tasks."""

    def __init__(
        self,
        site: Site,
        platform: PlatformSettings,
        mpi: MpiLauncher | None,
        mpi_mode: bool,
        environ: Mapping[str, str],
        children: ChildProcesses,
        dirs: DirectoryMaker,
        container: ContainerRuntime | None = None,
    ) -> None:
        self.site = site
        self.platform = platform
        self.mpi = mpi
        self.mpi_mode = mpi_mode
        self.environ = dict(environ)
        self.children = children
        self.dirs = dirs
        #: Runs the jobs of apps that name a container image (platform.container_runtime).
        self.container = container
        self.fleet: WorkerFleet | None = None
        #: The mark every job process carries (the lease's; set when the session opens).
        self.mark = ""
        #: The launcher's node count (``BALSAM_LAUNCHER_NODES``, ``dag.LAUNCHER_NODES``).
        self.launcher_nodes = 1

    def workdir(self, task: Task) -> Path:
        """The job's working directory (made ahead by the directory thread, or now)."""
        return self.dirs.ensure(task, self.site.job_dir(task.job.working_directory))

    def workdir_to_make(self, task: Task) -> tuple[Path, bool]:
        """The job's working directory, and whether the worker must make it: the directory
        thread had no time to, and a ``mkdir`` must not stall the launcher's loop."""
        return self.site.job_dir(task.job.working_directory), not task.workdir_made

    def prepare(self, task: Task) -> None:
        """Have the directory thread make the job's working directory ahead of its run."""
        self.dirs.prepare(task, self.site.job_dir(task.job.working_directory))

    def job_env(
        self, job: JobOut, gpus: tuple[int, ...] = ()
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The job's own variables (with the GPUs it was given) and its full environment."""
        variables = commands.job_variables(job, self.site, self.mark, self.launcher_nodes)
        variables["BALSAM_JOB_MODE"] = "mpi" if self.mpi_mode else "serial"
        gpu_var = self.platform.gpu_visible_env
        variables.update(commands.gpu_variables(job, gpus, gpu_var, self.environ))
        return variables, commands.job_environment(self.environ, variables)

    def local(self) -> WorkerLink:
        """The worker on the launcher's host."""
        assert self.fleet is not None and self.fleet.local is not None, "started in run()"
        return self.fleet.local

    def send_step(self, task: Task, step: Step, command: str) -> Child:
        """Send the app's preprocess or postprocess command (SEND_ERRORS if it cannot)."""
        workdir = self.workdir(task)
        variables, _ = self.job_env(task.job)
        handles = commands.handler_variables(task.db_state) if step is Step.POSTPROCESS else {}
        variables.update(handles)
        argv = commands.step_argv(command, task.app)
        out = workdir / f"{step}.log"
        link = self.local()
        child = self.children.adopt(task.job_id, step, out, link)
        header = commands.step_log_header(step, command, task.db_state)
        link.run(child.key, argv, workdir, variables, out, header=header)
        log.info("%s sent to the worker", step, extra=job_extra(task.job_id))
        return child

    def send_run(self, task: Task, placement: Placement, after: Child | None = None) -> Child:
        """Send the run to the worker of its node, or to the local one for MPI launches
        (``after``: queued behind that run, on its worker). SEND_ERRORS if it cannot."""
        job = task.job
        # Made ahead by the launcher's directory thread; when it is behind (runs start faster
        # than it makes them), by the worker, so that the loop never waits on the file system.
        workdir, make = self.workdir_to_make(task)
        variables, env = self.job_env(job, placement.gpus[0])
        run = commands.run_command(
            job,
            task.app,
            list(placement.hosts),
            self.mpi,
            self.mpi_mode,
            variables,
            env,
            workdir,
            self.platform.mpi_launcher_args,
            self.container,
        )
        out = workdir / f"{job.name}.out"
        assert self.fleet is not None
        if after is not None:
            link = cast(WorkerLink, after.remote)
        elif run.through_mpi:
            link = self.local()
        else:
            link = self.fleet.links[placement.nodes[0]]
        bind = not run.through_mpi and job.cpu_affinity != "none"
        child = self.children.adopt(job.job_id, Step.RUN, out, link)
        cpus = placement.cpus[0] if bind else ()
        after_key = after.key if after else None
        link.run(
            child.key, run.argv, workdir, run.variables, out, cpus, after_key, make, files=run.files
        )
        # A function job's outcome must carry this run's token to count as its outcome.
        task.call_token = run.token
        return child

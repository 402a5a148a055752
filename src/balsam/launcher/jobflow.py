"""Taking one claimed job through its steps on this launcher's nodes.

A claimed job arrives in READY (to be staged in), STAGED_IN (to be preprocessed), or
PREPROCESSED / RESTART_READY (to be run). The launcher does each step it can here and records
the state it reached; the service validates each change and fast-forwards through steps that
have nothing to do, so the launcher's own view follows the same rules (:mod:`domain.states`):

    READY --stage in--> STAGED_IN --preprocess--> PREPROCESSED --start--> RUNNING
    RUNNING --exit 0--> RUN_DONE --postprocess--> POSTPROCESSED --stage out--> JOB_FINISHED
    RUNNING --exit != 0--> RUN_ERROR (the service retries or fails it)

The update that ends this launcher's work on a job carries ``release=True``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import cast

from balsam.backends.base import Backend
from balsam.config import LauncherSettings, PlatformSettings, Site
from balsam.domain.commands import CommandError
from balsam.domain.resources import why_cannot_fit
from balsam.domain.states import JobState
from balsam.errors import BalsamError, DatabaseError
from balsam.launcher import commands, staging
from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.lease import Lease
from balsam.launcher.logs import JobLines, job_extra
from balsam.launcher.placement import NodePool, Placement
from balsam.launcher.updates import FlushResult, UpdateBuffer
from balsam.launcher.workdirs import DirectoryMaker
from balsam.launcher.workers import WorkerFleet, WorkerLink
from balsam.platform.mpi import MpiLauncher
from balsam.schemas.apps import AppOut
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import clause_from_kwargs

log = logging.getLogger(__name__)
job_lines = JobLines(__name__)
S = JobState


@dataclass(eq=False)
class Task:
    """A job this launcher holds: waiting to run when ``child`` is None."""

    job: JobOut
    app: AppOut
    child: Child | None = None
    placement: Placement | None = None
    killed: bool = False
    #: Why the launcher stopped the run itself (it lost its lease or fenced), if it did.
    abandoned: str = ""
    #: Its run was recorded RUNNING (its worker said it started).
    running: bool = False
    #: Its working directory exists (see :mod:`balsam.launcher.workdirs`).
    workdir_made: bool = False

    @property
    def attempt(self) -> int:
        """Which run of the job this is (1 for the first)."""
        job = self.job
        return job.error_count + job.timeout_count + job.lost_count + 1

    @cached_property
    def priority(self) -> tuple[int, int, int, int]:
        """Sort key of waiting jobs: biggest (nodes, then cores, then GPUs), then longest."""
        req = self.job.resources()
        return (-req.num_nodes, -req.cpus_per_node, -req.gpus_per_node, -self.job.wall_time_minutes)

    @cached_property
    def shape(self) -> tuple[int, int, int, int]:
        """What the job takes of a node: jobs of one shape can run in each other's place."""
        req = self.job.resources()
        return (req.num_nodes, req.cpus_per_node, req.gpus_per_node, req.node_packing_count)


class JobFlow:
    """The per-job steps of a launcher: the base of :class:`~balsam.launcher.runner.Launcher`,
    which sets the attributes declared here and adds the session, claims and the event loop.
    """

    site: Site
    backend: Backend
    settings: LauncherSettings
    platform: PlatformSettings
    pool: NodePool
    mpi: MpiLauncher | None
    environ: dict[str, str]
    children: ChildProcesses
    tasks: dict[str, Task]
    updates: UpdateBuffer
    next_claim: float
    lease: Lease
    fleet: WorkerFleet | None
    #: Index in the pool of the node this launcher runs on (None: it runs on none of them).
    local_index: int | None
    #: Every job runs through the MPI launcher.
    mpi_mode: bool
    dirs: DirectoryMaker

    @property
    def session_id(self) -> int:
        """The launcher's current session."""
        return self.lease.session_id

    # ---- bookkeeping ---------------------------------------------------------------------

    def record(
        self,
        job_id: str,
        state: JobState,
        now: float,
        message: str = "",
        return_code: int | None = None,
        release: bool = False,
        lost: bool = False,
    ) -> None:
        """Queue a state change (and log it)."""
        first = message.splitlines()[0] if message else ""
        job_lines.info(job_id, f"-> {state.value} {first}".rstrip())
        self.updates.add(job_id, state, now, message, return_code, release, lost)

    def forget(self, task: Task) -> None:
        """Drop a job from this launcher's view (its placement must be released already)."""
        self.tasks.pop(task.job.job_id, None)

    def fail(self, task: Task, message: str, now: float) -> None:
        """Give up on a job for good (FAILED) and stop holding it."""
        self.record(task.job.job_id, S.FAILED, now, message, release=True)
        self.forget(task)

    def flush(self, now: float) -> FlushResult:
        """Write the buffered state changes now."""
        raise NotImplementedError

    def release(self, job_ids: list[str]) -> None:
        """Stop holding ``job_ids`` without changing their state."""
        if not job_ids:
            return
        try:
            self.backend.release_jobs(self.session_id, job_ids)
        except DatabaseError as exc:
            log.warning("cannot release %d job(s): %s", len(job_ids), exc)

    def give_back(self, task: Task, now: float, why: str) -> None:
        """Stop holding a job this launcher will not run (after writing what it did)."""
        log.info("giving back: %s", why, extra=job_extra(task.job.job_id))
        self.forget(task)
        self.flush(now)
        self.release([task.job.job_id])

    def workdir(self, task: Task) -> Path:
        """The job's working directory (made ahead by the directory thread, or now)."""
        return self.dirs.ensure(task, self.site.job_dir(task.job.working_directory))

    def drop(self, task: Task) -> None:
        """Stop holding a job whose command was called off or killed, its state unchanged."""
        self.forget(task)
        self.release([task.job.job_id])

    def detach(self, key: int) -> tuple[Child, Task] | None:
        """Forget a worker's command that will not report again; free what its job held."""
        child = self.children.remote_exited(key)
        task = self.tasks.get(child.job_id) if child is not None else None
        if child is None or task is None:
            return None
        task.child = None
        if task.placement is not None:
            self.pool.release(task.placement)
            task.placement = None
            self.next_claim = time.monotonic()
        return child, task

    def job_env(
        self, job: JobOut, gpus: tuple[int, ...] = ()
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The job's own variables (with the GPUs it was given) and its full environment."""
        variables = commands.job_variables(job, self.site, self.lease.mark)
        gpu_var = self.platform.gpu_visible_env
        variables.update(commands.gpu_variables(job, gpus, gpu_var, self.environ))
        return variables, commands.job_environment(self.environ, variables)

    # ---- arrival -----------------------------------------------------------------------------

    def apps_for(self, jobs: list[JobOut]) -> dict[str, AppOut]:
        """The apps these jobs run (one query; fresh, so app edits take effect)."""
        names = sorted({j.application for j in jobs})
        clause = clause_from_kwargs({"name__in": names})
        return {app.name: app for app in self.backend.list_apps([clause])}

    def never_runs_here(self, job: JobOut) -> str | None:
        """Why ``job`` can never run on this allocation, or None."""
        reason = why_cannot_fit(job.resources(), self.pool.specs)
        if reason is not None:
            return f"cannot run on this allocation: {reason}"
        try:
            commands.needs_mpi(job, self.mpi, self.mpi_mode)
        except commands.CannotRun as exc:
            return str(exc)
        return None

    def admit(self, jobs: list[JobOut], now: float) -> None:
        """Take newly claimed jobs: fail impossible ones, advance the others to runnable."""
        apps = self.apps_for(jobs)
        for job in jobs:
            app = apps.get(job.application)
            if app is None:
                problem: str | None = f"app {job.application!r} is not registered"
            else:
                problem = self.never_runs_here(job)
            if app is None or problem:
                self.record(job.job_id, S.FAILED, now, problem or "", release=True)
                continue
            task = Task(job, app)
            self.tasks[job.job_id] = task
            self.dirs.prepare(task, self.site.job_dir(job.working_directory))
            self._advance(task, now)

    def _advance(self, task: Task, now: float) -> None:
        job, app = task.job, task.app
        state = job.state
        if state is S.READY:
            if not self._stage_in(task, now):
                return
            state = S.STAGED_IN if app.preprocess else S.PREPROCESSED
        if state is S.STAGED_IN:
            if app.preprocess:
                self.start_step(task, Step.PREPROCESS, app.preprocess, now)
                return
            self.record(job.job_id, S.PREPROCESSED, now)

    def _stage_in(self, task: Task, now: float) -> bool:
        try:
            summary = staging.stage_in(self.site, self.backend, task.job)
        except DatabaseError as exc:
            self.give_back(task, now, f"cannot look up its parents: {exc}")
            return False
        except BalsamError as exc:
            self.fail(task, str(exc), now)
            return False
        self.record(task.job.job_id, S.STAGED_IN, now, summary)
        return True

    # ---- commands ------------------------------------------------------------------------------

    def _local(self) -> WorkerLink:
        """The worker on the launcher's host."""
        assert self.fleet is not None and self.fleet.local is not None, "started in run()"
        return self.fleet.local

    def start_step(self, task: Task, step: Step, command: str, now: float) -> None:
        """Start the app's preprocess or postprocess command in the job's directory."""
        job = task.job
        try:
            workdir = self.workdir(task)
            variables, _ = self.job_env(job)
            argv = commands.step_argv(command, task.app)
        except (OSError, CommandError) as exc:
            self.fail(task, f"cannot start {step} command {command!r}: {exc}", now)
            return
        out = workdir / f"{step}.log"
        link = self._local()
        task.child = self.children.adopt(job.job_id, step, out, link)
        link.run(task.child.key, argv, workdir, variables, out)
        log.info("%s sent to the worker", step, extra=job_extra(job.job_id))

    def start_run(self, task: Task, placement: Placement, now: float) -> None:
        """Have a worker start the job's run on ``placement`` (RUNNING when it has started)."""
        try:
            task.child = self._send_run(task, placement)
        except (OSError, CommandError, commands.CannotRun) as exc:
            self.pool.release(placement)
            self.next_claim = now
            where = f"attempt {task.attempt} on {','.join(placement.hosts)}"
            self._cannot_start(task, where, now, str(exc))
            return
        task.placement = placement

    def _cannot_start(self, task: Task, where: str, now: float, why: str) -> None:
        job = task.job
        self.record(job.job_id, S.RUNNING, now, where)
        self.record(job.job_id, S.RUN_ERROR, now, f"cannot start: {why}", release=True)
        self.forget(task)

    def chain(self, task: Task, predecessor: Child) -> None:
        """Queue a job's run at the worker of ``predecessor``, to start in its place.

        The worker starts it the moment ``predecessor`` exits, on the same CPUs and GPUs,
        without waiting for the launcher: the launcher's bookkeeping of one job overlaps the
        next one's start. The job takes over the predecessor's placement when that exits.
        """
        placement = self._placement_of_chain(predecessor)
        try:
            child = self._send_run(task, placement, predecessor)
        except (OSError, CommandError, commands.CannotRun) as exc:
            where = f"attempt {task.attempt} on {','.join(placement.hosts)}"
            self._cannot_start(task, where, time.monotonic(), str(exc))
            return
        predecessor.successor, child.follows = child, predecessor
        task.child = child

    def _placement_of_chain(self, child: Child) -> Placement:
        """The placement a queued run will inherit: that of the running run it waits behind."""
        head = child
        while head.follows is not None:
            head = head.follows
        placement = self.tasks[head.job_id].placement
        assert placement is not None, "the head of a chain of runs holds the placement"
        return placement

    def _send_run(self, task: Task, placement: Placement, after: Child | None = None) -> Child:
        """Send the run to the worker of its node, or to the local one for MPI launches
        (``after``: queued behind that run, on its worker)."""
        job = task.job
        # Made by the launcher's directory thread (or now), not by the worker: the worker's
        # every step delays the next start.
        workdir = self.workdir(task)
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
        )
        out = workdir / f"{job.name}.out"
        assert self.fleet is not None
        if after is not None:
            link = cast(WorkerLink, after.remote)
        elif run.through_mpi:
            link = self._local()
        else:
            link = self.fleet.links[placement.nodes[0]]
        bind = not run.through_mpi and job.cpu_affinity != "none"
        child = self.children.adopt(job.job_id, Step.RUN, out, link)
        cpus = placement.cpus[0] if bind else ()
        link.run(child.key, run.argv, workdir, variables, out, cpus, after.key if after else None)
        return child

    def run_started(self, key: int, pid: int) -> None:
        """A worker started a command: a run is RUNNING from now on."""
        child = self.children.get(key)
        task = self.tasks.get(child.job_id) if child is not None else None
        if child is None or task is None:
            return
        child.remote_pid = pid
        if child.step is not Step.RUN:
            log.info("%s started (pid %d)", child.step, pid, extra=job_extra(child.job_id))
            return
        task.running = True
        hosts = ",".join(task.placement.hosts) if task.placement else "?"
        message = f"attempt {task.attempt} on {hosts} (pid {pid})"
        self.record(task.job.job_id, S.RUNNING, time.monotonic(), message)

    def run_failed(self, key: int, error: str) -> None:
        """A worker could not start a command (a missing program, a bad directory, ...)."""
        detached = self.detach(key)
        if detached is None:
            return
        child, task = detached
        now = time.monotonic()
        if task.killed:
            self.drop(task)
        elif child.step is Step.RUN:
            self._cannot_start(task, f"attempt {task.attempt}", now, error)
        else:
            self.fail(task, f"cannot start {child.step} command: {error}", now)

    def step_done(self, task: Task, step: Step, code: int, now: float) -> None:
        """A job's command exited on its own with ``code``."""
        if step is Step.PREPROCESS:
            if code == 0:
                self.record(task.job.job_id, S.PREPROCESSED, now)
            else:
                self.fail(task, self._exit_text("preprocess", code, task, "preprocess.log"), now)
        elif step is Step.RUN:
            if code == 0:
                self._run_succeeded(task, now)
            else:
                self._run_failed(task, code, now)
        elif code == 0:
            self._postprocessed(task, now)
        else:
            self.fail(task, self._exit_text("postprocess", code, task, "postprocess.log"), now)

    def _exit_text(self, what: str, code: int, task: Task, filename: str) -> str:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        path = self.site.job_dir(task.job.working_directory) / filename
        lines = commands.tail(path, self.settings.error_tail_lines)
        text = f"{what} failed: {how}"
        return f"{text}; last lines of {filename}:\n{lines}" if lines else text

    def _needs_stage_out(self, job: JobOut) -> bool:
        return bool(job.stage_out_url and job.stage_out_files)

    def _run_succeeded(self, task: Task, now: float) -> None:
        job, app = task.job, task.app
        post, out = bool(app.postprocess), self._needs_stage_out(job)
        self.record(job.job_id, S.RUN_DONE, now, return_code=0, release=not (post or out))
        if post:
            self.start_step(task, Step.POSTPROCESS, app.postprocess, now)
        elif out:
            self._stage_out(task, now)
        else:
            self.forget(task)

    def _run_failed(self, task: Task, code: int, now: float) -> None:
        job, app = task.job, task.app
        message = self._exit_text("run", code, task, f"{job.name}.out")
        handler = job.post_error_handler and bool(app.postprocess)
        self.record(job.job_id, S.RUN_ERROR, now, message, return_code=code, release=not handler)
        if handler:
            self.start_step(task, Step.POSTPROCESS, app.postprocess, now)
        else:
            self.forget(task)

    def _postprocessed(self, task: Task, now: float) -> None:
        out = self._needs_stage_out(task.job)
        self.record(task.job.job_id, S.POSTPROCESSED, now, release=not out)
        if out:
            self._stage_out(task, now)
        else:
            self.forget(task)

    def _stage_out(self, task: Task, now: float) -> None:
        try:
            summary = staging.stage_out(self.site, task.job)
        except BalsamError as exc:
            self.fail(task, str(exc), now)
            return
        self.record(task.job.job_id, S.JOB_FINISHED, now, summary, release=True)
        self.forget(task)


__all__ = ["JobFlow", "Task"]

"""Taking each held job through the steps it still needs, from whatever state it is in.

A claimed job arrives in any state a launcher can take it on from: READY (stage in),
STAGED_IN (preprocess), PREPROCESSED or RESTART_READY (run), or, left by a launcher that
died or stopped, RUN_DONE, RUN_ERROR or RUN_TIMEOUT (the postprocess, or the app's error or
timeout handler) and POSTPROCESSED (stage out). Which step comes next is decided in one place,
:func:`balsam.domain.states.pending_step`, on the state the database reports, the same rule by
which the state engine skips the steps that have nothing to do:

    READY --stage in--> STAGED_IN --preprocess--> PREPROCESSED --run--> RUNNING
    RUNNING --exit 0--> RUN_DONE --postprocess--> POSTPROCESSED --stage out--> JOB_FINISHED
    RUNNING --exit != 0--> RUN_ERROR (--handler--> POSTPROCESSED, or retried, or FAILED)

Every update says which state the launcher believes the job is in (``from_state``). Before a
preprocess, postprocess or stage-out the task waits for the database's answer (SETTLING), so
the step sees the job as the database has it and a state set by someone else — a user, or the
job's own pre/postprocess through the API — is seen: the launcher carries on from that state
(a handler that asks for RESTART_READY gets its rerun) instead of refusing its own next step.
Before a run it goes on without waiting, predicting the skipped steps with the same rule.
"""

from __future__ import annotations

import logging
import signal
import time
from functools import partial
from typing import Any

from balsam.backends.base import Backend
from balsam.config import LauncherSettings, Site
from balsam.domain.resources import why_cannot_fit
from balsam.domain.states import TERMINAL_STATES, JobState, JobStep, pending_step, settled
from balsam.errors import BalsamError
from balsam.launcher import calls, commands, staging
from balsam.launcher.appcache import AppCache
from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.claims import Claimer
from balsam.launcher.dispatch import SEND_ERRORS, Dispatcher, why_not_sent
from balsam.launcher.logs import JobLines, job_extra
from balsam.launcher.placement import NodePool, Placement
from balsam.launcher.queue import RunQueue
from balsam.launcher.signalled import SignalledRuns
from balsam.launcher.stager import Done, Stager
from balsam.launcher.tasks import WITH_COMMAND, StopCause, Task, TaskState
from balsam.launcher.updates import UpdateBuffer
from balsam.schemas.apps import AppOut
from balsam.schemas.jobs import JobOut, RefusalCode, UpdateResult

log = logging.getLogger(__name__)
job_lines = JobLines(__name__)
S = JobState
T = TaskState
#: Steps after a run that keep the job held: the launcher still has work on it.
LATER_STEPS = (JobStep.POSTPROCESS, JobStep.STAGE_OUT)


class JobFlow:
    """The held jobs of one launcher and the steps each takes (see the module docstring)."""

    def __init__(
        self,
        site: Site,
        backend: Backend,
        settings: LauncherSettings,
        pool: NodePool,
        children: ChildProcesses,
        queue: RunQueue,
        updates: UpdateBuffer,
        claimer: Claimer,
        dispatcher: Dispatcher,
        stager: Stager[Task],
    ) -> None:
        self.site = site
        self.backend = backend
        self.settings = settings
        self.pool = pool
        self.children = children
        self.queue = queue
        self.updates = updates
        self.claimer = claimer
        self.dispatch = dispatcher
        self.stager = stager
        self.tasks: dict[str, Task] = {}
        self.apps = AppCache(backend)
        #: Claimed jobs whose apps could not be looked up yet (retried each turn).
        self.unadmitted: list[JobOut] = []
        #: The launcher is stopping: no new step starts.
        self.closing = False
        #: Runs killed by a signal not ours, waiting to learn whether the launcher stops too.
        self.signalled = SignalledRuns(settings.outside_signal_wait_seconds)

    def __len__(self) -> int:
        return len(self.tasks) + len(self.unadmitted)

    def task_of(self, job_id: str) -> Task | None:
        """The task of a job, if the launcher holds it."""
        return self.tasks.get(job_id)

    # ---- bookkeeping ---------------------------------------------------------------------

    def record(
        self,
        task: Task,
        state: JobState,
        now: float,
        message: str = "",
        return_code: int | None = None,
        release: bool = False,
        lost: bool = False,
        outcome: dict[str, Any] | None = None,
    ) -> int:
        """Queue the job's move from the state the launcher believes it in; returns its seq.

        ``outcome``: what a function job's run returned or raised, stored with the state. A
        function job's RUNNING clears the outcome of an earlier attempt (``{}``).
        """
        first = message.splitlines()[0] if message else ""
        job_lines.info(task.job_id, f"-> {state.value} {first}".rstrip())
        if outcome is None and state is S.RUNNING and task.app.function:
            outcome = {}
        seq = self.updates.record(
            task.job_id, state, task.db_state, now, message, return_code, release, lost, outcome
        )
        task.db_state = state
        return seq

    def finish(self, task: Task, now: float, release: bool) -> None:
        """Stop holding a task (``release``: tell the database, its state unchanged)."""
        if task.state is not T.DONE:
            task.move(T.DONE)
        self.tasks.pop(task.job_id, None)
        if release:
            self.updates.release([task.job_id], now)

    def settle(self, task: Task, seq: int, now: float) -> None:
        """Wait for the database's answer to update ``seq`` before the next step."""
        if task.state is not T.SETTLING:
            task.move(T.SETTLING)
        task.awaiting_seq = seq
        self.updates.hurry(now)

    def give_back(self, task: Task, now: float, why: str) -> None:
        """Stop holding a job this launcher will not run (its state unchanged)."""
        log.info("giving back: %s", why, extra=job_extra(task.job_id))
        self.finish(task, now, release=True)

    def fail(self, task: Task, message: str, now: float) -> None:
        """Give up on a job for good (FAILED) and stop holding it."""
        self.record(task, S.FAILED, now, message, release=True)
        self.finish(task, now, release=False)

    # ---- arrival -----------------------------------------------------------------------------

    def admit(self, jobs: list[JobOut], now: float) -> None:
        """Take newly claimed jobs on, each from the state it is in."""
        jobs = self.unadmitted + jobs
        self.unadmitted = []
        try:
            apps = self.apps.apps_for((job.application for job in jobs), now)
        except BalsamError as exc:
            log.warning("cannot look up the apps of %d claimed job(s): %s", len(jobs), exc)
            self.unadmitted = jobs
            return
        self.updates.keep([job.job_id for job in jobs])
        for job in jobs:
            if job.job_id in self.tasks:
                # Let go of by a release that crossed a claim, and claimed again: the task
                # that holds it here goes on (a second one would lose the first one's room).
                continue
            app = apps.get(job.application)
            if app is None:
                task = Task(job, AppOut.model_construct(name=job.application, executable=""))
                self.tasks[job.job_id] = task
                self.fail(task, f"app {job.application!r} is not registered", now)
                continue
            task = Task(job, app, state=T.SETTLING, born_seq=self.claimer.lease.last_seq)
            self.tasks[job.job_id] = task
            self.dispatch.prepare(task)
            self.proceed(task, job.state, now)

    def retry_admissions(self, now: float) -> None:
        """Try again to take on claimed jobs whose apps could not be looked up."""
        if self.unadmitted:
            self.admit([], now)

    def never_runs_here(self, task: Task) -> str | None:
        """Why a job the claim gave can still not run here (odd nodes, no MPI), or None."""
        reason = why_cannot_fit(task.job.resources(), self.pool.specs)
        if reason is not None:
            return f"cannot run on this allocation: {reason}"
        try:
            commands.needs_mpi(task.job, self.dispatch.mpi, self.dispatch.mpi_mode)
        except commands.CannotRun as exc:
            return str(exc)
        return None

    # ---- the one dispatcher of steps ----------------------------------------------------------

    def proceed(self, task: Task, state: JobState, now: float) -> None:
        """Carry on with a held job that the database says is in ``state``.

        Once the launcher is stopping nothing new starts: the task is left for the session's
        close to hand back.
        """
        task.db_state = state
        if self.closing:
            return
        step = pending_step(state, task.facts)
        if step is None:
            # Nothing left for a launcher (an end state, or waiting for its parents).
            self.finish(task, now, release=True)
        elif step is JobStep.RUN and self.claimer.split.processing_only:
            self._hand_to_runners(task, state, now)
        elif step is JobStep.RUN:
            task.runs += 1
            why = self.never_runs_here(task)
            if why is not None:
                log.warning("%s", why, extra=job_extra(task.job_id))
                self.give_back(task, now, why)
                return
            task.move(T.WAITING)
            self.queue.enqueue(task)
        elif step is JobStep.STAGE_IN:
            self._stage_in(task, now)
        elif step is JobStep.STAGE_OUT:
            self._stage_out(task, now)
        else:
            self._start_step(task, step, now)

    def _hand_to_runners(self, task: Task, state: JobState, now: float) -> None:
        """A processing launcher's job is ready to run: the compute launchers take it on."""
        if state in (S.PREPROCESSED, S.RESTART_READY):
            self.finish(task, now, release=True)
            return
        # READY or STAGED_IN with nothing to do before the run: say so, so it can be claimed.
        self.record(task, S.PREPROCESSED, now, "ready to run", release=True)
        self.finish(task, now, release=False)

    def _stage_in(self, task: Task, now: float) -> None:
        """Look up the parents here (the database is the loop's), copy in a helper thread."""
        try:
            parents = staging.parents_of(self.backend, task.job)
        except BalsamError as exc:
            if exc.transient:
                self.give_back(task, now, f"cannot look up its parents: {exc}")
            else:
                self.fail(task, str(exc), now)
            return
        task.move(T.STAGING)
        self.stager.submit(task, partial(staging.copy_inputs, self.site, task.job, parents))

    def _stage_out(self, task: Task, now: float) -> None:
        task.move(T.STAGING)
        self.stager.submit(task, partial(staging.stage_out, self.site, task.job))

    def staged(self, done: list[Done[Task]], now: float) -> None:
        """Copies finished: record them and carry on (a job stopped meanwhile is left)."""
        for item in done:
            task = item.key
            if self.tasks.get(task.job_id) is not task or task.state is not T.STAGING:
                continue
            if item.error is not None:
                self.fail(task, str(item.error), now)
            elif task.db_state is S.POSTPROCESSED:
                self.record(task, S.JOB_FINISHED, now, item.summary, release=True)
                self.finish(task, now, release=False)
            else:
                self._staged_in(task, item.summary, now)

    def _staged_in(self, task: Task, summary: str, now: float) -> None:
        seq = self.record(task, S.STAGED_IN, now, summary)
        after = settled(S.STAGED_IN, task.facts)
        if pending_step(after, task.facts) is JobStep.RUN:
            # No preprocess: run without waiting for the answer (the same rule predicts it).
            task.move(T.SETTLING)
            self.proceed(task, after, now)
        else:
            self.settle(task, seq, now)

    def _start_step(self, task: Task, step: JobStep, now: float) -> None:
        """Start the app's preprocess or postprocess (handler) command."""
        kind = Step.PREPROCESS if step is JobStep.PREPROCESS else Step.POSTPROCESS
        command = task.app.preprocess if kind is Step.PREPROCESS else task.app.postprocess
        try:
            task.child = self.dispatch.send_step(task, kind, command)
        except SEND_ERRORS as exc:
            why = why_not_sent(exc, task.job_id)
            self.fail(task, f"cannot start {kind} command {command!r}: {why}", now)
            return
        task.move(T.PREPROCESSING if kind is Step.PREPROCESS else T.POSTPROCESSING)

    # ---- runs (the queue's Starter) -----------------------------------------------------------

    def start_run(self, task: Task, placement: Placement, now: float) -> bool:
        """Have a worker start the job's run on ``placement`` (RUNNING when it has started)."""
        try:
            task.child = self.dispatch.send_run(task, placement)
        except SEND_ERRORS as exc:
            self.pool.release(placement)
            self.claimer.soon()
            task.move(T.STARTING)
            where = f"attempt {task.attempt} on {','.join(placement.hosts)}"
            self._cannot_start(task, where, now, why_not_sent(exc, task.job_id))
            return False
        task.placement = placement
        task.move(T.STARTING)
        return True

    def chain(self, task: Task, predecessor: Child, now: float) -> bool:
        """Queue a job's run at the worker of ``predecessor``, to start in its place.

        The worker starts it the moment ``predecessor`` exits, on the same CPUs and GPUs,
        without waiting for the launcher. It takes over the predecessor's placement then.
        """
        placement = self._placement_of_chain(predecessor)
        if placement is None:
            # The chain's head has let go of its room: nothing to queue behind.
            self.queue.enqueue(task)
            return False
        try:
            child = self.dispatch.send_run(task, placement, predecessor)
        except SEND_ERRORS as exc:
            task.move(T.STARTING)
            where = f"attempt {task.attempt} on {','.join(placement.hosts)}"
            self._cannot_start(task, where, now, why_not_sent(exc, task.job_id))
            return False
        predecessor.successor, child.follows = child, predecessor
        task.child = child
        task.move(T.QUEUED)
        return True

    def _placement_of_chain(self, child: Child) -> Placement | None:
        """The placement a queued run will inherit: that of the running run it waits behind
        (None if that run's task no longer holds it)."""
        head = child
        while head.follows is not None:
            head = head.follows
        task = self.tasks.get(head.job_id)
        return task.placement if task is not None and task.child is head else None

    def _cannot_start(self, task: Task, where: str, now: float, why: str) -> None:
        self.record(task, S.RUNNING, now, where)
        self._run_ended(task, now, S.RUN_ERROR, f"cannot start: {why}", None)

    # ---- worker reports -------------------------------------------------------------------------

    def run_started(self, key: int, pid: int, now: float) -> None:
        """A worker started a command: a run is RUNNING from now on."""
        child = self.children.get(key)
        task = self.tasks.get(child.job_id) if child is not None else None
        if child is None or task is None:
            return
        child.remote_pid = pid
        if child.step is not Step.RUN:
            log.info("%s started (pid %d)", child.step, pid, extra=job_extra(child.job_id))
            return
        self._mark_started(task, pid, now)

    def _mark_started(self, task: Task, pid: int, now: float) -> None:
        if task.state in (T.STARTING, T.QUEUED):
            task.move(T.RUNNING)
        elif task.stop_cause not in (StopCause.SHUTDOWN, StopCause.FENCED):
            return  # being ended for a user's kill or a lost lease: nothing more to record
        hosts = ",".join(task.placement.hosts) if task.placement else "?"
        # The batch job too: every run can be traced to the allocation that ran it.
        batch = self.claimer.lease.batch_job
        where = f"pid {pid}, batch job {batch}" if batch else f"pid {pid}"
        self.record(task, S.RUNNING, now, f"attempt {task.attempt} on {hosts} ({where})")

    def exited(self, child: Child, code: int, now: float) -> None:
        """A command of a job ended with ``code`` (its worker reported it)."""
        task = self.tasks.get(child.job_id)
        if task is None or task.child is not child:
            return
        task.child = None
        if child.step is Step.RUN:
            successor = self.tasks.get(child.successor.job_id) if child.successor else None
            self.queue.hand_over(task, child, now, successor)
            self.claimer.ends.tick(now)
            self.claimer.soon()
        if task.state is T.STOPPING:
            self._stopped(task, child, code, now)
        elif child.step is Step.PREPROCESS:
            self._preprocessed(task, code, now)
        elif child.step is Step.POSTPROCESS:
            self._postprocessed(task, code, now)
        else:
            if task.state in (T.STARTING, T.QUEUED):
                self._mark_started(task, child.remote_pid, now)
            if self.signalled.hold(task.job_id, child, code, now):
                task.move(T.SIGNALLED)
                return
            self._run_exited(task, code, now)

    def _run_exited(self, task: Task, code: int, now: float) -> None:
        if task.app.function:
            self._function_exited(task, code, now)
            return
        state = S.RUN_DONE if code == 0 else S.RUN_ERROR
        text = "" if code == 0 else self._exit_text("run", code, task, f"{task.job.name}.out")
        self._run_ended(task, now, state, text, code)

    def _function_exited(self, task: Task, code: int, now: float) -> None:
        """A function job's run ended: done only if it exited 0 and its function returned
        (a process that exited 0 without an outcome did not finish its call)."""
        workdir = self.site.job_dir(task.job.working_directory)
        ended = calls.read_outcome(workdir, task.call_token)
        if code == 0 and ended.returned:
            self._run_ended(task, now, S.RUN_DONE, ended.summary(), code, ended.outcome)
            return
        text = self._exit_text("run", code, task, f"{task.job.name}.out", ended.summary())
        self._run_ended(task, now, S.RUN_ERROR, text, code, ended.outcome)

    def decide_signalled(self, now: float) -> None:
        """Runs killed by a signal whose wait is over, with the launcher still going: the
        signal was the job's own business (or its error), recorded as any failed run."""
        if not self.signalled:
            return
        for job_id in self.signalled.due(now):
            held = self.signalled.take(job_id)
            self._run_exited(self.tasks[job_id], held.code, now)

    def run_failed(self, key: int, error: str, now: float, later: bool = False) -> None:
        """A worker could not start a command (a missing program, a bad directory, ...;
        ``later``: the node's disk is full, which is not the job's fault)."""
        detached = self.detach(key)
        if detached is None:
            return
        child, task = detached
        if task.state is T.STOPPING:
            self._stopped(task, child, None, now)
        elif later and child.step is Step.RUN:
            # Costs the job no retry: it waits, and starts once the node can write again.
            log.warning("cannot start for now: %s", error, extra=job_extra(task.job_id))
            self.queue.hold(now)
            task.move(T.WAITING)
            self.queue.enqueue(task)
        elif child.step is Step.RUN:
            self._cannot_start(task, f"attempt {task.attempt}", now, error)
        else:
            self.fail(task, f"cannot start {child.step} command: {error}", now)

    def run_cancelled(self, key: int, now: float) -> None:
        """A queued run was taken off its worker's queue before it started."""
        child = self.children.get(key)
        if child is not None:
            self.queue.unlink(child)
        detached = self.detach(key)
        if detached is None:
            return
        child, task = detached
        if task.state is T.STOPPING:
            self._stopped(task, child, None, now)
        else:
            task.move(T.WAITING)
            self.queue.enqueue(task)

    def detach(self, key: int) -> tuple[Child, Task] | None:
        """Forget a worker's command that will not report again; free what its job held."""
        child = self.children.remote_exited(key)
        task = self.tasks.get(child.job_id) if child is not None else None
        if child is None or task is None or task.child is not child:
            return None
        self.queue.forget(child)
        task.child = None
        if task.placement is not None:
            queued = child.successor
            successor = self.tasks.get(queued.job_id) if queued is not None else None
            # A run queued behind it starts in its place at the worker now: it keeps the room.
            self.queue.hand_over(task, child, time.monotonic(), successor, timed=False)
            self.claimer.soon()
        return child, task

    def command_lost(self, child: Child, task: Task, hostname: str, now: float) -> None:
        """A command vanished with its node's worker."""
        started = task.db_state is S.RUNNING
        if child.step is Step.RUN and started and task.state is not T.STOPPING:
            message = f"lost with node {hostname}: its worker went away"
            self.record(task, S.RESTART_READY, now, message, release=True, lost=True)
            self.finish(task, now, release=False)
        elif child.step is Step.RUN and not started and task.state is not T.STOPPING:
            task.move(T.WAITING)
            self.queue.enqueue(task)
        else:
            self._stopped(task, child, None, now)

    # ---- what a command's end means ---------------------------------------------------------

    def _run_ended(
        self,
        task: Task,
        now: float,
        state: JobState,
        message: str,
        code: int | None,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        after = pending_step(settled(state, task.facts), task.facts)
        # With the service doing postprocessing, the job is let go of for it to take.
        later = after in LATER_STEPS and not self.claimer.split.defers(now)
        seq = self.record(
            task, state, now, message, return_code=code, release=not later, outcome=outcome
        )
        if later:
            self.settle(task, seq, now)
        else:
            self.finish(task, now, release=False)

    def _preprocessed(self, task: Task, code: int, now: float) -> None:
        if code != 0:
            self.fail(task, self._exit_text("preprocess", code, task, "preprocess.log"), now)
            return
        self._reload(task)
        self.settle(task, self.record(task, S.PREPROCESSED, now), now)

    def _reload(self, task: Task) -> None:
        """Read the job again: what its preprocess saved (args, environment, data, ...) is
        what its run and postprocess use, as in Balsam 0.5."""
        try:
            task.reload(self.backend.get_job(task.job_id))
        except BalsamError as exc:
            log.warning(
                "cannot read the job again after its preprocess, running it as it was claimed: %s",
                exc,
                extra=job_extra(task.job_id),
            )

    def _postprocessed(self, task: Task, code: int, now: float) -> None:
        if code != 0:
            self.fail(task, self._exit_text("postprocess", code, task, "postprocess.log"), now)
            return
        if task.db_state in (S.RUN_ERROR, S.RUN_TIMEOUT):
            # A handler decides what comes next by moving the job (RESTART_READY, ...): one
            # that leaves it as it was fixed nothing, and the job fails, as in Balsam 0.5.
            # If it did move the job, this update is refused and the job goes on from there.
            which = "error" if task.db_state is S.RUN_ERROR else "timeout"
            why = f"the {which} handler exited 0 but left the job {task.db_state.value}"
            self.settle(task, self.record(task, S.FAILED, now, why), now)
            return
        after = pending_step(settled(S.POSTPROCESSED, task.facts), task.facts)
        later = after in LATER_STEPS
        seq = self.record(task, S.POSTPROCESSED, now, release=not later)
        if later:
            self.settle(task, seq, now)
        else:
            self.finish(task, now, release=False)

    def _stopped(self, task: Task, child: Child, code: int | None, now: float) -> None:
        """A command the launcher ended itself is gone: record what its cause says."""
        cause, started = task.stop_cause, task.db_state is S.RUNNING
        run = child.step is Step.RUN
        if cause is StopCause.FENCED and run and started:
            why = task.stop_reason or "stopped: the workflow database was unreachable"
            self.record(task, S.RESTART_READY, now, why, release=True, lost=True)
            self.finish(task, now, release=False)
        elif cause is StopCause.SHUTDOWN and run and started:
            how = "" if code is None else f" (exit code {code})"
            self.record(task, S.RUN_TIMEOUT, now, f"{task.stop_reason}{how}", release=True)
            self.finish(task, now, release=False)
        else:
            if cause is StopCause.SHUTDOWN:
                log.info("%s interrupted", child.step, extra=job_extra(task.job_id))
            self.finish(task, now, release=cause is not StopCause.LOST)

    def _exit_text(self, what: str, code: int, task: Task, filename: str, why: str = "") -> str:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        path = self.site.job_dir(task.job.working_directory) / filename
        lines = commands.tail(path, self.settings.error_tail_lines)
        text = f"{what} failed: {how}" + (f": {why}" if why else "")
        return f"{text}; last lines of {filename}:\n{lines}" if lines else text

    # ---- stopping ------------------------------------------------------------------------------

    def stop(self, task: Task, cause: StopCause, reason: str, now: float, grace: float) -> None:
        """End the task's command (SIGTERM, SIGKILL after ``grace``), or let go of the task
        at once when it has none."""
        if task.state is T.DONE:
            return
        if task.state is T.SIGNALLED:
            # Its run died of a signal just before the launcher was stopped: the same stop.
            task.stop(cause, reason)
            held = self.signalled.take(task.job_id)
            self._stopped(task, held.child, held.code, now)
            return
        if task.child is None or task.state not in WITH_COMMAND:
            if task.state is T.WAITING:
                self.queue.unqueue(task)
            if cause is not StopCause.SHUTDOWN:
                # At shutdown, closing the session hands back what runs nothing.
                self.finish(task, now, release=cause is not StopCause.LOST)
            return
        if task.state is T.STOPPING:
            return
        log.info("stopping: %s", reason, extra=job_extra(task.job_id))
        task.stop(cause, reason)
        if cause is StopCause.LOST:
            self.children.signal(task.child, signal.SIGKILL)
        else:
            self.children.terminate(task.child, grace, now)

    def stop_all(self, cause: StopCause, reason: str, now: float, grace: float) -> None:
        """Stop every task (see :meth:`stop`); at shutdown, start nothing new after."""
        if cause is StopCause.SHUTDOWN:
            self.closing = True
        for task in list(self.tasks.values()):
            self.stop(task, cause, reason, now, grace)

    def fence(self, reason: str, now: float, grace: float) -> None:
        """Stop every running run before peers may expire the lease and run it again."""
        for task in list(self.tasks.values()):
            if task.child is not None and task.child.step is Step.RUN:
                self.stop(task, StopCause.FENCED, f"stopped: {reason}", now, grace)

    def killed(self, job_ids: list[str], now: float) -> None:
        """Users killed (or gave up on) these held jobs: stop them, record nothing."""
        for job_id in job_ids:
            self.updates.drop(job_id)
            task = self.tasks.get(job_id)
            if task is None:
                self.updates.release([job_id], now)
            else:
                grace = self.settings.kill_grace_seconds
                self.stop(task, StopCause.KILLED, "killed by user", now, grace)

    # ---- the database's answers -----------------------------------------------------------

    def answers(self, results: list[UpdateResult], now: float) -> None:
        """Act on a flush's results: carry SETTLING tasks on, stop refused ones."""
        last = {r.job_id: r for r in results}
        for result in last.values():
            task = self.tasks.get(result.job_id)
            if task is not None and result.seq and result.seq <= task.born_seq:
                # An earlier task's update, answered late: this task holds the job now.
                continue
            if task is None:
                if result.held and result.state is not None:
                    self.updates.release([result.job_id], now)
            elif result.ok:
                self._applied(task, result, now)
            else:
                self._refused(task, result, now)

    def _applied(self, task: Task, result: UpdateResult, now: float) -> None:
        if task.state is not T.SETTLING or result.seq != task.awaiting_seq:
            return
        assert result.state is not None
        if result.held:
            self.proceed(task, result.state, now)
        else:
            self.finish(task, now, release=False)

    def _refused(self, task: Task, result: UpdateResult, now: float) -> None:
        state = result.state
        why = f"state change refused ({result.code}): {result.reason}"
        # A job moved by its own pre/postprocess (a handler's RESTART_READY) is routine, and
        # so is a kill that came while its command was starting (a queued run that started as
        # the job that killed it ended): the user asked for it; "stopping: ..." follows.
        expected = result.code is RefusalCode.STATE_CHANGED and (
            task.child is None or state is JobState.USER_KILLED
        )
        log.log(
            logging.INFO if expected else logging.WARNING, "%s", why, extra=job_extra(task.job_id)
        )
        grace = self.settings.kill_grace_seconds
        if result.code in (RefusalCode.NOT_HELD, RefusalCode.NOT_FOUND) or state is None:
            self.updates.drop(task.job_id)
            self.stop(task, StopCause.LOST, result.reason, now, grace)
        elif state in TERMINAL_STATES or not result.held:
            self.updates.drop(task.job_id)
            self.stop(task, StopCause.KILLED, result.reason, now, grace)
        elif task.child is None and task.state in (T.SETTLING, T.WAITING):
            # Moved by its own pre/postprocess or a user, still ours: carry on from there.
            self.queue.unqueue(task)
            if task.state is T.WAITING:
                task.move(T.SETTLING)
            self.proceed(task, state, now)
        else:
            self.stop(task, StopCause.REFUSED, result.reason, now, grace)

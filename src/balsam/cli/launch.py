"""``balsam launcher`` and ``balsam submit-launch``.

Numbers are refused unless finite and in range: Python reads ``nan`` and ``inf`` as floats, and
no bound catches ``nan`` (every comparison with it is false), so a launcher given
``--time-limit-minutes nan`` would stop at once having run nothing. Text that reaches a batch
script (``-A``, ``-q``, ``--sched-flags``, ``--wf-filter``) is refused when it holds a control
character, before anything is written or submitted.

Balsam 0.5's launcher flags are taken: ``--persistent`` (keep running when nothing is left:
the same as leaving ``--consume-all`` out), ``--gpus-per-node N`` (the setting
``platform.gpus_per_node`` for this launcher) and ``--num-transition-threads N`` (accepted and
ignored: pre- and postprocessing need no thread pool here). ``--wf-filter WF`` selects
workflows as :func:`balsam.cli.common.select_workflows` says, once, when the launcher starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import sys
from typing import Any

import click

from balsam.backends.base import Backend
from balsam.cli.common import BalsamCommand, select_workflows
from balsam.config import MAX_GPUS_PER_NODE, Site
from balsam.errors import ValidationError
from balsam.platform.schedulers.base import MAX_NODES, MAX_WALL_TIME_MINUTES, script_value_problem


class FiniteFloatRange(click.FloatRange):
    """A :class:`click.FloatRange` that also refuses ``nan`` and ``inf``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number ``value`` reads as; a usage error when it is not finite or in range."""
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{str(value)!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


JOB_MODES = click.Choice(["serial", "mpi"])
POSITIVE_MINUTES = FiniteFloatRange(min=0, min_open=True, max=MAX_WALL_TIME_MINUTES)
#: A launcher's limit: 0 means the default (the allocation's end), as in Balsam 0.5.
LAUNCHER_MINUTES = FiniteFloatRange(min=0, max=MAX_WALL_TIME_MINUTES)
NODE_COUNT = click.IntRange(min=1, max=MAX_NODES)


def _script_text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A value that goes into a batch script: one line of printable text, not empty."""
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter("is empty", ctx, param)
    problem = script_value_problem(value)
    if problem:
        raise click.BadParameter(f"{value!r} {problem}", ctx, param)
    return value


def _sched_flags(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    """``--sched-flags`` split as a shell would split them."""
    problem = script_value_problem(value)
    if problem:
        raise click.BadParameter(f"{value!r} {problem}", ctx, param)
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:
        raise click.BadParameter(f"cannot split {value!r}: {exc}", ctx, param) from None


@click.command("launcher", cls=BalsamCommand)
@click.option(
    "--consume-all", is_flag=True, help="Exit as soon as nothing this launcher could run remains."
)
@click.option("--wf-filter", metavar="WF", help="Run only jobs of workflow WF.")
@click.option(
    "--job-mode",
    type=JOB_MODES,
    default="mpi",
    show_default=True,
    help="serial: pack single-node jobs; mpi: whole nodes through mpiexec.",
)
@click.option(
    "--time-limit-minutes",
    type=LAUNCHER_MINUTES,
    default=None,
    help="Stop jobs and exit after this many minutes (fractions allowed). "
    "Default (or 0, as in Balsam 0.5): the end of the allocation it runs in, else none.",
)
@click.option(
    "--limit-nodes",
    type=NODE_COUNT,
    default=None,
    help="Use at most this many of the allocation's nodes.",
)
@click.option(
    "--offset-nodes",
    type=click.IntRange(min=0, max=MAX_NODES),
    default=0,
    help="Skip this many of the allocation's nodes first (to split it between launchers).",
)
@click.option(
    "--processing-only",
    is_flag=True,
    help="Run no job: only staging, pre- and postprocessing on this host "
    "(the launcher balsam service keeps when service.processing is set).",
)
@click.option(
    "--persistent",
    is_flag=True,
    help="Keep running when nothing is left to run (until the time limit or a signal), "
    "even with --consume-all (Balsam 0.5).",
)
@click.option(
    "--gpus-per-node",
    type=click.IntRange(min=0, max=MAX_GPUS_PER_NODE),
    default=None,
    help="GPUs of each node, for this launcher (platform.gpus_per_node; 0: detect).",
)
@click.option(
    "--num-transition-threads",
    type=click.IntRange(min=0),
    default=None,
    help="Accepted for Balsam 0.5 and ignored (no transition thread pool here).",
)
@click.option("--exit-with-pid", type=click.IntRange(min=1), default=None, hidden=True)
def launcher(
    consume_all: bool,
    wf_filter: str | None,
    job_mode: str,
    time_limit_minutes: float | None,
    limit_nodes: int | None,
    offset_nodes: int,
    processing_only: bool,
    persistent: bool,
    gpus_per_node: int | None,
    num_transition_threads: int | None,
    exit_with_pid: int | None,
) -> None:
    """Run jobs of the active workflow database on this allocation's nodes."""
    from balsam.backends.factory import open_active_backend
    from balsam.launcher import logs
    from balsam.launcher.options import JobMode, LauncherOptions, LauncherRole
    from balsam.launcher.runner import run_launcher
    from balsam.platform.nodes import local_hostname

    if not consume_all and not wf_filter and not processing_only:
        raise ValidationError("give --consume-all, --wf-filter WF, or both")
    del num_transition_threads  # Balsam 0.5's; nothing here to size with it.
    options = LauncherOptions(
        job_mode=JobMode(job_mode),
        workflows=[wf_filter] if wf_filter else [],
        consume_all=consume_all and not persistent,
        time_limit_minutes=time_limit_minutes or None,
        limit_nodes=limit_nodes,
        offset_nodes=offset_nodes,
        role=LauncherRole.PROCESSING if processing_only else LauncherRole.ALL,
        exit_with_pid=exit_with_pid,
    )
    # Not the retrying Backend: the launcher repeats failed calls on later turns of its loop.
    site, backend = open_active_backend(retry=False)
    try:
        workflows = _launcher_workflows(backend, wf_filter)
    except BaseException:
        backend.close()
        raise
    options = dataclasses.replace(options, workflows=workflows)
    if gpus_per_node is not None:
        site = _with_gpus(site, gpus_per_node)
    path = logs.configure(site.log_dir, local_hostname())
    try:
        code = run_launcher(site, backend, options)
    finally:
        backend.close()
        logs.close(path)
    # Everything is written and closed: skip the interpreter's teardown of the database
    # drivers and models (a tenth of a second, on the end of every allocation's makespan),
    # unless a profiler or coverage tracer still has to write its results.
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.getprofile() is None and sys.gettrace() is None:
        os._exit(code)
    if code:
        # Not click's Exit: in non-standalone mode click turns it into a return value.
        sys.exit(code)


def _launcher_workflows(backend: Backend, wf_filter: str | None) -> list[str]:
    """The workflows a launcher runs for ``--wf-filter`` (none given: all of them)."""
    if not wf_filter:
        return []
    workflows = select_workflows(backend, wf_filter)
    if workflows != [wf_filter]:
        click.echo(
            f"balsam: warning: no job is in workflow {wf_filter!r}; running the workflows "
            f"whose names contain it, as Balsam 0.5 did: {', '.join(workflows)}",
            err=True,
        )
    return workflows


def _with_gpus(site: Site, gpus: int) -> Site:
    """``site`` with ``platform.gpus_per_node`` set to ``gpus`` (for this launcher only)."""
    platform = site.settings.platform.model_copy(update={"gpus_per_node": gpus})
    settings = site.settings.model_copy(update={"platform": platform})
    return dataclasses.replace(site, settings=settings)


@click.command("submit-launch", cls=BalsamCommand)
@click.option(
    "-A", "--project", required=True, callback=_script_text, help="Allocation (project) to charge."
)
@click.option("-q", "--queue", required=True, callback=_script_text, help="Batch queue.")
@click.option(
    "-t", "--time-minutes", type=POSITIVE_MINUTES, required=True, help="Wall time in minutes."
)
@click.option("-n", "--nodes", type=NODE_COUNT, required=True, help="Node count.")
@click.option("--job-mode", type=JOB_MODES, default="mpi", show_default=True)
@click.option(
    "--wf-filter", metavar="WF", callback=_script_text, help="Run only jobs of workflow WF."
)
@click.option(
    "--sched-flags",
    metavar="FLAGS",
    default="",
    callback=_sched_flags,
    help="Extra arguments for the scheduler's submit command, split as a shell would.",
)
def submit_launch(
    project: str,
    queue: str,
    time_minutes: float,
    nodes: int,
    job_mode: str,
    wf_filter: str | None,
    sched_flags: tuple[str, ...],
) -> None:
    """Submit a launcher job to the site's batch scheduler (platform.scheduler).

    The site's settings must allow it (the projects and queues they list, each queue's node
    and wall-time limits); the batch job is then recorded (see 'balsam ls queues') and
    submitted.
    """
    from balsam.backends.factory import open_active_backend
    from balsam.batch_settings import launch_problem
    from balsam.config import load_site
    from balsam.platform.schedulers import LaunchRequest, get_scheduler
    from balsam.site.batchjobs import read_site_template, submit_recorded

    settings = load_site().settings
    problem = launch_problem(
        settings.projects,
        settings.queues,
        project=project,
        queue=queue,
        num_nodes=nodes,
        wall_time_minutes=time_minutes,
    )
    if problem:
        raise ValidationError(f"{problem}: see settings.yml")
    site, backend = open_active_backend()
    try:
        scheduler = get_scheduler(site.settings.platform.scheduler)
        request = LaunchRequest(
            project=project,
            queue=queue,
            wall_time_minutes=time_minutes,
            num_nodes=nodes,
            job_mode=job_mode,
            site_path=site.path,
            scripts_dir=site.scripts_dir,
            wf_filter=wf_filter,
            sched_flags=sched_flags,
            script_template=read_site_template(site),
        )
        row, submission = submit_recorded(backend, scheduler, request)
    finally:
        backend.close()
    for warning in submission.warnings:
        click.echo(f"balsam: warning: {warning}", err=True)
    click.echo(
        f"Submitted launch {submission.launch_id} to the {scheduler.name} scheduler "
        f"(batch job {row.id}, script {submission.script})"
    )


#: Commands this module adds to ``balsam``.
COMMANDS: list[click.Command] = [launcher, submit_launch]

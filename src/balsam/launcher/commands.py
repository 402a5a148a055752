"""The argv and environment of a job's commands (run, preprocess, postprocess).

The run command is the app's executable and the job's args rendered without a shell unless
the app needs one (:func:`balsam.domain.commands.render_command`). It goes through the MPI
launcher when MPI is available and the launcher runs in mpi mode, or whenever the job has more
than one rank; a multi-rank job with no MPI cannot run and says so.

A job's processes get its ``environ_vars``, ``BALSAM_JOB_ID``, ``BALSAM_DB_PATH``,
``OMP_NUM_THREADS`` (its threads per rank), the launcher's mark (``BALSAM_LAUNCHER``, see
:mod:`balsam.platform.processes`) and, when it asks for GPUs, the GPUs it was given in the
site's ``gpu_visible_env`` variable (``CUDA_VISIBLE_DEVICES`` by default).
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from balsam.config import PlatformSettings, Site
from balsam.domain import jobenv
from balsam.domain.commands import CommandError, render_command
from balsam.domain.jobenv import balsam_variables
from balsam.domain.states import JobState
from balsam.launcher import calls
from balsam.platform.containers import (
    ContainerOptions,
    ContainerRun,
    ContainerRuntime,
    container_runtime,
    gpu_flag,
)
from balsam.platform.mpi import MpiLauncher, MpiRun
from balsam.platform.processes import MARK_VARIABLE
from balsam.schemas.apps import AppOut
from balsam.schemas.jobs import JobOut


class CannotRun(Exception):
    """A job this launcher can never run here (the message says why)."""


def job_variables(
    job: JobOut, site: Site, mark: str = "", launcher_nodes: int = 1
) -> dict[str, str]:
    """What a job's processes get on top of the launcher's environment: its own variables,
    and those Balsam 0.5 set (``BALSAM_PARENT_IDS`` a JSON list, as 0.5's text of it)."""
    own = balsam_variables(
        job.job_id, str(site.path), job.parents, job.threads_per_rank, launcher_nodes
    )
    variables = {**job.environ_vars, **own}
    if mark:
        variables[MARK_VARIABLE] = mark
    return variables


def handler_variables(state: JobState | None) -> dict[str, str]:
    """What tells a postprocess it runs as the error or timeout handler (0.5's variables)."""
    return jobenv.handler_variables(state is JobState.RUN_ERROR, state is JobState.RUN_TIMEOUT)


def step_log_header(step: str, command: str, state: JobState | None) -> str:
    """The lines preprocess.log and postprocess.log open with, as Balsam 0.5 wrote them."""
    kind = "Preprocessor" if step == "preprocess" else "Postprocessor"
    header = f"# Balsam {kind}: {command}\n"
    if kind == "Postprocessor" and state in (JobState.RUN_ERROR, JobState.RUN_TIMEOUT):
        header += f"# Invoked to handle {state.value}\n"
    return header


def gpu_variables(
    job: JobOut, gpus: tuple[int, ...], variable: str, base: Mapping[str, str]
) -> dict[str, str]:
    """``{variable: ids}`` for a job that asks for GPUs, else nothing.

    ``gpus`` are indices of the node's GPUs; where the launcher itself was given a subset
    (``variable`` already set, as some batch systems do), index i is the i-th of those.
    """
    if job.gpus_per_rank <= 0:
        return {}
    visible = [g for g in base.get(variable, "").split(",") if g.strip()]
    ids = [visible[i] if i < len(visible) else str(i) for i in gpus]
    return {variable: ",".join(ids)}


def job_environment(base: Mapping[str, str], variables: Mapping[str, str]) -> dict[str, str]:
    """The launcher's environment with the job's variables on top."""
    return {**base, **variables}


def needs_mpi(job: JobOut, mpi: MpiLauncher | None, mpi_mode: bool) -> bool:
    """Whether the run goes through the MPI launcher (CannotRun if it must and cannot)."""
    ranks = job.num_nodes * job.ranks_per_node
    if mpi is None:
        if ranks > 1:
            raise CannotRun(
                f"needs {ranks} MPI ranks but no MPI launcher (mpiexec) was found on this "
                "machine: install MPI or set platform.mpi_launcher in settings.yml"
            )
        return False
    return mpi_mode or ranks > 1


@dataclass(frozen=True)
class RunCommand:
    """A job's run command, whether it goes through the MPI launcher, and the variables its
    process gets (the job's, plus what a container runtime needs to pass them in); for a
    function app's job, the call file to write beside it and the token of its outcome."""

    argv: list[str]
    through_mpi: bool
    variables: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    token: str = ""


def run_command(
    job: JobOut,
    app: AppOut,
    hosts: list[str],
    mpi: MpiLauncher | None,
    mpi_mode: bool,
    variables: Mapping[str, str],
    env: Mapping[str, str],
    cwd: Path,
    launcher_args: list[str] | None = None,
    container: ContainerRuntime | None = None,
) -> RunCommand:
    """The command that runs ``job`` on ``hosts`` (CannotRun, CommandError, OSError).

    A function app's command is the runner of :mod:`balsam.launcher.calls` (its call goes in
    ``files``); an executable app's, its executable and the job's args. An app with a
    container image has its command wrapped by ``container`` (the site's runtime) first;
    that wrapped command is what the MPI launcher starts on every rank.
    """
    through_mpi = needs_mpi(job, mpi, mpi_mode)
    if app.function:
        argv, shell = calls.function_argv(app, in_container=bool(app.container)), False
        if app.envscript:
            # Sourced by a shell first, as for any app; the call itself stays one quoted argv.
            rendered = render_command(shlex.join(argv), "", app.envscript)
            argv, shell = rendered.argv, rendered.shell
    else:
        rendered = render_command(app.executable, job.args, app.envscript or None)
        argv, shell = rendered.argv, rendered.shell
    own = dict(variables)
    if app.container:
        argv, own = in_container(app.container, argv, job, own, env, cwd, container)
    elif not shell and through_mpi:
        check_program(argv[0], env, cwd)
    files, token = {}, ""
    if app.function:
        call = calls.make_call(job, app, mpi=through_mpi)
        files, token = {calls.CALL_FILE: call.text}, call.token
    if not through_mpi:
        return RunCommand(argv, through_mpi=False, variables=own, files=files, token=token)
    assert mpi is not None
    run = MpiRun(
        argv=argv,
        hosts=hosts,
        ranks_per_node=job.ranks_per_node,
        threads_per_rank=job.threads_per_rank,
        env=own,
        mpi_flags=shlex.split(job.mpi_flags),
        cpu_bind=job.cpu_affinity,
        gpus_per_rank=job.gpus_per_rank,
        threads_per_core=job.threads_per_core,
        launcher_args=list(launcher_args or []),
    )
    return RunCommand(mpi.command(run), True, own, files, token)


def in_container(
    image: str,
    argv: list[str],
    job: JobOut,
    variables: dict[str, str],
    env: Mapping[str, str],
    cwd: Path,
    runtime: ContainerRuntime | None,
) -> tuple[list[str], dict[str, str]]:
    """``argv`` wrapped to run inside ``image``, and the variables the runtime's process gets.

    The runtime's program is looked for on the job's PATH first, so that a site without it
    fails the job with a reason of ours rather than a bare "No such file or directory"; a
    local image file that is not there fails it the same way (CannotRun).
    """
    if runtime is None:
        raise CannotRun(f"the app runs in container {image!r} but this launcher has no runtime")
    try:
        check_program(runtime.program, env, cwd)
    except OSError as exc:
        raise CannotRun(
            f"the app runs in container {image!r} but the container runtime "
            f"{runtime.program!r} (platform.container_runtime) cannot be run: {exc.strerror}"
        ) from exc
    problem = runtime.image_problem(image)
    if problem:
        raise CannotRun(problem)
    run = ContainerRun(image, argv, str(cwd), variables, gpus=job.gpus_per_rank > 0)
    wrapped = runtime.command(run)
    return wrapped.argv, {**variables, **wrapped.env}


def site_container_runtime(platform: PlatformSettings) -> ContainerRuntime:
    """The container runtime the site's settings choose, with their options."""
    options = ContainerOptions(
        binds=tuple(platform.container_binds),
        runtime_args=tuple(platform.container_runtime_args),
        args=tuple(platform.container_args),
        cleanenv=platform.container_cleanenv,
        gpu=gpu_flag(platform.container_gpu, platform.gpu_visible_env),
    )
    return container_runtime(platform.container_runtime, options)


def step_argv(command: str, app: AppOut) -> list[str]:
    """The argv of an app's preprocess or postprocess command (no args of the job)."""
    return render_command(command, "", app.envscript or None).argv


def check_program(program: str, env: Mapping[str, str], cwd: Path) -> None:
    """Raise the OS error exec would give when ``program`` cannot be run.

    Needed before wrapping a command in mpiexec, which would otherwise start and report the
    missing program in its own words, or not at all.
    """
    if "/" in program:
        path = Path(program) if os.path.isabs(program) else cwd / program
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if path.is_dir() or not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
        return
    if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def tail(path: Path, lines: int, max_bytes: int = 65536) -> str:
    """The last ``lines`` lines of a text file (empty if it is missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - max_bytes, 0))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:])


__all__ = [
    "CannotRun",
    "CommandError",
    "RunCommand",
    "check_program",
    "gpu_variables",
    "in_container",
    "job_environment",
    "job_variables",
    "needs_mpi",
    "run_command",
    "site_container_runtime",
    "step_argv",
    "tail",
]

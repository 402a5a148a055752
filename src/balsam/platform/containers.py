"""Container runtimes: wrap one job's command so that it runs inside the app's image.

Each runtime is a small adapter that turns a :class:`ContainerRun` (the image, the command,
the working directory, the job's variables, whether it asks for GPUs) into the command line
to exec and the variables its process needs (:class:`ContainerCommand`). The site's options
(:class:`ContainerOptions`: extra bind mounts, flags, ``--cleanenv``, the GPU flag) are given
to the adapter when it is made. Adapters are chosen by short name from
:data:`CONTAINER_RUNTIMES` (``platform.container_runtime``)::

    apptainer exec [--nv|--rocm] [--cleanenv] --bind WORKDIR[,BINDS] --pwd WORKDIR
                   ARGS IMAGE cmd...
    podman RUNTIME_ARGS run --rm --init --network host --volume WORKDIR:WORKDIR --workdir WORKDIR
           [--volume BIND]... [--env NAME=VALUE]... [--env RANK_VARIABLE]... [GPU devices] ARGS
           IMAGE cmd...

Only the command is wrapped: an MPI job runs as ``mpiexec ... apptainer exec IMAGE cmd``
(the hybrid model HPC centres document), so that the host's MPI launcher starts the ranks and
each rank starts its own container. Nothing here passes through a shell: the command's words
stay words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from balsam.errors import ConfigError

#: The GPU flags a container runtime knows: NVIDIA's (``--nv``), AMD's (``--rocm``), none.
GPU_FLAGS = ("nv", "rocm", "none")
#: The variables in ``platform.gpu_visible_env`` that mean AMD GPUs (for ``container_gpu: auto``).
ROCM_VISIBLE_ENVS = frozenset({"HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"})
#: Per-rank variables MPI launchers set (MPICH/Hydra, Open MPI, Slurm, PALS): podman passes
#: those that are set through to the container, so that each rank knows who it is.
RANK_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "MPI_LOCALRANKID",
    "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NTASKS",
    "PALS_RANKID",
    "PALS_LOCAL_RANKID",
)


@dataclass(frozen=True)
class ContainerOptions:
    """A site's container settings, as the adapters use them.

    ``binds`` are mounts besides the working directory (``SRC[:DST[:OPTS]]``);
    ``runtime_args`` go right after the program (before ``exec``/``run``), ``args`` right
    before the image; ``gpu`` is a resolved :data:`GPU_FLAGS` value (:func:`gpu_flag`).
    """

    binds: tuple[str, ...] = ()
    runtime_args: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    cleanenv: bool = False
    gpu: str = "nv"

    def __post_init__(self) -> None:
        if self.gpu not in GPU_FLAGS:
            raise ConfigError(f"container GPU flag {self.gpu!r} is not one of {GPU_FLAGS}")


@dataclass(frozen=True)
class ContainerRun:
    """One command to run inside ``image``, in ``workdir`` (bound in at the same path)."""

    image: str
    argv: list[str]
    workdir: str
    env: Mapping[str, str] = field(default_factory=dict)
    gpus: bool = False


@dataclass(frozen=True)
class ContainerCommand:
    """What to exec: the runtime's argv, and variables to add to its process's environment."""

    argv: list[str]
    env: dict[str, str]


class ContainerRuntime(Protocol):
    """Builds the command that runs one command inside a container image."""

    @property
    def name(self) -> str:
        """The short name (a key of :data:`CONTAINER_RUNTIMES`)."""
        ...

    @property
    def program(self) -> str:
        """The runtime's program, looked up on the job's PATH."""
        ...

    def command(self, run: ContainerRun) -> ContainerCommand:
        """The argv and extra environment that run ``run``."""
        ...

    def image_problem(self, image: str) -> str | None:
        """Why ``image`` surely cannot run, told before the run (None: let the runtime try)."""
        ...


@dataclass(frozen=True)
class ApptainerRuntime:
    """Apptainer's ``exec``::

        apptainer exec [--nv|--rocm] [--cleanenv] --bind WORKDIR[,BINDS] --pwd WORKDIR
                       ARGS IMAGE cmd...

    The job's variables reach the container as ``APPTAINERENV_NAME=value`` in the runtime's
    environment: Apptainer sets them inside even with ``--cleanenv``, and over what the
    image's own environment sets. The GPU flag only for jobs that ask for GPUs.
    """

    options: ContainerOptions = field(default_factory=ContainerOptions)
    name: str = "apptainer"
    program: str = "apptainer"

    ENV_PREFIX: ClassVar[str] = "APPTAINERENV_"

    def command(self, run: ContainerRun) -> ContainerCommand:
        """``apptainer exec ...`` (the shape is in the class docstring)."""
        opts = self.options
        argv = [self.program, *opts.runtime_args, "exec"]
        if run.gpus and opts.gpu != "none":
            argv.append(f"--{opts.gpu}")
        if opts.cleanenv:
            argv.append("--cleanenv")
        argv += ["--bind", ",".join([run.workdir, *opts.binds]), "--pwd", run.workdir]
        argv += [*opts.args, run.image, *run.argv]
        env = {f"{self.ENV_PREFIX}{key}": value for key, value in run.env.items()}
        return ContainerCommand(argv, env)

    def image_problem(self, image: str) -> str | None:
        """An absolute path (a ``.sif`` file or sandbox directory) that is not there; names
        with a scheme (``docker://``, ``oras://``, ...) are left to the runtime."""
        if "://" in image or not os.path.isabs(image) or os.path.exists(image):
            return None
        return f"container image {image} does not exist"


@dataclass(frozen=True)
class SingularityRuntime(ApptainerRuntime):
    """SingularityCE's ``exec``: Apptainer's command line, with ``SINGULARITYENV_`` variables."""

    name: str = "singularity"
    program: str = "singularity"

    ENV_PREFIX: ClassVar[str] = "SINGULARITYENV_"


#: podman's devices for a job's GPUs: NVIDIA's through CDI, AMD's as their device files.
PODMAN_GPU_DEVICES: Mapping[str, tuple[str, ...]] = {
    "nv": ("--device", "nvidia.com/gpu=all"),
    "rocm": ("--device", "/dev/kfd", "--device", "/dev/dri"),
    "none": (),
}


@dataclass(frozen=True)
class PodmanRuntime:
    """podman's ``run``, one container per command, removed when it ends::

        podman RUNTIME_ARGS run --rm --init --network host --volume W:W --workdir W
               [--volume BIND]... [--env NAME=VALUE]... [--env RANK_VARIABLE]... [GPUs]
               ARGS IMAGE cmd...

    ``--init`` makes a small init PID 1 in the container, so that the launcher's SIGTERM
    reaches the command (a PID 1 ignores signals it has no handler for); ``--network host``
    keeps the host's network (jobs reach the database and each other as on the host). The
    job's variables are given one by one (podman passes nothing of its own environment);
    the MPI rank variables are passed through by name, which podman skips when unset.
    """

    options: ContainerOptions = field(default_factory=ContainerOptions)
    name: str = "podman"
    program: str = "podman"

    def command(self, run: ContainerRun) -> ContainerCommand:
        """``podman run ...`` (the shape is in the class docstring)."""
        opts = self.options
        argv = [self.program, *opts.runtime_args, "run", "--rm", "--init", "--network", "host"]
        argv += ["--volume", f"{run.workdir}:{run.workdir}", "--workdir", run.workdir]
        for bind in opts.binds:
            argv += ["--volume", bind if ":" in bind else f"{bind}:{bind}"]
        for key, value in run.env.items():
            argv += ["--env", f"{key}={value}"]
        for key in RANK_VARIABLES:
            if key not in run.env:
                argv += ["--env", key]
        if run.gpus:
            argv += PODMAN_GPU_DEVICES[opts.gpu]
        argv += [*opts.args, run.image, *run.argv]
        return ContainerCommand(argv, {})

    def image_problem(self, image: str) -> str | None:
        """None: an image name is looked up by podman itself, which says when it is unknown."""
        return None


#: Adapters by the short name used in ``platform.container_runtime``.
CONTAINER_RUNTIMES: dict[str, type[ApptainerRuntime] | type[PodmanRuntime]] = {
    "apptainer": ApptainerRuntime,
    "singularity": SingularityRuntime,
    "podman": PodmanRuntime,
}


def gpu_flag(setting: str, gpu_visible_env: str) -> str:
    """The GPU flag ``container_gpu`` means: ``auto`` is ``rocm`` when the site hands out
    GPUs in an AMD variable (``HIP_VISIBLE_DEVICES``, ``ROCR_VISIBLE_DEVICES``), else ``nv``."""
    if setting != "auto":
        return setting
    return "rocm" if gpu_visible_env in ROCM_VISIBLE_ENVS else "nv"


def container_runtime(name: str, options: ContainerOptions | None = None) -> ContainerRuntime:
    """The adapter named ``name`` with the site's ``options`` (ConfigError if unknown)."""
    cls = CONTAINER_RUNTIMES.get(name)
    if cls is None:
        known = ", ".join(CONTAINER_RUNTIMES)
        raise ConfigError(f"platform.container_runtime {name!r} is unknown (one of: {known})")
    return cls(options=options or ContainerOptions())


__all__ = [
    "CONTAINER_RUNTIMES",
    "GPU_FLAGS",
    "RANK_VARIABLES",
    "ApptainerRuntime",
    "ContainerCommand",
    "ContainerOptions",
    "ContainerRun",
    "ContainerRuntime",
    "PodmanRuntime",
    "SingularityRuntime",
    "container_runtime",
    "gpu_flag",
]

"""MPI launch-command builders: wrap one job's argv in the site's MPI launcher.

Each builder is a small class around the launcher program's path that turns an
:class:`MpiRun` (hosts, ranks, threads, binding, GPUs, environment, flags, argv) into the
command line to exec. Every command has the same shape::

    PROGRAM launcher_args... PLACEMENT... BINDING... ENVIRONMENT... mpi_flags... argv...

where ``launcher_args`` are the site's flags for every launch (srun's ``--mpi=pmi2``, ...) and
``mpi_flags`` the job's own, last so that they can override what the builder chose.

:func:`find_mpi_launcher` picks one by the site's ``platform.mpi_launcher`` setting: a short
name of :data:`MPI_LAUNCHERS`, ``none`` for no MPI, or ``auto``, which prefers the batch
system's own launcher inside an allocation (srun, jsrun, aprun) and otherwise finds
``mpiexec`` on PATH (or beside the running Python, where ``pip install mpich`` puts it) and
asks it whether it is MPICH's Hydra or Open MPI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from balsam.errors import ConfigError, LauncherError, ValidationError

#: The values of a job's ``cpu_affinity``: no binding, one core per rank, or
#: ``threads_per_rank`` cores per rank ("depth", after aprun's ``-cc depth``).
CPU_BINDS = ("none", "core", "depth")

#: Command-line words (a builder's flags for one binding mode, ...).
Flags = tuple[str, ...]


@dataclass(frozen=True)
class MpiRun:
    """One job as an MPI launcher needs it.

    ``launcher_args`` are the site's flags for every launch, placed right after the program;
    ``mpi_flags`` are the job's own, placed right before its ``argv``.
    """

    argv: list[str]
    hosts: list[str]
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    env: dict[str, str] = field(default_factory=dict)
    mpi_flags: list[str] = field(default_factory=list)
    cpu_bind: str = "none"
    gpus_per_rank: int = 0
    threads_per_core: int = 1
    launcher_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.cpu_bind not in CPU_BINDS:
            known = ", ".join(CPU_BINDS)
            raise ValidationError(f"cpu_bind {self.cpu_bind!r} is not one of {known}")

    @property
    def total_ranks(self) -> int:
        """Ranks over all hosts."""
        return len(self.hosts) * self.ranks_per_node


class MpiLauncher(Protocol):
    """Builds the command that starts one job's ranks on its hosts."""

    @property
    def name(self) -> str:
        """The short name (a key of :data:`MPI_LAUNCHERS`)."""
        ...

    @property
    def executable(self) -> str:
        """The launcher program's path."""
        ...

    def command(self, run: MpiRun) -> list[str]:
        """The argv to exec for ``run``."""
        ...


@dataclass(frozen=True)
class LauncherBase(ABC):
    """What every builder shares: the command's shape and binding flags looked up by mode.

    A builder says where ranks go (:meth:`placement`) and how the environment reaches them
    (:meth:`environment`); :attr:`BINDINGS` gives its flags for each ``cpu_bind``, where
    ``{threads}`` stands for ``threads_per_rank``.
    """

    executable: str
    name: str

    BINDINGS: ClassVar[Mapping[str, Flags]] = {}

    def command(self, run: MpiRun) -> list[str]:
        """The argv to exec for ``run`` (the shape is in the module's docstring)."""
        return [
            self.executable,
            *run.launcher_args,
            *self.placement(run),
            *self.binding(run),
            *self.environment(run),
            *run.mpi_flags,
            *run.argv,
        ]

    @abstractmethod
    def placement(self, run: MpiRun) -> list[str]:
        """Flags for how many ranks run where, with what CPUs and GPUs."""

    @abstractmethod
    def environment(self, run: MpiRun) -> list[str]:
        """Flags that give every rank ``run.env``."""

    def binding(self, run: MpiRun) -> list[str]:
        """Flags for ``run.cpu_bind``."""
        return [part.format(threads=run.threads_per_rank) for part in self.BINDINGS[run.cpu_bind]]


def _bindings(none: Flags, core: Flags, depth: Flags | None = None) -> Mapping[str, Flags]:
    """A builder's :attr:`LauncherBase.BINDINGS`; ``depth`` binds like ``core`` unless given."""
    return {"none": none, "core": core, "depth": core if depth is None else depth}


def _each(flag: str, values: list[str]) -> list[str]:
    """``[flag, v1, flag, v2, ...]``."""
    return [part for value in values for part in (flag, value)]


def _assignments(env: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in env.items()]


@dataclass(frozen=True)
class MpichLauncher(LauncherBase):
    """MPICH's Hydra ``mpiexec`` (also Intel MPI and MVAPICH, which share its flags)::

        mpiexec -n N -ppn R -hosts h1,h2 [-bind-to core | -bind-to core:T] -genv K V ...

    ``core:T`` is Hydra's syntax for T cores per rank (``depth``); ``none`` adds no flag.
    GPUs are not assigned by Hydra: ``gpus_per_rank`` adds nothing.
    """

    executable: str = "mpiexec"
    name: str = "mpich"

    BINDINGS: ClassVar[Mapping[str, Flags]] = _bindings(
        none=(), core=("-bind-to", "core"), depth=("-bind-to", "core:{threads}")
    )

    def placement(self, run: MpiRun) -> list[str]:
        """``-n N -ppn R -hosts h1,h2``."""
        ranks = ["-n", str(run.total_ranks), "-ppn", str(run.ranks_per_node)]
        return [*ranks, "-hosts", ",".join(run.hosts)]

    def environment(self, run: MpiRun) -> list[str]:
        """``-genv K V`` for each variable."""
        return [part for key, value in run.env.items() for part in ("-genv", key, value)]


@dataclass(frozen=True)
class OpenMpiLauncher(LauncherBase):
    """Open MPI's ``mpirun``::

        mpirun -n N --map-by ppr:R:node[:PE=T] --host h1:R,h2:R --bind-to core|none -x K=V ...

    ``PE=T`` (T = threads_per_rank) only for ``depth``. ``none`` says ``--bind-to none``
    explicitly because Open MPI binds by default. ``gpus_per_rank`` adds nothing.
    """

    executable: str = "mpirun"
    name: str = "openmpi"

    BINDINGS: ClassVar[Mapping[str, Flags]] = _bindings(
        ("--bind-to", "none"), ("--bind-to", "core")
    )

    def placement(self, run: MpiRun) -> list[str]:
        """``-n N --map-by ppr:R:node[:PE=T] --host h1:R,h2:R``."""
        rpn = run.ranks_per_node
        per_node = f"ppr:{rpn}:node"
        if run.cpu_bind == "depth":
            per_node += f":PE={run.threads_per_rank}"
        hosts = ",".join(f"{host}:{rpn}" for host in run.hosts)
        return ["-n", str(run.total_ranks), "--map-by", per_node, "--host", hosts]

    def environment(self, run: MpiRun) -> list[str]:
        """``-x K=V`` for each variable."""
        return _each("-x", _assignments(run.env))


@dataclass(frozen=True)
class SrunLauncher(LauncherBase):
    """Slurm's ``srun``, one job step inside the allocation::

        srun --nodes K --ntasks N --ntasks-per-node R --cpus-per-task T --nodelist h1,h2
             --overlap [--cpu-bind=cores] [--gpus-per-task=G] --export=ALL ...

    ``--overlap`` because Balsam runs several steps in one allocation at once, and a
    serial-mode worker step may already hold the CPUs this step needs. srun passes its own
    environment to the ranks, so ``run.env`` adds no flags: the caller must run srun with the
    job's environment. ``--export=ALL`` (Slurm's default) is explicit so that a site default
    of ``NONE`` (``SLURM_EXPORT_ENV``) cannot drop it. ``core`` and ``depth`` both bind to
    cores: ``--cpus-per-task`` already gives each rank T of them. ``none`` leaves binding to
    the site's default (an explicit ``--cpu-bind=none`` makes srun complain on clusters built
    without a task-affinity plugin, into every job's output).
    """

    executable: str = "srun"
    name: str = "srun"

    BINDINGS: ClassVar[Mapping[str, Flags]] = _bindings((), ("--cpu-bind=cores",))

    def placement(self, run: MpiRun) -> list[str]:
        """Node, task and CPU counts, the node list, ``--overlap`` and GPUs per task."""
        argv = ["--nodes", str(len(run.hosts)), "--ntasks", str(run.total_ranks)]
        argv += ["--ntasks-per-node", str(run.ranks_per_node)]
        argv += ["--cpus-per-task", str(run.threads_per_rank)]
        argv += ["--nodelist", ",".join(run.hosts), "--overlap"]
        if run.gpus_per_rank > 0:
            argv.append(f"--gpus-per-task={run.gpus_per_rank}")
        return argv

    def environment(self, run: MpiRun) -> list[str]:
        """``--export=ALL`` only (see the class docstring)."""
        return ["--export=ALL"]


def cray_node_id(host: str) -> int:
    """The numeric id aprun's ``-L`` wants from a Cray hostname (``nid00012`` -> 12).

    The first run of digits counts, so that a domain or interface suffix
    (``nid00012.hsn``, ``nid00012-hsn0``) does not change it.
    """
    digits = re.search(r"\d+", host)
    if digits is None:
        raise LauncherError(f"aprun needs Cray node ids, but host {host!r} has no digits")
    return int(digits.group())


@dataclass(frozen=True)
class AprunLauncher(LauncherBase):
    """Cray ALPS ``aprun``::

        aprun -n N -N R -d T -j threads_per_core -L 12,13 -cc depth|none -e K=V ...

    The node list holds the numeric ids of the hosts (:func:`cray_node_id`). ``core`` and
    ``depth`` both use ``-cc depth``: with ``-d T`` each rank is bound to its T CPUs.
    ``gpus_per_rank`` adds nothing.
    """

    executable: str = "aprun"
    name: str = "aprun"

    BINDINGS: ClassVar[Mapping[str, Flags]] = _bindings(("-cc", "none"), ("-cc", "depth"))

    def placement(self, run: MpiRun) -> list[str]:
        """``-n N -N R -d T -j threads_per_core -L ids``."""
        nodes = ",".join(str(cray_node_id(host)) for host in run.hosts)
        argv = ["-n", str(run.total_ranks), "-N", str(run.ranks_per_node)]
        argv += ["-d", str(run.threads_per_rank), "-j", str(run.threads_per_core)]
        return [*argv, "-L", nodes]

    def environment(self, run: MpiRun) -> list[str]:
        """``-e K=V`` for each variable."""
        return _each("-e", _assignments(run.env))


@dataclass(frozen=True)
class JsrunLauncher(LauncherBase):
    """IBM LSF's ``jsrun``, one resource set per rank::

        jsrun -n N -a 1 -c T -g G -r R -b packed:T|none -E K=V ...

    N is the total number of ranks (= resource sets), R resource sets per host, T CPUs
    (threads_per_rank) and G GPUs per rank. jsrun takes no host list: it places resource
    sets itself on the allocation's free hosts, so ``run.hosts`` only counts N.
    """

    executable: str = "jsrun"
    name: str = "jsrun"

    BINDINGS: ClassVar[Mapping[str, Flags]] = _bindings(("-b", "none"), ("-b", "packed:{threads}"))

    def placement(self, run: MpiRun) -> list[str]:
        """``-n N -a 1 -c T -g G -r R``."""
        argv = ["-n", str(run.total_ranks), "-a", "1", "-c", str(run.threads_per_rank)]
        return [*argv, "-g", str(run.gpus_per_rank), "-r", str(run.ranks_per_node)]

    def environment(self, run: MpiRun) -> list[str]:
        """``-E K=V`` for each variable."""
        return _each("-E", _assignments(run.env))


#: Builders by the short name used in ``platform.mpi_launcher``, with their default program.
MPI_LAUNCHERS: dict[str, tuple[type[LauncherBase], str]] = {
    "mpich": (MpichLauncher, "mpiexec"),
    "openmpi": (OpenMpiLauncher, "mpirun"),
    "srun": (SrunLauncher, "srun"),
    "aprun": (AprunLauncher, "aprun"),
    "jsrun": (JsrunLauncher, "jsrun"),
}

#: For ``auto``, in order: a batch system's launcher, used when its program is on the path
#: and one of these variables says we are inside one of its jobs.
AUTO_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("srun", ("SLURM_JOB_ID",)),
    ("jsrun", ("LSB_JOBID",)),
    ("aprun", ("COBALT_JOBID", "PBS_JOBID")),
)


def search_path(environ: Mapping[str, str] | None = None) -> str:
    """PATH plus the running Python's bin directory (where a venv's MPI wheel lives)."""
    env = os.environ if environ is None else environ
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    here = str(Path(sys.executable).parent)
    return os.pathsep.join([*parts, here] if here not in parts else parts)


def detect_flavor(executable: str) -> str:
    """``openmpi`` or ``mpich``, from what ``executable --version`` prints."""
    try:
        out = subprocess.run(
            [executable, "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "mpich"
    text = out.stdout + out.stderr
    return "openmpi" if "Open MPI" in text or "OpenRTE" in text else "mpich"


def find_mpi_launcher(
    name: str = "auto",
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> MpiLauncher | None:
    """The MPI launcher named by the settings, or None when there is no MPI.

    ``path`` defaults to :func:`search_path` of ``environ``, which defaults to
    ``os.environ``. ``auto`` follows :data:`AUTO_RULES`, then takes ``mpiexec`` as MPICH or
    Open MPI by what it prints (:func:`detect_flavor`), and returns None when there is no
    ``mpiexec``. A launcher named explicitly whose program is missing is a
    :class:`LauncherError`; an unknown name a :class:`ConfigError`.
    """
    env = os.environ if environ is None else environ
    where = path if path is not None else search_path(env)
    if name == "none":
        return None
    if name == "auto":
        return _auto(where, env)
    if name not in MPI_LAUNCHERS:
        known = ", ".join(["auto", "none", *MPI_LAUNCHERS])
        raise ConfigError(f"platform.mpi_launcher {name!r} is unknown (one of: {known})")
    found = _build(name, where)
    if found is None:
        program = MPI_LAUNCHERS[name][1]
        raise LauncherError(f"platform.mpi_launcher is {name!r} but {program} is not on PATH")
    return found


def _auto(where: str, env: Mapping[str, str]) -> MpiLauncher | None:
    for name, markers in AUTO_RULES:
        found = _build(name, where) if any(m in env for m in markers) else None
        if found is not None:
            return found
    mpiexec = shutil.which("mpiexec", path=where)
    if mpiexec is None:
        return None
    return _build(detect_flavor(mpiexec), where, mpiexec)


def _build(name: str, where: str, program: str | None = None) -> LauncherBase | None:
    """Builder ``name`` around ``program``, by default its own program found on ``where``."""
    cls, default = MPI_LAUNCHERS[name]
    found = program or shutil.which(default, path=where)
    return None if found is None else cls(executable=found, name=name)

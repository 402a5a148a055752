"""MPI launch-command builders: wrap one job's argv in the site's MPI launcher.

Each builder is a small class around the launcher program's path that turns an
:class:`MpiRun` (hosts, ranks, environment, flags, argv) into the command line to exec.
:func:`find_mpi_launcher` picks one by the site's ``platform.mpi_launcher`` setting:
``auto`` finds ``mpiexec`` on PATH (or beside the running Python, where ``pip install mpich``
puts it) and asks it whether it is MPICH's Hydra or Open MPI; ``none`` means no MPI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from balsam.errors import ConfigError, LauncherError


@dataclass(frozen=True)
class MpiRun:
    """One job as an MPI launcher needs it."""

    argv: list[str]
    hosts: list[str]
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    env: dict[str, str] = field(default_factory=dict)
    mpi_flags: list[str] = field(default_factory=list)

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
class MpichLauncher:
    """MPICH's Hydra ``mpiexec`` (also Intel MPI and MVAPICH, which share its flags)."""

    executable: str = "mpiexec"
    name: str = "mpich"

    def command(self, run: MpiRun) -> list[str]:
        """``mpiexec -n N -ppn R -hosts h1,h2 --env K V ... mpi_flags... argv``."""
        argv = [self.executable, "-n", str(run.total_ranks), "-ppn", str(run.ranks_per_node)]
        argv += ["-hosts", ",".join(run.hosts)]
        for key, value in run.env.items():
            argv += ["--env", key, value]
        return argv + run.mpi_flags + run.argv


@dataclass(frozen=True)
class OpenMpiLauncher:
    """Open MPI's ``mpirun``: hosts with slot counts, ranks placed per node, ``-x`` env."""

    executable: str = "mpirun"
    name: str = "openmpi"

    def command(self, run: MpiRun) -> list[str]:
        """``mpirun -n N --map-by ppr:R:node --host h1:R,h2:R -x K=V ... mpi_flags... argv``."""
        rpn = run.ranks_per_node
        argv = [self.executable, "-n", str(run.total_ranks), "--map-by", f"ppr:{rpn}:node"]
        argv += ["--host", ",".join(f"{host}:{rpn}" for host in run.hosts)]
        for key, value in run.env.items():
            argv += ["-x", f"{key}={value}"]
        return argv + run.mpi_flags + run.argv


#: Builders by the short name used in ``platform.mpi_launcher``, with their default program.
MPI_LAUNCHERS: dict[str, tuple[type[MpichLauncher] | type[OpenMpiLauncher], str]] = {
    "mpich": (MpichLauncher, "mpiexec"),
    "openmpi": (OpenMpiLauncher, "mpirun"),
}


def search_path(environ: dict[str, str] | None = None) -> str:
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


def find_mpi_launcher(name: str = "auto", path: str | None = None) -> MpiLauncher | None:
    """The MPI launcher named by the settings, or None when there is no MPI.

    ``auto`` returns None when no ``mpiexec`` is found; a launcher named explicitly whose
    program is missing is a :class:`LauncherError`, an unknown name a :class:`ConfigError`.
    """
    where = path if path is not None else search_path()
    if name == "none":
        return None
    if name == "auto":
        found = shutil.which("mpiexec", path=where)
        if found is None:
            return None
        cls, _ = MPI_LAUNCHERS[detect_flavor(found)]
        return cls(executable=found)
    if name not in MPI_LAUNCHERS:
        known = ", ".join(["auto", "none", *MPI_LAUNCHERS])
        raise ConfigError(f"platform.mpi_launcher {name!r} is unknown (one of: {known})")
    cls, program = MPI_LAUNCHERS[name]
    found = shutil.which(program, path=where)
    if found is None:
        raise LauncherError(f"platform.mpi_launcher is {name!r} but {program} is not on PATH")
    return cls(executable=found)

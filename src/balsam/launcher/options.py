"""What a user asked a launcher to do (``balsam launcher`` options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class JobMode(StrEnum):
    """How the launcher runs jobs."""

    SERIAL = "serial"
    """Single-node jobs packed on the nodes, node_packing_count per node."""
    MPI = "mpi"
    """Each job takes whole nodes and runs through the MPI launcher."""


@dataclass(frozen=True)
class LauncherOptions:
    """The launcher's run options."""

    job_mode: JobMode = JobMode.SERIAL
    workflows: list[str] = field(default_factory=list)
    consume_all: bool = False
    time_limit_minutes: float | None = None

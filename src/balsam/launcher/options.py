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
    #: None: the allocation's own end (where the batch system tells), else no limit.
    time_limit_minutes: float | None = None
    #: Use at most this many of the allocation's nodes (None: all) ...
    limit_nodes: int | None = None
    #: ... starting with this one (0-based), so that launchers can split one allocation.
    offset_nodes: int = 0

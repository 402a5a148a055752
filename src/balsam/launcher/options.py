"""What a user asked a launcher to do (``balsam launcher`` options).

:class:`LauncherOptions` refuses what the launcher cannot act on, whoever builds it (the CLI,
a script, a test): a time limit that is not a finite number of minutes above 0 (``nan``
compares false with every bound, so a launcher given it stopped at once having run nothing),
and node counts out of range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from balsam.errors import ValidationError
from balsam.platform.schedulers.base import MAX_NODES
from balsam.platform.schedulers.base import MAX_WALL_TIME_MINUTES as MAX_TIME_LIMIT_MINUTES


class JobMode(StrEnum):
    """How the launcher runs jobs."""

    SERIAL = "serial"
    """Single-node jobs packed on the nodes, node_packing_count per node."""
    MPI = "mpi"
    """Each job takes whole nodes and runs through the MPI launcher."""


class LauncherRole(StrEnum):
    """Which steps of a job a launcher takes."""

    ALL = "all"
    """Every step: stage-in, preprocess, the run, postprocess and handlers, stage-out. With
    ``service.processing`` set and a service alive, only the runs (the service does the rest)."""
    PROCESSING = "processing"
    """Every step but the run, on this host: the launcher ``balsam service`` keeps when
    ``service.processing`` is set. Jobs ready to run are handed to the compute launchers."""


@dataclass(frozen=True)
class LauncherOptions:
    """The launcher's run options (ValidationError when out of range)."""

    job_mode: JobMode = JobMode.SERIAL
    workflows: list[str] = field(default_factory=list)
    consume_all: bool = False
    #: None: the allocation's own end (where the batch system tells), else no limit.
    time_limit_minutes: float | None = None
    #: Use at most this many of the allocation's nodes (None: all) ...
    limit_nodes: int | None = None
    #: ... starting with this one (0-based), so that launchers can split one allocation.
    offset_nodes: int = 0
    role: LauncherRole = LauncherRole.ALL
    #: Stop when the process of this id is gone (a service's processing launcher).
    exit_with_pid: int | None = None

    def __post_init__(self) -> None:
        minutes = self.time_limit_minutes
        if minutes is not None and not (
            math.isfinite(minutes) and 0 < minutes <= MAX_TIME_LIMIT_MINUTES
        ):
            raise ValidationError(
                f"time_limit_minutes must be above 0 and at most {MAX_TIME_LIMIT_MINUTES:g} "
                f"(got {minutes!r})"
            )
        if self.limit_nodes is not None and not 1 <= self.limit_nodes <= MAX_NODES:
            raise ValidationError(f"limit_nodes must be 1 to {MAX_NODES} (got {self.limit_nodes})")
        if not 0 <= self.offset_nodes <= MAX_NODES:
            raise ValidationError(
                f"offset_nodes must be 0 to {MAX_NODES} (got {self.offset_nodes})"
            )

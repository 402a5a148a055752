"""Batch schedulers, chosen by the short name in ``platform.scheduler``.

``local`` (the launcher runs on this host), ``slurm`` (sbatch), ``pbs`` (PBS Professional and
OpenPBS: qsub), ``lsf`` (IBM Spectrum LSF: bsub), ``cobalt`` (Cobalt: qsub) and ``flux``
(flux batch). Each adapter module says what it asks the batch system for, how it reads the
answers, and whether it can tell free nodes (``backfill``: Slurm, PBS and Flux can; LSF and
Cobalt report none). What they share (running a command, the launcher's safety margin) is in
:mod:`balsam.platform.schedulers.commands`.
"""

from __future__ import annotations

from collections.abc import Callable

from balsam.errors import ConfigError
from balsam.platform.schedulers.base import BatchState, LaunchRequest, Scheduler, Submission
from balsam.platform.schedulers.cobalt import CobaltScheduler
from balsam.platform.schedulers.flux import FluxScheduler
from balsam.platform.schedulers.local import LocalScheduler
from balsam.platform.schedulers.lsf import LsfScheduler
from balsam.platform.schedulers.pbs import PbsScheduler
from balsam.platform.schedulers.slurm import SlurmScheduler

#: Scheduler adapters by short name.
SCHEDULERS: dict[str, Callable[[], Scheduler]] = {
    "local": LocalScheduler,
    "slurm": SlurmScheduler,
    "pbs": PbsScheduler,
    "lsf": LsfScheduler,
    "cobalt": CobaltScheduler,
    "flux": FluxScheduler,
}


def get_scheduler(name: str) -> Scheduler:
    """The scheduler adapter called ``name`` (ConfigError if unknown)."""
    try:
        factory = SCHEDULERS[name]
    except KeyError:
        known = ", ".join(sorted(SCHEDULERS))
        raise ConfigError(f"platform.scheduler {name!r} is unknown (one of: {known})") from None
    return factory()


__all__ = [
    "SCHEDULERS",
    "BatchState",
    "LaunchRequest",
    "Scheduler",
    "Submission",
    "get_scheduler",
]

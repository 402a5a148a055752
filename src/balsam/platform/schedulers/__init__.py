"""Batch schedulers, chosen by the short name in ``platform.scheduler``.

``local`` (the launcher runs on this host) and ``slurm`` (sbatch); PBS, Cobalt, LSF and Flux
adapters are to come.
"""

from __future__ import annotations

from collections.abc import Callable

from balsam.errors import ConfigError
from balsam.platform.schedulers.base import BatchState, LaunchRequest, Scheduler, Submission
from balsam.platform.schedulers.local import LocalScheduler
from balsam.platform.schedulers.slurm import SlurmScheduler

#: Scheduler adapters by short name.
SCHEDULERS: dict[str, Callable[[], Scheduler]] = {"local": LocalScheduler, "slurm": SlurmScheduler}


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

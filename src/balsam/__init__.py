"""Balsam: run large campaigns of unmodified application runs on HPC batch allocations.

The public names are loaded on first use, so that ``import balsam`` (which every process of
Balsam pays, down to the small worker started on each node of an allocation) costs nothing.
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing is a tenth of a worker's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from balsam.domain.states import JobState
    from balsam.errors import BalsamError

__version__ = "0.6.0"

__all__ = ["BalsamError", "JobState", "__version__", "setup"]


def setup() -> None:
    """Balsam 0.5's ``balsam.setup()`` (Django's start-up): nothing to do here, kept so that
    0.5 scripts calling it run unchanged."""


def __getattr__(name: str) -> object:
    if name == "JobState":
        from balsam.domain.states import JobState

        return JobState
    if name == "BalsamError":
        from balsam.errors import BalsamError

        return BalsamError
    raise AttributeError(f"module 'balsam' has no attribute {name!r}")

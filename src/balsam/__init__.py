"""Balsam: run large campaigns of unmodified application runs on HPC batch allocations."""

from __future__ import annotations

from balsam.domain.states import JobState
from balsam.errors import BalsamError

__version__ = "0.6.0"

__all__ = ["BalsamError", "JobState", "__version__"]

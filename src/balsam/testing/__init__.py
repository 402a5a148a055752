"""Fakes shipped with Balsam for tests of its callers.

:class:`MemoryBackend` is the whole Backend protocol in memory; the contract suite
(tests/contract) runs on it as on SQLite and PostgreSQL. :class:`MemoryScheduler` is a batch
scheduler in memory; the scheduler contract suite runs on it as on the real adapters.
"""

from __future__ import annotations

from balsam.testing.memory import MemoryBackend
from balsam.testing.scheduler import MemoryScheduler

__all__ = ["MemoryBackend", "MemoryScheduler"]

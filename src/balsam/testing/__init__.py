"""Fakes shipped with Balsam for tests of its callers.

:class:`MemoryBackend` is the whole Backend protocol in memory; the contract suite
(tests/contract) runs on it as on SQLite and PostgreSQL.
"""

from __future__ import annotations

from balsam.testing.memory import MemoryBackend

__all__ = ["MemoryBackend"]

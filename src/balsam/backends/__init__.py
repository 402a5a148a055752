"""The Backend protocol that every caller uses, and its implementations."""

from balsam.backends.base import Backend

__all__ = ["Backend"]

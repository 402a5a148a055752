"""Exponential backoff for calls that failed transiently, without sleeping.

The launcher's loop never blocks on a retry: a part whose call failed asks its :class:`Backoff`
when to try again and the loop wakes then. Each failure doubles the wait (from ``first`` up to
``longest``), with jitter so that many launchers that lost the database at once do not come
back in step; a success resets it.
"""

from __future__ import annotations

import random


class Backoff:
    """When to try a failed call again."""

    def __init__(self, first: float = 0.2, longest: float = 5.0) -> None:
        self.first = first
        self.longest = longest
        self.failures = 0
        self.next_at = 0.0

    def failed(self, now: float) -> float:
        """Count a failure at ``now``; returns the wait before the next try."""
        self.failures += 1
        wait: float = min(self.longest, self.first * 2.0 ** (self.failures - 1))
        wait *= random.uniform(0.75, 1.0)
        self.next_at = now + wait
        return wait

    def reset(self) -> None:
        """The call succeeded: the next failure waits ``first`` again."""
        self.failures = 0
        self.next_at = 0.0

    def ready(self, now: float) -> bool:
        """Whether a retry is due."""
        return now >= self.next_at

"""Running figures the launcher sizes its claims and its run queues by."""

from __future__ import annotations

from collections import deque


class RateMeter:
    """Events per second over the last ``window`` events."""

    def __init__(self, window: int = 256) -> None:
        self.times: deque[float] = deque(maxlen=window)

    def tick(self, now: float) -> None:
        """Count one event at ``now``."""
        self.times.append(now)

    def rate(self) -> float:
        """Recent events per second (0 with fewer than two)."""
        if len(self.times) < 2:
            return 0.0
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else float(len(self.times))


class RecentMean:
    """The mean of the last ``window`` values."""

    def __init__(self, window: int = 64) -> None:
        self.values: deque[float] = deque(maxlen=window)

    def add(self, value: float) -> None:
        """Count one value."""
        self.values.append(value)

    def mean(self) -> float | None:
        """The mean, or None before the first value."""
        return sum(self.values) / len(self.values) if self.values else None

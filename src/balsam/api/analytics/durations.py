"""Count, mean, median and 90th percentile of many durations, in bounded memory.

Up to :data:`EXACT_LIMIT` values are kept as they are and the statistics are exact (the
median of an even count is the mean of the middle two; percentiles interpolate linearly, as
``numpy.percentile`` does). Past that the values go into logarithmic buckets 1% wide (a
DDSketch): mean, min and max stay exact, the quantiles are within 1% of the true value.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass

#: How many values are kept exactly before the buckets take over.
EXACT_LIMIT = 10_000
#: Bucket growth: a value is reported within (GAMMA - 1) / (GAMMA + 1) ~ 1% of itself.
GAMMA = 1.02
#: Durations below this (seconds; fast-forwarded steps) all count as zero.
ZERO_SECONDS = 1e-3


@dataclass(frozen=True, slots=True)
class DurationStats:
    """Summary statistics of a set of durations, in seconds."""

    count: int
    total: float
    mean: float
    median: float
    p90: float
    minimum: float
    maximum: float


class Durations:
    """An accumulator of durations (seconds) that answers :class:`DurationStats`."""

    def __init__(self, exact_limit: int = EXACT_LIMIT) -> None:
        """``exact_limit``: how many values to keep before switching to buckets."""
        self._exact_limit = exact_limit
        self._values: list[float] | None = []
        self._buckets: Counter[int] = Counter()
        self._zeros = 0
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, seconds: float) -> None:
        """Add one duration (a negative one, from clocks that disagree, counts as 0)."""
        value = max(0.0, seconds)
        self.count += 1
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        if self._values is not None:
            self._values.append(value)
            if len(self._values) > self._exact_limit:
                for v in self._values:
                    self._bucket(v)
                self._values = None
        else:
            self._bucket(value)

    def stats(self) -> DurationStats | None:
        """The statistics so far (None before any value)."""
        if not self.count:
            return None
        if self._values is not None:
            median = statistics.median(self._values)
            p90 = _percentile(sorted(self._values), 0.9)
        else:
            median, p90 = self._quantile(0.5), self._quantile(0.9)
        return DurationStats(
            self.count, self.total, self.total / self.count, median, p90, self.minimum, self.maximum
        )

    def _bucket(self, value: float) -> None:
        if value < ZERO_SECONDS:
            self._zeros += 1
        else:
            self._buckets[math.ceil(math.log(value, GAMMA))] += 1

    def _quantile(self, q: float) -> float:
        rank = q * (self.count - 1)
        seen = self._zeros
        if rank < seen:
            return 0.0
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if rank < seen:
                # The bucket's middle in relative terms: within 1% of every value in it.
                estimate = 2 * GAMMA**key / (GAMMA + 1)
                return min(max(estimate, self.minimum), self.maximum)
        return self.maximum


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if len(ordered) == 1:
        return ordered[0]
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

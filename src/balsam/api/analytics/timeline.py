"""Per-interval sums and time averages in bounded memory, fed in any order.

The event log is read one page of jobs at a time (by job id, not by time), so the campaign's
span is known only at the end. A :class:`Timeline` keeps bins aligned to multiples of their
width since the epoch and, whenever more than ``max_bins`` would be needed, widens them to the
next of :data:`NICE_WIDTHS` (each a whole multiple of the one before, so bins merge exactly).
Memory is ``max_bins`` per series whatever the number of events.

Two kinds of series:

* counts (jobs finished, errors): a number per bin;
* levels, step functions such as "jobs running" or "nodes busy", fed as changes
  (``+w`` when a run starts, ``-w`` when it ends). For each bin the exact integral of the
  level over the bin is kept in two numbers: ``D``, the sum of the changes in the bin, and
  ``P``, the sum of ``change * (bin end - time of change)``. The integral over bin ``k`` is
  ``level at its start * width + P[k]``, with the level at its start the sum of ``D`` over
  the bins before. Merging ``m`` bins into one keeps this exact:
  ``P' = sum(P[i] + (m - 1 - i) * width * D[i])``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

#: Bin widths in seconds, each a whole multiple of the one before (0.1 s up to a week).
NICE_WIDTHS: tuple[float, ...] = (
    0.1,
    0.5,
    1,
    5,
    10,
    30,
    60,
    300,
    600,
    1800,
    3600,
    7200,
    21600,
    43200,
    86400,
    604800,
)
#: Default number of bins a timeline may hold before it widens them.
MAX_BINS = 120


@dataclass(frozen=True, slots=True)
class Bin:
    """One interval ``[start, end)`` (epoch seconds) with its counts and time averages."""

    start: float
    end: float
    #: Seconds of the bin inside the report's window (the first and last bins may be partial).
    covered: float
    counts: dict[str, float]
    #: The time average of each level over the covered part.
    averages: dict[str, float]
    #: The integral of each level over the bin (level x seconds).
    integrals: dict[str, float]


class Timeline:
    """Counts and step-function integrals per bin, over bins that widen as the span grows."""

    def __init__(
        self,
        counts: tuple[str, ...],
        levels: tuple[str, ...],
        max_bins: int = MAX_BINS,
        width: float | None = None,
    ) -> None:
        """``width``: a fixed bin width in seconds (never widened; ValueError once more than
        ``max_bins`` are needed). Without it, bins start at 0.1 s and widen by themselves."""
        self._fixed = width is not None
        self.width: float = width if width is not None else NICE_WIDTHS[0]
        self.max_bins = max_bins
        self._counts: dict[str, defaultdict[int, float]] = {n: defaultdict(float) for n in counts}
        self._delta: dict[str, defaultdict[int, float]] = {n: defaultdict(float) for n in levels}
        self._partial: dict[str, defaultdict[int, float]] = {n: defaultdict(float) for n in levels}
        self._lo: int | None = None
        self._hi: int | None = None

    def count(self, name: str, when: float, n: float = 1) -> None:
        """Add ``n`` to series ``name`` at time ``when``."""
        self._counts[name][self._key(when)] += n

    def change(self, name: str, when: float, delta: float) -> None:
        """The level ``name`` changes by ``delta`` at time ``when``."""
        key = self._key(when)
        self._delta[name][key] += delta
        self._partial[name][key] += delta * ((key + 1) * self.width - when)

    def interval(self, name: str, start: float, end: float, weight: float = 1) -> None:
        """The level ``name`` is ``weight`` higher from ``start`` to ``end``."""
        self.change(name, start, weight)
        self.change(name, max(start, end), -weight)

    def bins(self, start: float, end: float) -> list[Bin]:
        """Every bin from the one holding ``start`` to the one holding ``end``, dense."""
        if end < start:
            return []
        # Seen first (it may widen the bins), then read at the final width.
        self._key(start)
        self._key(end)
        lo, hi = math.floor(start / self.width), math.floor(end / self.width)
        levels = {name: 0.0 for name in self._delta}
        found = []
        for key in range(lo, hi + 1):
            b0, b1 = key * self.width, (key + 1) * self.width
            covered = max(0.0, min(b1, end) - max(b0, start))
            integrals = {
                name: levels[name] * self.width + self._partial[name].get(key, 0.0)
                for name in self._delta
            }
            for name in self._delta:
                levels[name] += self._delta[name].get(key, 0.0)
            averages = {n: (v / covered if covered > 0 else 0.0) for n, v in integrals.items()}
            counts = {name: series.get(key, 0.0) for name, series in self._counts.items()}
            found.append(Bin(b0, b1, covered, counts, averages, integrals))
        return found

    def _key(self, when: float) -> int:
        key = math.floor(when / self.width)
        lo = key if self._lo is None else min(self._lo, key)
        hi = key if self._hi is None else max(self._hi, key)
        while hi - lo + 1 > self.max_bins:
            factor = self._widen()
            key, lo, hi = key // factor, lo // factor, hi // factor
        self._lo, self._hi = lo, hi
        return key

    def _widen(self) -> int:
        """Merge bins into the next nice width; returns how many old bins make a new one."""
        wider = next((w for w in NICE_WIDTHS if w > self.width * 1.0001), None)
        if self._fixed or wider is None:
            raise ValueError(
                f"bins of {self.width:g} s would be more than {self.max_bins} over this span"
            )
        factor = round(wider / self.width)
        for series in self._counts.values():
            merged: defaultdict[int, float] = defaultdict(float)
            for key, value in series.items():
                merged[key // factor] += value
            series.clear()
            series.update(merged)
        for name, deltas in self._delta.items():
            partial = self._partial[name]
            new_delta: defaultdict[int, float] = defaultdict(float)
            new_partial: defaultdict[int, float] = defaultdict(float)
            for key in set(deltas) | set(partial):
                j, i = divmod(key, factor)
                d = deltas.get(key, 0.0)
                new_delta[j] += d
                new_partial[j] += partial.get(key, 0.0) + (factor - 1 - i) * self.width * d
            deltas.clear()
            deltas.update(new_delta)
            partial.clear()
            partial.update(new_partial)
        self.width = wider
        if self._lo is not None and self._hi is not None:
            self._lo, self._hi = self._lo // factor, self._hi // factor
        return factor

"""Runs ended by a signal the launcher did not send, held a moment before they count as errors.

When a batch system ends an allocation (``scancel``, a pre-emption, a node drained) it signals
every process in it at once: the runs as well as the launcher. A run may die of that SIGTERM
and be reported a moment before the launcher's own signal handler runs, and it would then be
recorded RUN_ERROR, costing the job a retry (or failing it) for something that was not its
fault. So a run killed by a termination signal is held for ``outside_signal_wait_seconds``:
if the launcher is stopped meanwhile, the run is a RUN_TIMEOUT like every other run the
stop ended; otherwise it is the job's error after all.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from balsam.launcher.children import Child

#: Signals a batch system or an operator ends processes with (their numbers).
TERMINATION_SIGNALS = frozenset(
    int(s) for s in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP)
)


def by_termination_signal(code: int) -> bool:
    """True when exit ``code`` says a termination signal ended the command: ``-N`` when the
    command itself died of it, ``128 + N`` when a shell wrapping it reported that death."""
    return (-code if code < 0 else code - 128) in TERMINATION_SIGNALS


@dataclass(frozen=True)
class HeldExit:
    """The end of one run, waiting to learn whether the launcher is being stopped too."""

    child: Child
    code: int
    decide_at: float


class SignalledRuns:
    """The held ends of runs, by job id (see the module docstring)."""

    def __init__(self, wait_seconds: float) -> None:
        self.wait_seconds = wait_seconds
        self._held: dict[str, HeldExit] = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, job_id: str, child: Child, code: int, now: float) -> bool:
        """Hold the run's end if a termination signal caused it; False when it did not."""
        # Called at every run's end: a clean exit costs one comparison.
        if code == 0 or self.wait_seconds <= 0 or not by_termination_signal(code):
            return False
        self._held[job_id] = HeldExit(child, code, now + self.wait_seconds)
        return True

    def take(self, job_id: str) -> HeldExit:
        """Stop holding the job's run end and return it."""
        return self._held.pop(job_id)

    def due(self, now: float) -> list[str]:
        """The jobs whose wait is over: their runs' ends are the jobs' own errors."""
        return [job_id for job_id, held in self._held.items() if held.decide_at <= now]

    def next_at(self) -> float | None:
        """When the next wait is over, if any run end is held."""
        return min((h.decide_at for h in self._held.values()), default=None)

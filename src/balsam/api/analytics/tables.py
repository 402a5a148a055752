"""The tables of a campaign report: rows as small dataclasses, a :class:`Table` around them.

Times are aware UTC datetimes, durations seconds, nodes whole-node equivalents (a job packed
``node_packing_count`` to a node counts ``num_nodes / node_packing_count``). See docs/report.md.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class Table(Generic[R]):
    """Rows of one kind, with the table's name and a one-line description."""

    name: str
    description: str
    items: tuple[R, ...]

    def rows(self) -> list[R]:
        """The rows, as dataclass instances."""
        return list(self.items)

    def columns(self) -> list[str]:
        """The column names (the row dataclass's fields; empty for a table without rows)."""
        return [f.name for f in dataclasses.fields(self.items[0])] if self.items else []  # type: ignore[arg-type]

    def as_dicts(self) -> list[dict[str, Any]]:
        """The rows as dicts of column to value."""
        return [dataclasses.asdict(row) for row in self.items]  # type: ignore[call-overload]

    def to_dataframe(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (ImportError naming the fix without pandas)."""
        try:
            pandas = importlib.import_module("pandas")
        except ImportError:
            raise ImportError(
                f"Table.to_dataframe needs pandas: pip install pandas (or use {self.name}.rows())"
            ) from None
        return pandas.DataFrame(self.as_dicts(), columns=self.columns() or None)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class ThroughputRow:
    """What ended in ``[start, end)``: jobs finished for good, run errors, timeouts, failures."""

    start: datetime
    end: datetime
    #: Jobs that entered JOB_FINISHED.
    finished: int
    #: Jobs finished from the window's start up to ``end``.
    cumulative_finished: int
    run_errors: int
    run_timeouts: int
    #: Jobs that entered FAILED (no retries left, or a parent failed).
    failed: int


@dataclass(frozen=True, slots=True)
class UtilizationRow:
    """Time averages over ``[start, end)``: runs going, nodes they used, nodes held."""

    start: datetime
    end: datetime
    #: Average number of jobs in RUNNING.
    running_jobs: float
    #: Average nodes used by running jobs (each job: num_nodes / node_packing_count).
    busy_nodes: float
    #: Average nodes held by batch jobs recorded running (or the fixed ``nodes`` given).
    held_nodes: float
    #: busy_nodes / held_nodes; None where no batch job held nodes.
    utilization: float | None


@dataclass(frozen=True, slots=True)
class StateTimeRow:
    """How long jobs stayed in one state (stays that ended; seconds)."""

    state: str
    count: int
    mean_seconds: float
    median_seconds: float
    p90_seconds: float
    total_seconds: float


@dataclass(frozen=True, slots=True)
class AppErrorRow:
    """Run errors, timeouts and failures of one app's jobs (entries into those states)."""

    app: str
    run_errors: int
    run_timeouts: int
    failed: int


@dataclass(frozen=True, slots=True)
class ErrorCauseRow:
    """Jobs whose runs ended in RUN_ERROR, by what their last run recorded.

    ``cause`` is ``exit code N``, a function app's exception type, ``did not start`` (no exit
    code: the run could not begin) or ``not recorded (a later run succeeded)``.
    """

    cause: str
    jobs: int
    run_errors: int


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """Where one workflow's jobs stand now."""

    workflow: str
    total: int
    finished: int
    failed: int
    killed: int
    running: int
    #: Neither ended nor running: waiting for parents, a launcher, or postprocessing.
    waiting: int
    #: finished / total.
    fraction_done: float


@dataclass(frozen=True, slots=True)
class WorkflowStateRow:
    """How many jobs of one workflow are in one state now."""

    workflow: str
    state: str
    count: int

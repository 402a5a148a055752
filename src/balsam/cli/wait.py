"""``balsam wait``: block a shell script until the jobs it chose have ended.

The jobs are those matching every filter given (``--wf``, ``--tag K=V``, ``--state-filter``),
counted again on every change, so jobs added to the workflow while waiting (children a job
spawns, a driver adding more) are waited for too. ``--state-filter`` is the exception: it
picks the jobs that are in those states *when the wait starts*, and only those are followed.

It wakes on the Backend's change signal (LISTEN/NOTIFY on PostgreSQL, a polled marker on
SQLite; docs/waiting.md) and then runs one count per state of the matching jobs.

Exit codes (docs/waiting.md): 0 every job JOB_FINISHED; :data:`EXIT_FAILED` some ended FAILED
or USER_KILLED; :data:`EXIT_TIMEOUT` ``--timeout`` passed first; 2 bad input, 3 no job matches
(one line on stderr, nothing changed). A progress bar is drawn on stderr when it is a terminal;
otherwise a plain line is printed when the count changed, at most every
:data:`PLAIN_EVERY` seconds, so batch logs stay short. A last line always says how it ended.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from balsam.backends.base import Backend
from balsam.cli.common import BalsamCommand, client_backend, parse_pairs, select_workflows
from balsam.domain.states import TERMINAL_STATES, JobState, parse_state
from balsam.errors import NotFound, ValidationError
from balsam.schemas.queries import JobQuery, clause_from_kwargs

#: Some job ended FAILED or USER_KILLED.
EXIT_FAILED = 8
#: The timeout passed before every job ended (as GNU ``timeout`` exits).
EXIT_TIMEOUT = 124
#: Longest single wait on the change signal (jobs are counted again at least this often).
RECHECK_SECONDS = 30.0
#: Shortest time between two counts (a busy database changes every few milliseconds).
MIN_INTERVAL = 0.05
#: Without a terminal: a progress line at most this often.
PLAIN_EVERY = 30.0
#: Ids per count when following the jobs ``--state-filter`` chose.
ID_CHUNK = 500

Counts = dict[str, int]


@click.command("wait", cls=BalsamCommand)
@click.option("--wf", help="Only jobs of this workflow (else of those containing it).")
@click.option("--tag", multiple=True, metavar="KEY=VALUE", help="Only jobs with this tag.")
@click.option(
    "--state-filter",
    multiple=True,
    metavar="STATE",
    help="Only jobs in this state (or comma-separated states) when the wait starts.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Give up after this many seconds (exit 124).",
)
def wait_command(
    wf: str | None, tag: tuple[str, ...], state_filter: tuple[str, ...], timeout: float | None
) -> int:
    """Wait until every matching job has ended; exit 0 when all are JOB_FINISHED.

    \b
    Exit codes: 0 all JOB_FINISHED, 8 some FAILED or USER_KILLED, 124 timed out,
    2 bad input, 3 no job matches.
    \b
    Examples:
      balsam wait --wf sims
      balsam wait --wf sims --tag stage=2 --timeout 3600 || echo "not all done"
    """
    conditions: dict[str, Any] = {
        f"tags__{key}": value for key, value in parse_pairs(tag, "--tag").items()
    }
    states = _states(state_filter)
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    with client_backend() as (_site, backend):
        if wf:
            conditions["workflow__in"] = select_workflows(backend, wf)
        count = _counter(backend, conditions, states)
        if not sum(count().values()):
            raise NotFound("no job matches these filters")
        with _Reporter() as report:
            counts = _wait(backend, count, deadline, report)
    return _finish(counts, timeout)


def _states(values: tuple[str, ...]) -> list[JobState]:
    try:
        return [parse_state(s) for v in values for s in v.split(",") if s.strip()]
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _counter(
    backend: Backend, conditions: dict[str, Any], states: list[JobState]
) -> Callable[[], Counts]:
    """A function counting the matching jobs per state (one query; one per 500 followed ids)."""
    base = [clause_from_kwargs(conditions)] if conditions else []
    if not states:
        return lambda: backend.count_by_state(JobQuery(clauses=base))
    chosen = [clause_from_kwargs({**conditions, "state__in": [s.value for s in states]})]
    ids = [job.job_id for job in backend.query_jobs(JobQuery(clauses=chosen))]

    def count() -> Counts:
        total: Counts = {}
        for start in range(0, len(ids), ID_CHUNK):
            clause = clause_from_kwargs({"job_id__in": ids[start : start + ID_CHUNK]})
            for state, n in backend.count_by_state(JobQuery(clauses=[clause])).items():
                total[state] = total.get(state, 0) + n
        return total

    return count


def _unended(counts: Counts) -> int:
    return sum(n for state, n in counts.items() if JobState(state) not in TERMINAL_STATES)


def _wait(
    backend: Backend, count: Callable[[], Counts], deadline: float, report: Callable[[Counts], None]
) -> Counts:
    """Count, report, and wait for a change, until no job is left unended or time is up."""
    marker = backend.change_marker()
    while True:
        counted_at = time.monotonic()
        counts = count()
        report(counts)
        left = deadline - time.monotonic()
        if not _unended(counts) or left <= 0:
            return counts
        marker = backend.wait_for_change(marker, min(left, RECHECK_SECONDS))
        pause = MIN_INTERVAL - (time.monotonic() - counted_at)
        if pause > 0:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))


class _Reporter:
    """The progress display: a Rich bar on a terminal's stderr, else occasional plain lines."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task: Any = None
        self._last: tuple[float, int] | None = None

    def __enter__(self) -> Callable[[Counts], None]:
        if self._tty:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()
            self._task = self._progress.add_task("jobs ended", total=None)
        return self.report

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def report(self, counts: Counts) -> None:
        """Show how many of the matching jobs have ended."""
        total = sum(counts.values())
        ended = total - _unended(counts)
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=ended,
                total=total,
                description=_failures(counts) or "jobs ended",
            )
            return
        now = time.monotonic()
        if self._last is None or (ended != self._last[1] and now - self._last[0] >= PLAIN_EVERY):
            click.echo(f"balsam wait: {ended} of {total} jobs ended{_suffix(counts)}", err=True)
            self._last = (now, ended)


def _failures(counts: Counts) -> str:
    bad = [f"{counts[s]} {s}" for s in (JobState.FAILED, JobState.USER_KILLED) if counts.get(s)]
    return ", ".join(bad)


def _suffix(counts: Counts) -> str:
    bad = _failures(counts)
    return f" ({bad})" if bad else ""


def _finish(counts: Counts, timeout: float | None) -> int:
    """The exit code, with one line on stderr saying why."""
    total = sum(counts.values())
    left = _unended(counts)
    if left:
        click.echo(
            f"balsam wait: timed out after {timeout or 0:g} s: {left} of {total} jobs have "
            f"not ended{_suffix(counts)}",
            err=True,
        )
        return EXIT_TIMEOUT
    bad = _failures(counts)
    if bad:
        click.echo(f"balsam wait: {total} jobs ended, {bad}", err=True)
        return EXIT_FAILED
    click.echo(f"balsam wait: all {total} jobs JOB_FINISHED", err=True)
    return 0

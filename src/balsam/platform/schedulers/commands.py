"""What the batch-system adapters share: running a scheduler command, reading why it failed,
and how long before the allocation ends the launcher stops.

Every adapter takes a :data:`CommandRunner` in its constructor. The real one,
:func:`run_command`, runs the program with no shell and no standard input; unit tests give a
runner that answers with outputs in the tools' documented formats, so the adapters' argv
builders and parsers are tested without a batch system.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from balsam.errors import SchedulerError

#: Longest a scheduler command may take before it is given up on.
COMMAND_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class CommandResult:
    """What a scheduler command printed and how it ended."""

    returncode: int
    stdout: str
    stderr: str


#: Runs a scheduler command (argv) and returns what it printed.
CommandRunner = Callable[[Sequence[str]], CommandResult]


def run_command(argv: Sequence[str]) -> CommandResult:
    """Run ``argv`` (no shell, no stdin); SchedulerError if it cannot be run at all."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise SchedulerError(
            f"{argv[0]} not found: is its batch system installed and on PATH?"
        ) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SchedulerError(f"cannot run {argv[0]}: {exc}") from None
    return CommandResult(done.returncode, done.stdout, done.stderr)


def command_reason(out: CommandResult) -> str:
    """The line that says why a command failed: the first line naming an error, else the last
    line printed (stderr, or stdout when stderr is empty), else the exit code."""
    lines = [line.strip() for line in (out.stderr or out.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [f"exit code {out.returncode}"])[0 if errors else -1]


def only_lines_matching(text: str, *markers: str) -> bool:
    """Whether every non-blank line of ``text`` holds one of ``markers`` (and there is one).

    Status and cancel commands report a job they have forgotten, or one that has ended, as an
    error line and a non-zero exit; an output made only of such lines is an answer, not a
    failure.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and all(any(mark in line for mark in markers) for line in lines)


def safety_margin_minutes(wall_time_minutes: float) -> float:
    """How long before the allocation ends the launcher stops: a tenth of the wall time,
    at least 30 seconds (at most half of it) and at most five minutes."""
    return min(5.0, max(0.5, wall_time_minutes / 10), wall_time_minutes / 2)


def launcher_minutes(wall_time_minutes: float) -> float:
    """How long the launcher runs in an allocation of ``wall_time_minutes``: the wall time less
    :func:`safety_margin_minutes`, so it stops its jobs (RUN_TIMEOUT, rerun by the next
    launcher) before the batch system kills the allocation."""
    return wall_time_minutes - safety_margin_minutes(wall_time_minutes)


def whole_seconds(minutes: float) -> int:
    """``minutes`` in seconds, rounded up: a limit is never asked for shorter than meant."""
    return int(-(-minutes * 60 // 1))


def whole_minutes(minutes: float) -> int:
    """``minutes`` rounded up to a whole minute (at least 1), for tools that take no seconds."""
    return max(1, int(-(-minutes // 1)))


def hms(minutes: float) -> str:
    """``minutes`` as ``HH:MM:SS`` (hours may pass 24), rounded up to a whole second."""
    hours, rest = divmod(whole_seconds(minutes), 3_600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


__all__ = [
    "COMMAND_TIMEOUT_SECONDS",
    "CommandResult",
    "CommandRunner",
    "command_reason",
    "hms",
    "launcher_minutes",
    "only_lines_matching",
    "run_command",
    "safety_margin_minutes",
    "whole_minutes",
    "whole_seconds",
]

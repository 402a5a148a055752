"""Waiting in tests on a condition with a deadline, never for a fixed time.

A test that needs something to have happened polls for it: :func:`wait_until` fails the test
when the deadline passes, :func:`eventually` only says whether it came. A check that something
did *not* happen waits for an observable event first (a log line, a state, a file that shows
the process under test got to the point where it would have acted), then asserts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition a test waited for did not come true before the deadline."""


def poll(predicate: Callable[[], T | None], timeout: float, interval: float) -> T | None:
    """Call ``predicate`` every ``interval`` seconds until it returns a true value; return
    that value, or None once ``timeout`` seconds have passed (it is called at least once, and
    once more at the deadline). Exceptions from ``predicate`` propagate: raise one to give up
    early (a daemon that exited, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(interval, left))


def eventually(predicate: Callable[[], object], timeout: float = 30, interval: float = 0.1) -> bool:
    """True as soon as ``predicate()`` is true, False if it is still false after ``timeout``."""
    return poll(predicate, timeout, interval) is not None


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 30,
    interval: float = 0.1,
    what: str | Callable[[], str] = "the condition",
) -> T:
    """Wait until ``predicate()`` returns a true value and return it.

    Raises :class:`WaitTimeout` (an AssertionError, so pytest reports a failure) after
    ``timeout`` seconds; ``what`` names what was awaited in its message, or is a function
    that describes it (called only then, e.g. to add the tail of a log).
    """
    value = poll(predicate, timeout, interval)
    if value is None:
        described = what() if callable(what) else what
        raise WaitTimeout(f"timed out after {timeout}s waiting for {described}")
    return value

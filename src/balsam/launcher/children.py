"""The commands of jobs: child processes reaped without polling each one.

A worker (:mod:`balsam.launcher.worker`) starts each command in its own session (so a signal
reaches the whole process tree it starts: a shell, mpiexec and its ranks) and watches it
through a pidfd registered in its selector, which wakes the worker's loop when any child exits;
only that child is waited for, nothing is polled on a timer.

The launcher tracks the same commands as :class:`Child` records with a ``remote`` link to the
worker that runs them: their signals go over the link and their exits arrive as messages.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

INF = float("inf")


class Step(StrEnum):
    """Which of a job's commands a child runs."""

    PREPROCESS = "preprocess"
    RUN = "run"
    POSTPROCESS = "postprocess"


class RemoteLink(Protocol):
    """How a child a worker runs is signalled (the worker's connection)."""

    def send_signal(self, key: int, sig: int) -> None:
        """Deliver ``sig`` to the child registered under ``key`` by the worker."""
        ...


@dataclass(eq=False)
class Child:
    """One running command of one job."""

    job_id: str
    step: Step
    key: int
    out_path: Path
    started: float
    popen: subprocess.Popen[bytes] | None = None
    remote: RemoteLink | None = None
    kill_at: float | None = None
    #: The process id a worker reported (0 until it says the command started).
    remote_pid: int = 0
    #: The run queued at the worker to start in this one's place when it exits.
    successor: Child | None = None
    #: The run this one waits for, while it is queued at the worker.
    follows: Child | None = None

    @property
    def pid(self) -> int:
        """The child's process id (its process group and session id); 0 until known."""
        return self.popen.pid if self.popen is not None else self.remote_pid


class ChildProcesses:
    """Starts children and registers their pidfds with ``selector`` (or tracks a worker's)."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        self._children: dict[int, Child] = {}
        #: Children sent SIGTERM and waiting for their SIGKILL: all the loop looks at per turn.
        self._dying: dict[int, Child] = {}
        self._next_remote_key = 1

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self._children.values()))

    def spawn(
        self,
        job_id: str,
        step: Step,
        argv: list[str],
        cwd: Path,
        env: Mapping[str, str],
        out_path: Path,
        cpus: Sequence[int] = (),
    ) -> Child:
        """Start ``argv`` in ``cwd`` with stdout and stderr to ``out_path`` (OSError if not).

        ``cpus`` (CPU ids) binds the child: the launcher narrows its own affinity for the
        moment of the spawn, which the child inherits, instead of a per-spawn ``preexec_fn``.
        """
        with out_path.open("wb") as out, _affinity(cpus):
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        pidfd = os.pidfd_open(popen.pid)
        child = Child(job_id, step, pidfd, out_path, time.monotonic(), popen=popen)
        self._children[pidfd] = child
        self.selector.register(pidfd, selectors.EVENT_READ, child)
        return child

    def adopt(self, job_id: str, step: Step, out_path: Path, link: RemoteLink) -> Child:
        """Track a child a worker is asked to start (its key goes in the run message)."""
        key = self._next_remote_key
        self._next_remote_key += 1
        child = Child(job_id, step, key, out_path, time.monotonic(), remote=link)
        self._children[key] = child
        return child

    def reap(self, child: Child) -> int:
        """Collect an exited local child's status (negative: killed by that signal)."""
        assert child.popen is not None
        code = child.popen.wait()
        if child.kill_at is not None:
            # A stopped job's leftover processes (its group outlives the leader) go too.
            self.signal(child, signal.SIGKILL)
        self.selector.unregister(child.key)
        os.close(child.key)
        del self._children[child.key]
        self._dying.pop(child.key, None)
        return code

    def get(self, key: int) -> Child | None:
        """The child tracked under ``key``, if any."""
        return self._children.get(key)

    def remote_exited(self, key: int) -> Child | None:
        """Forget a child whose worker reported its exit; None if unknown."""
        self._dying.pop(key, None)
        return self._children.pop(key, None)

    def signal(self, child: Child, sig: signal.Signals) -> None:
        """Send ``sig`` to the child's whole process group (gone already is fine)."""
        if child.remote is not None:
            child.remote.send_signal(child.key, int(sig))
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)

    def terminate(self, child: Child, grace: float, now: float) -> None:
        """SIGTERM now; :meth:`escalate` sends SIGKILL once ``grace`` seconds have passed."""
        self.signal(child, signal.SIGTERM)
        if child.kill_at is None:
            child.kill_at = now + grace
            self._dying[child.key] = child

    def hurry(self, now: float) -> None:
        """No more grace: every child not SIGKILLed yet gets it at the next :meth:`escalate`."""
        for child in self._children.values():
            if child.kill_at != INF:
                child.kill_at = now
                self._dying[child.key] = child

    def escalate(self, now: float) -> None:
        """SIGKILL every terminated child whose grace period is over."""
        for child in list(self._dying.values()):
            if child.kill_at is not None and now >= child.kill_at:
                self.signal(child, signal.SIGKILL)
                child.kill_at = INF
                del self._dying[child.key]

    def next_kill_at(self) -> float | None:
        """The earliest pending SIGKILL time, if any."""
        times = [c.kill_at for c in self._dying.values() if c.kill_at is not None]
        return min(times) if times else None


@contextlib.contextmanager
def _affinity(cpus: Sequence[int]) -> Iterator[None]:
    if not cpus:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)

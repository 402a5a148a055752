"""Child processes of the launcher, reaped without polling each one.

Every child runs in its own session (so a signal reaches the whole process tree it starts:
a shell, mpiexec and its ranks) and is watched through a pidfd registered in the launcher's
selector. The selector wakes the event loop when any child exits, and only that child is
waited for; nothing is polled on a timer.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

INF = float("inf")


class Step(StrEnum):
    """Which of a job's commands a child runs."""

    PREPROCESS = "preprocess"
    RUN = "run"
    POSTPROCESS = "postprocess"


@dataclass(eq=False)
class Child:
    """One running command of one job."""

    job_id: str
    step: Step
    popen: subprocess.Popen[bytes]
    pidfd: int
    out_path: Path
    started: float
    kill_at: float | None = None

    @property
    def pid(self) -> int:
        """The child's process id (also its process group and session id)."""
        return self.popen.pid


class ChildProcesses:
    """Starts children and registers their pidfds with ``selector``."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        self._children: dict[int, Child] = {}

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
    ) -> Child:
        """Start ``argv`` in ``cwd`` with stdout and stderr to ``out_path`` (OSError if not)."""
        with out_path.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        pidfd = os.pidfd_open(popen.pid)
        child = Child(job_id, step, popen, pidfd, out_path, time.monotonic())
        self._children[pidfd] = child
        self.selector.register(pidfd, selectors.EVENT_READ, child)
        return child

    def reap(self, child: Child) -> int:
        """Collect an exited child's status (negative: killed by that signal)."""
        code = child.popen.wait()
        if child.kill_at is not None:
            # A stopped job's leftover processes (its group outlives the leader) go too.
            self.signal(child, signal.SIGKILL)
        self.selector.unregister(child.pidfd)
        os.close(child.pidfd)
        del self._children[child.pidfd]
        return code

    def signal(self, child: Child, sig: signal.Signals) -> None:
        """Send ``sig`` to the child's whole process group (gone already is fine)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)

    def terminate(self, child: Child, grace: float, now: float) -> None:
        """SIGTERM now; :meth:`escalate` sends SIGKILL once ``grace`` seconds have passed."""
        self.signal(child, signal.SIGTERM)
        if child.kill_at is None:
            child.kill_at = now + grace

    def escalate(self, now: float) -> None:
        """SIGKILL every terminated child whose grace period is over."""
        for child in self:
            if child.kill_at is not None and now >= child.kill_at:
                self.signal(child, signal.SIGKILL)
                child.kill_at = INF

    def next_kill_at(self) -> float | None:
        """The earliest pending SIGKILL time, if any."""
        times = [c.kill_at for c in self._children.values() if c.kill_at not in (None, INF)]
        return min(times) if times else None

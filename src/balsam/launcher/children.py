"""The commands of jobs: child processes reaped without polling each one.

A worker (:mod:`balsam.launcher.worker`) starts each command in its own session (so a signal
reaches the whole process tree it starts: a shell, mpiexec and its ranks) and watches it
through a pidfd registered in its selector, which wakes the worker's loop when any child exits;
only that child is waited for, nothing is polled on a timer.

Commands start with ``posix_spawn`` (glibc's ``clone(CLONE_VFORK)``), not ``subprocess.Popen``:
it costs the worker a third of Popen's CPU per start (measured: 0.31 against 0.67 ms for a
``sleep``, 0.13 against 0.42 ms for ``/bin/true``), which at hundreds of starts a second is a
core's worth. It does what Popen did for us: stdin from /dev/null, stdout and stderr to the
output file, a new session, SIGPIPE and SIGXFSZ back to their defaults (Python ignores
SIGPIPE, and an ignored signal would stay ignored in the job), the program looked up on the
job's own PATH, and the working directory (the worker changes its own directory around the
spawn: it is single-threaded, and posix_spawn has no chdir action before Python 3.13).

The launcher tracks the same commands as :class:`Child` records with a ``remote`` link to the
worker that runs them: their signals go over the link and their exits arrive as messages.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import shutil
import signal
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
    #: The process id of a command this process started (0: a worker's, see remote_pid).
    local_pid: int = 0
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
        return self.local_pid or self.remote_pid


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
        header: str = "",
    ) -> Child:
        """Start ``argv`` in ``cwd`` with stdout and stderr to ``out_path`` (OSError if not).

        ``cpus`` (CPU ids) binds the child: this process narrows its own affinity for the
        moment of the spawn, which the child inherits. ``header``: lines the output file
        opens with, before the command's own output.
        """
        program = find_program(argv[0], env)
        mode = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        if header:
            out_path.write_text(header)
            mode = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(out_path), mode, 0o666),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        with _affinity(cpus), _working_directory(cwd):
            pid = os.posix_spawn(
                program,
                argv,
                env,
                file_actions=actions,
                setsid=True,
                setsigdef=RESET_SIGNALS,
            )
        pidfd = os.pidfd_open(pid)
        child = Child(job_id, step, pidfd, out_path, time.monotonic(), local_pid=pid)
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
        assert child.local_pid, "a child this process started"
        # Whatever the job left running in its process group (a background process, the
        # children of a main process killed with SIGKILL) goes with it, so that a retry
        # never starts beside leftovers. Done before the wait: until the leader is reaped
        # its pid, and so the group's id, cannot be given to another process.
        self.signal(child, signal.SIGKILL)
        _, status = os.waitpid(child.local_pid, 0)
        code = os.waitstatus_to_exitcode(status)
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


#: Signals a job starts with at their default action, whatever this process does with them.
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def find_program(name: str, env: Mapping[str, str]) -> str:
    """The file ``name`` runs: itself if it has a slash, else looked up on ``env``'s PATH
    (FileNotFoundError when it is nowhere, as exec would say)."""
    if "/" in name:
        return name
    found = _which(name, env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    return found


_found: dict[tuple[str, str], str] = {}


def _which(name: str, path: str) -> str | None:
    """shutil.which, its finds remembered: a worker starts the same programs thousands of
    times (a miss is looked up again: the program may be installed meanwhile)."""
    key = (name, path)
    found = _found.get(key) or shutil.which(name, path=path)
    if found is not None:
        _found[key] = found
    return found


_home: list[int] = []


@contextlib.contextmanager
def _working_directory(cwd: Path) -> Iterator[None]:
    """This process in ``cwd`` for the moment of a spawn (its child starts there)."""
    if not _home:
        _home.append(os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    try:
        os.chdir(cwd)
        yield
    finally:
        os.fchdir(_home[0])


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

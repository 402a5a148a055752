"""Processes on this host: is a launcher still alive, and killing what a dead one left behind.

A launcher's session row records its host and pid. Another launcher on the same host can then
tell at once whether that launcher still runs, without waiting for its lease to expire: the pid
must exist *and* its process must have started before the session was opened (a pid reused by
a later process started afterwards).

Every process a launcher starts for a job carries ``BALSAM_LAUNCHER=<host>:<pid>:<session>`` in
its environment, and so do the processes those start (environments are inherited). Before a
dead launcher's jobs are handed to others, :func:`kill_marked` finds whatever of them is still
running on this host by that mark and kills it, so no job ever runs twice at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

#: The environment variable that marks a launcher's job processes.
MARK_VARIABLE = "BALSAM_LAUNCHER"
#: Clock slack between a process's start and the session it opened (seconds).
START_SLACK_SECONDS = 2.0
PROC = Path("/proc")


def launcher_mark(hostname: str, pid: int, session_id: int) -> str:
    """The value of :data:`MARK_VARIABLE` for one launcher session."""
    return f"{hostname}:{pid}:{session_id}"


def boot_time(proc: Path = PROC) -> float:
    """When this host booted (seconds since the epoch), from ``/proc/stat``."""
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _stat_fields(pid: int, proc: Path) -> list[str] | None:
    """Fields 3 onwards of ``/proc/PID/stat`` (state first), or None without such a process."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def process_start_time(pid: int, proc: Path = PROC) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is none."""
    fields = _stat_fields(pid, proc)
    return None if fields is None else _started(fields, proc)


def _started(fields: list[str], proc: Path) -> float:
    ticks = int(fields[19])  # field 22 of stat(5), counted from field 3
    return boot_time(proc) + ticks / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int, opened_at: datetime, proc: Path = PROC) -> bool:
    """Whether the process that opened a session at ``opened_at`` with ``pid`` still runs."""
    fields = _stat_fields(pid, proc) if pid > 0 else None
    if fields is None or fields[0] == "Z":
        return False
    return _started(fields, proc) <= opened_at.timestamp() + START_SLACK_SECONDS


def _is_zombie(pid: int, proc: Path) -> bool:
    fields = _stat_fields(pid, proc)
    return fields is None or fields[0] == "Z"


def marked_pids(mark: str, proc: Path = PROC) -> list[int]:
    """Pids of this user's processes whose environment carries ``BALSAM_LAUNCHER=mark``."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    found = []
    for pid, environ in _environments(proc):
        if needle in environ.split(b"\0"):
            found.append(pid)
    return found


def _environments(proc: Path) -> Iterator[tuple[int, bytes]]:
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        # Other users' processes (and ones that just exited) cannot be read: skip them.
        with contextlib.suppress(OSError):
            yield int(entry.name), (entry / "environ").read_bytes()


def kill_marked(mark: str, wait_seconds: float = 10.0, proc: Path = PROC) -> int:
    """SIGKILL every process marked ``mark``, wait until they are gone; returns how many."""
    pids = [pid for pid in marked_pids(mark, proc) if pid != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline and any(_exists(pid, proc) for pid in pids):
        time.sleep(0.02)
    return len(pids)


def _exists(pid: int, proc: Path) -> bool:
    # A killed process that nobody reaped yet is a zombie: it runs nothing any more.
    return (proc / str(pid)).exists() and not _is_zombie(pid, proc)

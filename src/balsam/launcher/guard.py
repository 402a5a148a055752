"""The launcher's guard: kills the launcher's jobs if the launcher dies without stopping them.

A launcher killed with SIGKILL (by a user, the OOM killer, a node agent) cannot stop its
children: each runs in its own session, so nothing else would. The guard is a tiny process the
launcher starts first, in a session of its own, reading a pipe from the launcher. The launcher
writes ``+PGID`` when it starts a job's process group and ``-PGID`` when that group is gone,
and ``bye`` when it exits normally. End of file without ``bye`` means the launcher died: the
guard sends SIGKILL to every group still listed and exits.

It costs one small write per job, not a ``preexec_fn`` per spawn (which would force fork
instead of vfork and cut the spawn rate five-fold). Run as ``python -m balsam.launcher.guard``;
it imports nothing of Balsam's so it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)


def apply(line: str, groups: set[int]) -> bool:
    """Apply one protocol line to ``groups``; returns False on ``bye``."""
    if line == "bye":
        return False
    if line[:1] in "+-" and line[1:].isdigit():
        pgid = int(line[1:])
        if line[0] == "+":
            groups.add(pgid)
        else:
            groups.discard(pgid)
    return True


def kill_groups(groups: set[int]) -> None:
    """SIGKILL every process group in ``groups`` (gone already is fine)."""
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def main(fd: int = 0) -> int:
    """Read the launcher's pipe on ``fd`` until it says ``bye`` or dies."""
    # The launcher handles these itself; the guard must outlive it to clean up after it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    pending = b""
    while chunk := os.read(fd, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            if not apply(raw.decode("ascii", "replace").strip(), groups):
                return 0
    kill_groups(groups)
    return 0


class Guard:
    """The launcher's end of the guard's pipe."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        self.proc = proc
        self.fd = proc.stdin.fileno()
        self.broken = False

    @classmethod
    def start(cls, env: Mapping[str, str]) -> Guard:
        """Start the guard process (in its own session, so a Ctrl-C does not reach it)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "balsam.launcher.guard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
        return cls(proc)

    def _send(self, line: str) -> None:
        if self.broken:
            return
        try:
            os.write(self.fd, line.encode() + b"\n")
        except OSError as exc:
            # Without a guard the jobs still stop with a launcher that exits normally.
            log.warning(
                "the launcher's guard is gone (%s): jobs may outlive a killed launcher", exc
            )
            self.broken = True

    def watch(self, pgid: int) -> None:
        """Kill process group ``pgid`` if the launcher dies."""
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        """Process group ``pgid`` is gone."""
        self._send(f"-{pgid}")

    def close(self) -> None:
        """The launcher exits normally: tell the guard to leave everything alone."""
        self._send("bye")
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    sys.exit(main())

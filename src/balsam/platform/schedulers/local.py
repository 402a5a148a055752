"""The ``local`` scheduler: no batch system, the launcher starts on this host at once.

It writes the batch script it runs into the site's ``qsubmit/`` directory (so a user can read
or rerun it; mode 0744 less the umask, see :func:`~balsam.platform.schedulers.base.write_script`)
and starts it detached from the caller: a new session, stdin from /dev/null, and
stdout/stderr to a log file beside the script, never a pipe that would tie the launcher to the
terminal that submitted it. The launch id is the launcher's process id, which is also its
process group's (it leads a new session): :meth:`LocalScheduler.status` says ``running`` while
that process lives (a zombie counts as ended) and ``gone`` after; :meth:`LocalScheduler.cancel`
sends SIGTERM to the group. A process id can be reused by the system once the launcher is gone;
the window is small for ``status``, and ``balsam queue rm`` does not cancel a row it knows ended.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from balsam.errors import SchedulerError
from balsam.platform.schedulers.base import (
    BackfillWindow,
    BatchState,
    LaunchRequest,
    Submission,
    script_text,
    write_script,
)


class LocalScheduler:
    """Runs launcher jobs as background processes on this host (one node)."""

    name = "local"

    def submit(self, request: LaunchRequest) -> Submission:
        """Write the script and start it detached; returns its process id as the launch id."""
        warnings = []
        if request.sched_flags:
            warnings.append("the local scheduler has no batch system: --sched-flags are not used")
        if request.num_nodes > 1:
            warnings.append(
                f"the local scheduler runs on this host only: asked for {request.num_nodes} "
                "nodes, the launcher gets 1"
            )
        try:
            script = self._write_script(request)
        except OSError as exc:
            raise SchedulerError(f"cannot write the launcher script: {exc}") from exc
        pid = self._start(script, script.with_suffix(".log"))
        return Submission(launch_id=str(pid), script=script, warnings=warnings)

    def status(self, ids: Sequence[str]) -> dict[str, BatchState]:
        """RUNNING while the launcher's process lives, else GONE (its exit code is not kept)."""
        return {pid: BatchState.RUNNING if _alive(pid) else BatchState.GONE for pid in ids}

    def cancel(self, job_id: str) -> None:
        """SIGTERM the launcher's process group (one that has ended is left alone)."""
        if not _alive(job_id):
            return
        try:
            os.killpg(int(job_id), signal.SIGTERM)
        except ProcessLookupError:
            pass
        except OSError as exc:
            raise SchedulerError(f"cannot stop local launcher {job_id}: {exc}") from exc

    def find(self, job_name: str) -> list[str]:
        """Nothing: local launchers carry no name (a crash mid-submit is not reconciled)."""
        return []

    def backfill(self, queue: str) -> list[BackfillWindow]:
        """Nothing: this host has no queue to backfill."""
        return []

    def _write_script(self, request: LaunchRequest) -> Path:
        header = ["# scheduler: local"]
        if request.sched_flags:
            header.append(f"# scheduler flags (unused here): {shlex.join(request.sched_flags)}")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return write_script(request.scripts_dir, f"local_{stamp}_", script_text(request, header))

    def _start(self, script: Path, log: Path) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), flags, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        try:
            return os.posix_spawn(
                "/bin/bash",
                ["/bin/bash", str(script)],
                dict(os.environ),
                file_actions=actions,
                setsid=True,
            )
        except OSError as exc:
            raise SchedulerError(f"cannot start the launcher script {script}: {exc}") from exc


def _alive(pid: str) -> bool:
    """Whether process ``pid`` runs (not a zombie)."""
    if not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold anything.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]

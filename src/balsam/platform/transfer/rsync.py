"""``rsync://HOST[:PORT]/MODULE/PATH`` (an rsync daemon) and ``[USER@]HOST:PATH`` (rsync over
ssh), both through the ``rsync`` command.

Every transfer runs ``rsync -a --partial-dir=.rsync-partial``: times, modes, links and
directories kept; a file cut off mid-way is kept aside in ``.rsync-partial`` (never under its
real name) so the next try sends only the rest. Over ssh the remote shell is
``ssh -o BatchMode=yes -o ConnectTimeout=N`` plus ``transfer.ssh_options``: the user's keys
and ssh configuration, never a password prompt. rsync's exit codes for a lost connection or
a time-out (10, 12, 30, 35, and ssh's 255 unless it was refused authentication) are transient
and retried; the others (23: a source that does not exist, 5: an unknown module, ...) are not.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from balsam.platform.transfer.errors import TransferError, TransientTransferError
from balsam.platform.transfer.local import matching
from balsam.platform.transfer.urls import is_host_path
from balsam.transfer_settings import TransferSettings

#: rsync's exit codes that a later try may not see again.
TRANSIENT_EXITS = {
    10: "socket I/O error",
    12: "error in the rsync protocol data stream",
    30: "timeout in data send/receive",
    35: "timeout waiting for the daemon connection",
    255: "the ssh connection failed",
}
PARTIAL_DIR = ".rsync-partial"
#: Words in ssh's complaint when a retry cannot help (exit 255 is otherwise a lost connection).
_REFUSED = ("Permission denied", "Host key verification failed", "Could not resolve hostname")


def rsync_argv(sources: list[str], destination: str, settings: TransferSettings) -> list[str]:
    """The rsync command moving ``sources`` to ``destination`` (ssh when either is HOST:PATH)."""
    connect = int(max(1, settings.connect_timeout_seconds))
    argv = [
        "rsync",
        "-a",
        f"--partial-dir={PARTIAL_DIR}",
        f"--timeout={int(settings.io_timeout_seconds)}",
    ]
    if any(is_host_path(x) for x in (*sources, destination)):
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect}"]
        argv += ["-e", shlex.join([*ssh, *settings.ssh_options])]
    else:
        argv.append(f"--contimeout={connect}")
    return [*argv, "--", *sources, destination]


def run_rsync(sources: list[str], destination: str, settings: TransferSettings) -> None:
    """Run rsync; TransientTransferError or TransferError with rsync's own last line."""
    argv = rsync_argv(sources, destination, settings)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=settings.timeout_seconds, check=False
        )
    except FileNotFoundError:
        raise TransferError("cannot run rsync: it is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise TransientTransferError(
            f"rsync to {destination} took over {settings.timeout_seconds:g} s"
        ) from None
    if done.returncode == 0:
        return
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    message = f"rsync failed ({done.returncode}): {_first_error(lines) or last}"
    refused = any(word in done.stderr for word in _REFUSED)
    if done.returncode in TRANSIENT_EXITS and not refused:
        raise TransientTransferError(message)
    raise TransferError(message)


def _first_error(lines: list[str]) -> str:
    """The line that says what went wrong (rsync ends with a summary line of its own)."""
    for line in lines:
        if any(word in line for word in _REFUSED):
            return line.strip()
    for line in lines:
        if "@ERROR" in line or "No such file" in line or "failed" in line.lower():
            return line.strip()
    return ""


class RsyncAdapter:
    """rsync daemon and rsync-over-ssh URLs (the module docstring)."""

    def __init__(self, settings: TransferSettings) -> None:
        self.settings = settings

    def stage_in(self, url: str, base: Path, dst_dir: Path) -> list[Path]:
        """rsync ``url`` into ``dst_dir`` (a trailing ``/`` copies a directory's contents, as
        rsync does); returns the entries it added, or the directory."""
        dst_dir.mkdir(parents=True, exist_ok=True)
        before = set(dst_dir.iterdir())
        run_rsync([url], f"{dst_dir}/", self.settings)
        return sorted(set(dst_dir.iterdir()) - before) or [dst_dir]

    def stage_out(self, src_dir: Path, patterns: list[str], url: str, base: Path) -> list[Path]:
        """rsync the entries matching ``patterns`` into the directory ``url`` (made when its
        parent exists)."""
        matched = matching(src_dir, patterns)
        if matched:
            run_rsync([str(p) for p in matched], url.rstrip("/") + "/", self.settings)
        return matched

"""How long the batch allocation a launcher runs in has left.

``balsam submit-launch`` passes the wall time to the launcher it submits; a launcher started
by hand inside an allocation (``salloc``, an interactive job, a batch script of the user's
own) asks the batch system instead. Only Slurm says so cheaply (``squeue -o %L``, the time
left); elsewhere, or when the answer is unlimited or unknown, there is no limit and the
launcher relies on ``--time-limit-minutes``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Mapping

log = logging.getLogger(__name__)

QUERY_TIMEOUT_SECONDS = 20.0


def parse_slurm_duration(text: str) -> float | None:
    """Minutes in a Slurm duration (``[D-]HH:MM:SS``, ``MM:SS``, ``SS``); None if unlimited."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "NOT_SET", "INVALID", "N/A"):
        return None
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not days.strip().isdigit() and days:
        raise ValueError(f"not a Slurm duration: {text!r}")
    if len(parts) > 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a Slurm duration: {text!r}")
    if days and len(parts) != 3:
        raise ValueError(f"not a Slurm duration: {text!r}")
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return (int(days or 0) * 86400 + seconds) / 60


def allocation_minutes_left(environ: Mapping[str, str]) -> float | None:
    """Minutes left in the Slurm job this process runs in; None elsewhere or unknown."""
    job_id = environ.get("SLURM_JOB_ID")
    squeue = shutil.which("squeue", path=environ.get("PATH"))
    if not job_id or squeue is None:
        return None
    try:
        out = subprocess.run(
            [squeue, "-h", "-j", job_id, "-o", "%L"],
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT_SECONDS,
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot ask Slurm for the time left: %s", exc)
        return None
    try:
        return parse_slurm_duration(out.stdout.strip().splitlines()[0]) if out.stdout else None
    except ValueError as exc:
        log.warning("cannot read Slurm's time left: %s", exc)
        return None

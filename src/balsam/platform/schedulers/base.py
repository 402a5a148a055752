"""What every batch-scheduler adapter takes and returns.

An adapter turns a :class:`LaunchRequest` (the ``balsam submit-launch`` options plus where the
workflow database lives) into a batch job whose script runs ``balsam launcher``, and returns a
:class:`Submission` with the scheduler's id for it.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class LaunchRequest:
    """A launcher batch job to submit."""

    project: str
    queue: str
    wall_time_minutes: float
    num_nodes: int
    job_mode: str
    site_path: Path
    scripts_dir: Path
    wf_filter: str | None = None
    balsam_argv: list[str] = field(default_factory=lambda: balsam_entry_point())

    def launcher_argv(self) -> list[str]:
        """The ``balsam launcher`` command the batch script runs."""
        argv = [*self.balsam_argv, "launcher", "--consume-all", "--job-mode", self.job_mode]
        argv += ["--time-limit-minutes", format_minutes(self.wall_time_minutes)]
        if self.wf_filter:
            argv += ["--wf-filter", self.wf_filter]
        return argv


@dataclass(frozen=True)
class Submission:
    """A submitted launcher job: the scheduler's id, its script, and warnings for the user."""

    launch_id: str
    script: Path
    warnings: list[str] = field(default_factory=list)


class Scheduler(Protocol):
    """A batch scheduler that can start launcher jobs."""

    name: str

    def submit(self, request: LaunchRequest) -> Submission:
        """Submit ``request``; raise SchedulerError when the scheduler refuses."""
        ...


def balsam_entry_point() -> list[str]:
    """How to run this installation's ``balsam`` command from a batch script."""
    script = Path(sys.executable).parent / "balsam"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "balsam.cli.main"]


def format_minutes(minutes: float) -> str:
    """``5`` rather than ``5.0``; fractions kept (``0.05``)."""
    return str(int(minutes)) if float(minutes).is_integer() else repr(float(minutes))


def script_text(request: LaunchRequest, header: list[str]) -> str:
    """A bash batch script: scheduler directives, the site's environment, the launcher."""
    lines = ["#!/bin/bash", *header]
    lines += [
        f"# Balsam launcher: project {request.project}, queue {request.queue}, "
        f"{request.num_nodes} node(s), {format_minutes(request.wall_time_minutes)} minute(s), "
        f"{request.job_mode} mode",
        f"export BALSAM_DB_PATH={shlex.quote(str(request.site_path))}",
        f"cd {shlex.quote(str(request.site_path))}",
        f"exec {shlex.join(request.launcher_argv())}",
    ]
    return "\n".join(lines) + "\n"

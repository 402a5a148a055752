"""What every batch-scheduler adapter takes and returns.

An adapter turns a :class:`LaunchRequest` (the ``balsam submit-launch`` options plus where the
workflow database lives) into a batch job whose script runs ``balsam launcher``, and returns a
:class:`Submission` with the scheduler's id for it.

A batch script runs as its owner, so nothing a user types may change what it runs: a
:class:`LaunchRequest` refuses text holding a newline, a carriage return, a NUL or any other
control character (each would end a directive or a command and start another one), and every
value interpolated into the script's shell text is quoted (``shlex.quote``). Scripts are
written by :func:`write_script`: created new (never through an existing file or link) with mode
:data:`SCRIPT_MODE` less the umask.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shlex
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from balsam.domain.text import is_utf8
from balsam.errors import ConfigError, ValidationError

#: Mode a batch script is created with, before the umask: read, write and run for its owner;
#: read for the rest (0744 under umask 022, 0700 under 077). Nobody else may ever write what
#: runs as the owner, whatever the umask (under 002 or 000 the script stays 0744).
SCRIPT_MODE = 0o744
#: The longest wall time a launch may ask for: a year, beyond any queue's limit.
MAX_WALL_TIME_MINUTES = 366 * 24 * 60.0
#: The most nodes a launch may ask for: beyond any machine.
MAX_NODES = 1_000_000

# C0 and C1 controls and DEL end or rewrite a line of shell; lone surrogates are bytes of an
# argument that was not UTF-8, which no script can be written with.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def script_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be put into a batch script, or None."""
    found = _CONTROL.search(value)
    if found:
        return f"holds the control character {found.group()!r}"
    if not is_utf8(value):
        return "is not valid UTF-8 text"
    return None


@dataclass(frozen=True)
class LaunchRequest:
    """A launcher batch job to submit; refused (ValidationError) when it cannot be scripted.

    ``sched_flags`` are extra arguments for the scheduler's submit command (``--sched-flags``);
    ``job_name`` is the name the scheduler shows (``balsam-<row id>`` when the batch job is
    recorded, so that a submission whose answer was lost can be found by it);
    ``script_template`` is the text of the site's own batch-script template
    (``platform.batch_script_template``; see :func:`script_text`), None for the built-in one.
    """

    project: str
    queue: str
    wall_time_minutes: float
    num_nodes: int
    job_mode: str
    site_path: Path
    scripts_dir: Path
    wf_filter: str | None = None
    sched_flags: tuple[str, ...] = ()
    job_name: str = "balsam"
    balsam_argv: list[str] = field(default_factory=lambda: balsam_entry_point())
    script_template: str | None = None

    def __post_init__(self) -> None:
        texts = {"project": self.project, "queue": self.queue, "job_mode": self.job_mode}
        texts |= {"wf_filter": self.wf_filter or "", "site path": str(self.site_path)}
        texts |= {"job name": self.job_name}
        texts |= {f"scheduler flag {flag!r}": flag for flag in self.sched_flags}
        for name, value in texts.items():
            problem = script_value_problem(value)
            if problem:
                raise ValidationError(f"{name} {value!r} {problem}")
        minutes = self.wall_time_minutes
        if not (math.isfinite(minutes) and 0 < minutes <= MAX_WALL_TIME_MINUTES):
            raise ValidationError(
                f"wall time must be above 0 and at most {MAX_WALL_TIME_MINUTES:g} minutes "
                f"(got {minutes!r})"
            )
        if not 1 <= self.num_nodes <= MAX_NODES:
            raise ValidationError(f"node count must be 1 to {MAX_NODES} (got {self.num_nodes})")
        if self.script_template is not None:
            check_template(self.script_template)

    def launcher_argv(self, minutes: float | None = None) -> list[str]:
        """The ``balsam launcher`` command the batch script runs, for ``minutes`` (default:
        the whole wall time; a batch system's adapter leaves a margin before its kill)."""
        argv = [*self.balsam_argv, "launcher", "--consume-all", "--job-mode", self.job_mode]
        limit = self.wall_time_minutes if minutes is None else minutes
        argv += ["--time-limit-minutes", format_minutes(round(limit, 4))]
        if self.wf_filter:
            argv += ["--wf-filter", self.wf_filter]
        return argv


@dataclass(frozen=True)
class Submission:
    """A submitted launcher job: the scheduler's id, its script, and warnings for the user."""

    launch_id: str
    script: Path
    warnings: list[str] = field(default_factory=list)


class BatchState(StrEnum):
    """Where a launcher batch job stands, in any scheduler's terms."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The scheduler no longer knows it (it ended long enough ago to be forgotten).
    GONE = "gone"


@dataclass(frozen=True)
class BackfillWindow:
    """Nodes a scheduler could start a job on now: ``num_nodes`` free for ``minutes``
    (``math.inf`` when nothing bounds it but the queue's limit)."""

    queue: str
    num_nodes: int
    minutes: float


class Scheduler(Protocol):
    """A batch scheduler that can start, follow and cancel launcher jobs."""

    name: str

    def submit(self, request: LaunchRequest) -> Submission:
        """Submit ``request``; raise SchedulerError when the scheduler refuses."""
        ...

    def status(self, ids: Sequence[str]) -> dict[str, BatchState]:
        """Where each of these batch jobs stands (GONE: the scheduler does not know it)."""
        ...

    def cancel(self, job_id: str) -> None:
        """Cancel a batch job (one that has ended already is left as it is)."""
        ...

    def find(self, job_name: str) -> list[str]:
        """Ids of the batch jobs the scheduler knows by ``job_name`` (those it can tell)."""
        ...

    def backfill(self, queue: str) -> list[BackfillWindow]:
        """Free nodes of ``queue`` that a job could start on now (empty when the scheduler
        cannot tell); SchedulerError when it cannot be asked."""
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


#: What a site's batch-script template may name (``${name}``); ``${launcher}`` it must.
TEMPLATE_FIELDS = (
    "directives",
    "environment",
    "launcher",
    "project",
    "queue",
    "num_nodes",
    "wall_time_minutes",
    "job_mode",
    "job_name",
)


def check_template(template: str) -> None:
    """ConfigError unless ``template`` is a batch-script template that runs the launcher and
    names only :data:`TEMPLATE_FIELDS`."""
    where = "platform.batch_script_template"
    parsed = string.Template(template)
    if not parsed.is_valid():
        raise ConfigError(f"{where}: a '$' starts no ${{name}}: write '$$' for a dollar sign")
    names = set(parsed.get_identifiers())
    unknown = sorted(names - set(TEMPLATE_FIELDS))
    if unknown:
        known = ", ".join(TEMPLATE_FIELDS)
        raise ConfigError(f"{where} names ${{{unknown[0]}}}, which is not one of: {known}")
    if "launcher" not in names:
        raise ConfigError(f"{where} must run the launcher: it has no ${{launcher}} line")
    if not template.startswith("#!"):
        raise ConfigError(f"{where} must start with an interpreter line such as #!/bin/bash")


def script_text(
    request: LaunchRequest, header: list[str], launcher_minutes: float | None = None
) -> str:
    """A bash batch script: scheduler directives, the site's environment, the launcher.

    ``header`` holds the adapter's directives, already quoted for its scheduler;
    ``launcher_minutes`` how long the launcher runs (default: the wall time). A site template
    (``request.script_template``) is filled in with the same three parts as
    ``${directives}``, ``${environment}`` and ``${launcher}``, and the launch's values (each
    shell-quoted) as ``${project}``, ``${queue}``, ``${num_nodes}``, ...
    """
    parts = {
        "directives": "\n".join(header),
        "environment": "\n".join(
            [
                f"export BALSAM_DB_PATH={shlex.quote(str(request.site_path))}",
                f"cd {shlex.quote(str(request.site_path))}",
            ]
        ),
        "launcher": f"exec {shlex.join(request.launcher_argv(launcher_minutes))}",
    }
    if request.script_template is not None:
        values = {
            "project": shlex.quote(request.project),
            "queue": shlex.quote(request.queue),
            "num_nodes": str(request.num_nodes),
            "wall_time_minutes": format_minutes(request.wall_time_minutes),
            "job_mode": shlex.quote(request.job_mode),
            "job_name": shlex.quote(request.job_name),
        }
        text = string.Template(request.script_template).substitute(parts | values)
        return text if text.endswith("\n") else text + "\n"
    lines = ["#!/bin/bash", parts["directives"]] if header else ["#!/bin/bash"]
    lines += [
        f"# Balsam launcher: project {shlex.quote(request.project)}, queue "
        f"{shlex.quote(request.queue)}, {request.num_nodes} node(s), "
        f"{format_minutes(request.wall_time_minutes)} minute(s), {request.job_mode} mode",
        parts["environment"],
        parts["launcher"],
    ]
    return "\n".join(lines) + "\n"


def write_script(directory: Path, prefix: str, text: str) -> Path:
    """Write ``text`` to a new file ``<directory>/<prefix><random>.sh`` (mode
    :data:`SCRIPT_MODE` less the umask) and return its path; OSError when it cannot."""
    directory.mkdir(parents=True, exist_ok=True)
    # O_EXCL: a name taken meanwhile, or a planted symlink, is never written through.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        path = directory / f"{prefix}{secrets.token_hex(4)}.sh"
        try:
            fd = os.open(path, flags, SCRIPT_MODE)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        except BaseException:
            # A full disk must not leave half a script that a user might rerun.
            path.unlink(missing_ok=True)
            raise
        return path
    raise FileExistsError(f"no free script name in {directory}")

"""Function jobs on the launcher's side: the command, the call file, the outcome file.

A job of a function app runs :mod:`balsam.launcher.funcrun` in its working directory, by the
interpreter the app names (``python``), else the workflow's Python (the launcher's own
interpreter), or inside the app's container that image's ``python3``. It is run as
``PYTHON -c <funcrun's source>``, which does what ``PYTHON -m balsam.launcher.funcrun`` does
(and that is how to rerun a call by hand) without needing Balsam importable by the job's
process: a job's own ``PYTHONPATH`` (the usual way to make its module importable) replaces
the launcher's and may hide Balsam, and another interpreter or a container has none. The
runner uses only the standard library; the launcher's version always reads its own calls.

The call (function, arguments, a token for this run, whether it runs under MPI) is written
by the worker that starts the run, beside it, as ``balsam_call.json``; the worker makes the
directory first if need be, so the launcher's loop never writes to the file system for it.
When the run ends the launcher reads ``balsam_result.json`` and sends the outcome with the
run's state update. An outcome whose token is not the run's (left by an earlier attempt) is
not this run's and is ignored.
"""

from __future__ import annotations

import functools
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from balsam.domain.functions import OUTCOME_LIMIT, outcome_problem, outcome_summary
from balsam.launcher import funcrun
from balsam.schemas.apps import AppOut
from balsam.schemas.jobs import JobOut

CALL_FILE = funcrun.CALL_FILE
RESULT_FILE = funcrun.RESULT_FILE
#: The interpreter inside a container when the app names none.
CONTAINER_PYTHON = "python3"
#: The longest outcome file read (its JSON, with the token around it).
RESULT_FILE_LIMIT = OUTCOME_LIMIT + 4096


@functools.cache
def runner_source() -> str:
    """The text of :mod:`balsam.launcher.funcrun`, which the job's interpreter runs (``-c``)."""
    return Path(funcrun.__file__).read_text(encoding="utf-8")


def function_python(app: AppOut, in_container: bool = False) -> str:
    """The interpreter that calls ``app``'s function (see the module docstring)."""
    return app.python or (CONTAINER_PYTHON if in_container else sys.executable)


def function_argv(app: AppOut, in_container: bool = False) -> list[str]:
    """The command that calls ``app``'s function (see the module docstring)."""
    return [function_python(app, in_container), "-c", runner_source()]


@dataclass(frozen=True)
class Call:
    """One run's call: the text of its call file and the token its outcome must carry."""

    text: str
    token: str


def make_call(job: JobOut, app: AppOut, mpi: bool) -> Call:
    """The call of one run of ``job`` (a new token each time: each attempt is told apart)."""
    token = uuid.uuid4().hex
    call = {
        "function": app.function,
        "args": job.function_args or [],
        "kwargs": job.function_kwargs or {},
        "token": token,
        "mpi": mpi,
        "job_id": job.job_id,
    }
    return Call(json.dumps(call, ensure_ascii=False), token)


@dataclass(frozen=True)
class RunOutcome:
    """What a function run left: its outcome (None: none that can be used) and, when there is
    none, why."""

    outcome: dict[str, Any] | None
    problem: str = ""

    @property
    def returned(self) -> bool:
        """The function returned a value."""
        return self.outcome is not None and "value" in self.outcome

    def summary(self) -> str:
        """One line for the job's history: what the function did, or why nothing is known."""
        if self.outcome is None:
            return self.problem
        return f"the function {outcome_summary(self.outcome)}"


def read_outcome(workdir: Path, token: str) -> RunOutcome:
    """The outcome the run with ``token`` wrote in ``workdir``."""
    path = workdir / RESULT_FILE
    try:
        with path.open("rb") as fh:
            data = fh.read(RESULT_FILE_LIMIT + 1)
    except FileNotFoundError:
        return RunOutcome(None, f"the function's process left no {RESULT_FILE}")
    except OSError as exc:
        return RunOutcome(None, f"cannot read {RESULT_FILE}: {exc.strerror or exc}")
    if len(data) > RESULT_FILE_LIMIT:
        return RunOutcome(None, f"{RESULT_FILE} is larger than {RESULT_FILE_LIMIT:,} bytes")
    try:
        written = json.loads(data)
    except ValueError:
        return RunOutcome(None, f"{RESULT_FILE} is not JSON")
    if not isinstance(written, dict) or written.get("token") != token:
        return RunOutcome(None, f"the function's process left no {RESULT_FILE} of this run")
    outcome = written.get("outcome")
    problem = outcome_problem(outcome) if isinstance(outcome, dict) else "missing"
    if not isinstance(outcome, dict) or problem:
        return RunOutcome(None, f"{RESULT_FILE} holds no outcome: {problem}")
    return RunOutcome(outcome)


__all__ = [
    "CALL_FILE",
    "CONTAINER_PYTHON",
    "RESULT_FILE",
    "Call",
    "RunOutcome",
    "function_argv",
    "function_python",
    "make_call",
    "read_outcome",
    "runner_source",
]

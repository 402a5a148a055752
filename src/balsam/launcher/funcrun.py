"""The process of a function job: import the app's function, call it, write its outcome.

The launcher runs this module in the job's working directory (no shell; as ``python -c``
with this file's text, which is ``python -m balsam.launcher.funcrun`` without needing Balsam
importable there: :mod:`balsam.launcher.calls`), with the call written beside it in
``balsam_call.json``::

    {"function": "mypkg.sim:run", "args": [1, 2], "kwargs": {"steps": 10},
     "token": "<chosen by the launcher for this run>", "mpi": false}

It imports the module (the working directory first on ``sys.path``, then the interpreter's
own path: ``PYTHONPATH``, site-packages), calls the function and writes
``balsam_result.json``: ``{"token": ..., "outcome": {"value": V}}`` and exits 0, or, when
the import or the call raised or the value cannot be sent back (not JSON, too big),
``{"token": ..., "outcome": {"exception": {"type", "message", "traceback"}}}`` with the
traceback also printed on stderr (the job's ``<name>.out``), and exits 1. The file is written
whole or not at all (a rename), and the token tells the launcher it is this run's and not
one left by an earlier attempt.

Under MPI (``"mpi": true``) every rank calls the function and only rank 0 writes the
outcome (the rank comes from the MPI launcher's variables, :data:`RANK_VARIABLES`); each
rank's exit status is its own, so a failing rank fails the run.

The child needs no database: everything it needs is in the call file. It uses only the
standard library and is written for Python 3.8 or newer, so that an app may name an
interpreter without Balsam (another virtual environment, a container's ``python3``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any

#: The call, written by the launcher in the job's working directory.
CALL_FILE = "balsam_call.json"
#: The outcome, written by rank 0 of the run.
RESULT_FILE = "balsam_result.json"
#: The variables that say which MPI rank a process is, most specific first: MPICH/Hydra and
#: Cray PMI, PMIx, Open MPI (and jsrun's Spectrum MPI), PALS (mpiexec on HPE Cray EX), aprun,
#: jsrun, srun (last: a batch script's own SLURM_PROCID=0 reaches runs started by mpiexec).
RANK_VARIABLES = (
    "PMI_RANK",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_RANK",
    "PALS_RANKID",
    "ALPS_APP_PE",
    "JSM_NAMESPACE_RANK",
    "SLURM_PROCID",
)
#: The most a returned value may be as JSON (balsam.domain.functions.VALUE_LIMIT).
VALUE_LIMIT = 1024 * 1024
#: The most of an exception's message and traceback kept (their ends).
MESSAGE_LIMIT = 16 * 1024
TRACEBACK_LIMIT = 64 * 1024


class CallError(Exception):
    """The call file is missing or is not a call (the launcher's fault, not the function's)."""


def read_call(path: str) -> dict[str, Any]:
    """The call in ``path`` (CallError when it is unreadable or malformed)."""
    try:
        with open(path, encoding="utf-8") as fh:
            call = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CallError(f"cannot read the call {path}: {exc}") from exc
    if not isinstance(call, dict) or not isinstance(call.get("function"), str):
        raise CallError(f"{path} holds no call (no 'function')")
    if not isinstance(call.get("args", []), list) or not isinstance(call.get("kwargs", {}), dict):
        raise CallError(f"{path}: args must be a list and kwargs an object")
    return call


def rank(environ: dict[str, str], mpi: bool) -> int:
    """This process's MPI rank (0 outside MPI: a variable inherited from a worker started by
    an MPI launcher must not silence a run that is not one)."""
    if not mpi:
        return 0
    for name in RANK_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def find_function(text: str) -> Any:
    """The object ``module:attribute`` names (ImportError, AttributeError, ValueError)."""
    module_name, sep, attribute = text.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"function {text!r} is not MODULE:FUNCTION")
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    if not callable(found):
        raise TypeError(f"{text} is a {type(found).__name__}, not a function")
    return found


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def exception_outcome(exc: BaseException, trace: str) -> dict[str, Any]:
    """The outcome of a call that raised ``exc`` (``trace``: its formatted traceback)."""
    kind = type(exc)
    module = kind.__module__
    name = (
        kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"
    )
    return {
        "exception": {
            "type": name,
            "message": _tail(str(exc), MESSAGE_LIMIT),
            "traceback": _tail(trace, TRACEBACK_LIMIT),
        }
    }


def value_outcome(value: Any) -> dict[str, Any]:
    """The outcome of a call that returned ``value``; an exception outcome (TypeError,
    ValueError) when the value cannot be stored as JSON or is too big."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        why = (
            f"the function returned a {type(value).__name__}, which cannot be stored as JSON "
            f"({exc}): return lists, dicts, strings, numbers, booleans or None"
        )
        error = TypeError(why) if isinstance(exc, TypeError) else ValueError(why)
        return exception_outcome(error, "")
    if len(text) > VALUE_LIMIT:
        why = (
            f"the function returned {len(text):,} bytes of JSON, more than the "
            f"{VALUE_LIMIT:,} a job's result may hold: write big results to a file in the "
            "working directory and return its name"
        )
        return exception_outcome(ValueError(why), "")
    return {"value": json.loads(text)}


def call(call: dict[str, Any]) -> dict[str, Any]:
    """Import and call the function of ``call``; its outcome (whatever it raised, SystemExit
    and KeyboardInterrupt included, is its outcome: nothing escapes)."""
    try:
        function = find_function(call["function"])
        value = function(*call.get("args", []), **call.get("kwargs", {}))
    except BaseException as exc:
        # From the function's frames on: this module's own frame is no help to the user.
        here = exc.__traceback__
        trace = "".join(traceback.format_exception(type(exc), exc, here.tb_next if here else None))
        sys.stderr.write(trace)
        if isinstance(exc, ImportError):
            sys.stderr.write(
                f"balsam: cannot import {call['function']!r}; sys.path is {sys.path}\n"
            )
        return exception_outcome(exc, trace)
    return value_outcome(value)


def write_outcome(path: str, token: str, outcome: dict[str, Any]) -> None:
    """Write the outcome whole or not at all (a partly written file is never read)."""
    partial = f"{path}.{os.getpid()}.part"
    with open(partial, "w", encoding="utf-8") as fh:
        json.dump({"token": token, "outcome": outcome}, fh)
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    """Run the call in the working directory; the exit status (0: the function returned)."""
    args = sys.argv[1:] if argv is None else argv
    call_path = args[0] if args else CALL_FILE
    try:
        request = read_call(call_path)
    except CallError as exc:
        sys.stderr.write(f"balsam: {exc}\n")
        return 2
    # Fixed before the call: the function may change the working directory.
    result_path = os.path.join(os.path.dirname(os.path.abspath(call_path)), RESULT_FILE)
    outcome = call(request)
    if "exception" in outcome and not outcome["exception"]["traceback"]:
        sys.stderr.write(f"{outcome['exception']['type']}: {outcome['exception']['message']}\n")
    if rank(dict(os.environ), bool(request.get("mpi"))) == 0:
        write_outcome(result_path, str(request.get("token", "")), outcome)
    sys.stdout.flush()
    return 0 if "value" in outcome else 1


if __name__ == "__main__":
    sys.exit(main())

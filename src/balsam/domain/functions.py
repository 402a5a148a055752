"""Python function apps: the ``module:function`` an app names and the outcome a run leaves.

An app may call a Python function instead of running an executable. Its ``function`` names
it by import path, ``MODULE:ATTRIBUTE`` (``mypkg.sim:run``, ``tools:Model.build``): a dotted
module name, a colon, a dotted attribute path inside the module. A job of the app carries the
call's arguments as JSON (``function_args``, a list; ``function_kwargs``, an object), never
pickled code; each run stores its outcome (``function_outcome``), one of::

    {"value": VALUE}                         the function returned VALUE (any JSON value)
    {"exception": {"type": "ValueError",     the function raised (or could not be imported):
                   "message": "...",         its type, its message and the traceback text
                   "traceback": "..."}}      as the job's process printed it

Only the standard library is used: the domain layer stands alone.
"""

from __future__ import annotations

import json
import keyword
from collections.abc import Mapping
from typing import Any

from balsam.domain.text import DATA_LIMIT, KIB, MIB, json_problem, text_problem

#: The most a job's ``function_args`` and its ``function_kwargs`` may each hold, as JSON.
ARGUMENTS_LIMIT = DATA_LIMIT
#: The most a returned value may be as JSON (more is reported as the run's error).
VALUE_LIMIT = DATA_LIMIT
#: The most a stored outcome may be as JSON: the value, or an exception with its traceback.
OUTCOME_LIMIT = 2 * MIB
#: The longest exception message and traceback text kept (the end of them: the last frames).
MESSAGE_LIMIT = 16 * KIB
TRACEBACK_LIMIT = 64 * KIB
#: The keys of an exception outcome.
EXCEPTION_KEYS = frozenset({"type", "message", "traceback"})
#: How a function is written, for messages.
FUNCTION_FORM = (
    "MODULE:FUNCTION (an importable module, a colon, a name in it), e.g. 'mypkg.sim:run'"
)


def _dotted_problem(text: str, what: str) -> str | None:
    for part in text.split("."):
        if not part.isidentifier() or keyword.iskeyword(part):
            return f"has no valid {what} ({part!r} is not a Python name)"
    return None


def function_problem(text: str) -> str | None:
    """Why ``text`` cannot name an app's function, or None ("" is no function)."""
    if not text:
        return None
    problem = text_problem(text)
    if problem is not None:
        return problem
    module, sep, attribute = text.partition(":")
    if not sep or not module or not attribute or ":" in attribute:
        return f"must be {FUNCTION_FORM}"
    return _dotted_problem(module, "module name before ':'") or _dotted_problem(
        attribute, "function name after ':'"
    )


def split_function(text: str) -> tuple[str, str]:
    """``("mypkg.sim", "run")`` for ``"mypkg.sim:run"`` (ValueError when malformed)."""
    problem = function_problem(text)
    if problem is not None or not text:
        raise ValueError(f"function {problem or 'is empty'}")
    module, _, attribute = text.partition(":")
    return module, attribute


def arguments_problem(args: object, kwargs: object) -> str | None:
    """Why ``function_args`` / ``function_kwargs`` cannot be stored and sent, or None."""
    if args is not None:
        if not isinstance(args, list):
            return f"function_args must be a JSON list, not {type(args).__name__}"
        problem = json_problem(args, ARGUMENTS_LIMIT)
        if problem:
            return f"function_args {problem}"
    if kwargs is not None:
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            return "function_kwargs must be a JSON object (names to values)"
        bad = [k for k in kwargs if not k.isidentifier()]
        if bad:
            return f"function_kwargs name {bad[0]!r} is not a Python argument name"
        problem = json_problem(kwargs, ARGUMENTS_LIMIT)
        if problem:
            return f"function_kwargs {problem}"
    return None


def call_problem(function_app: bool, args: str, has_call: bool) -> str | None:
    """Why a new job's arguments do not suit its app, or None: a function app's job gives
    its call as ``function_args``/``function_kwargs``, an executable app's as ``args``."""
    if function_app and args:
        return (
            "its app calls a Python function: give the call's arguments as function_args "
            "and function_kwargs, not args"
        )
    if not function_app and has_call:
        return (
            "function_args and function_kwargs are for jobs of function apps; "
            "its app runs an executable (give args)"
        )
    return None


def call_text(function: str, args: list[Any] | None, kwargs: dict[str, Any] | None) -> str:
    """A call as a user would read it: ``mypkg.sim:run(1, "a", steps=10)``."""
    words = [json.dumps(a, ensure_ascii=False) for a in args or []]
    words += [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in (kwargs or {}).items()]
    return f"{function}({', '.join(words)})"


def parse_json_argument(text: str, what: str, kind: type) -> Any:
    """``text`` read as JSON of ``kind`` (list or dict), or ValueError saying what is wrong."""
    example = "'[1, \"a\"]'" if kind is list else "'{\"x\": 1}'"
    name = "list" if kind is list else "object"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what} must be a JSON {name} such as {example}: {exc}") from None
    if not isinstance(value, kind):
        raise ValueError(f"{what} must be a JSON {name} such as {example} (got {text!r})")
    return value


def outcome_problem(outcome: Mapping[str, Any]) -> str | None:
    """Why ``outcome`` is not a function's outcome as stored (see the module docstring)."""
    if set(outcome) == {"value"}:
        return json_problem(dict(outcome), OUTCOME_LIMIT)
    if set(outcome) != {"exception"}:
        return "must be {'value': ...} or {'exception': {...}}"
    error = outcome["exception"]
    if not isinstance(error, Mapping) or set(error) != EXCEPTION_KEYS:
        return "exception must have exactly type, message and traceback"
    if not all(isinstance(error[key], str) for key in EXCEPTION_KEYS):
        return "exception type, message and traceback must be text"
    return json_problem(dict(outcome), OUTCOME_LIMIT)


def raised(outcome: Mapping[str, Any] | None) -> Mapping[str, str] | None:
    """The exception of an outcome (type, message, traceback), None when it holds a value."""
    if not outcome or "exception" not in outcome:
        return None
    error: Mapping[str, str] = outcome["exception"]
    return error


def outcome_summary(outcome: Mapping[str, Any] | None, width: int = 200) -> str:
    """One line saying what a run's function did: ``returned 42``, ``raised ValueError: x``."""
    if not outcome:
        return ""
    error = raised(outcome)
    if error is not None:
        message = error["message"].splitlines()[0] if error["message"] else ""
        line = f"raised {error['type']}: {message}" if message else f"raised {error['type']}"
    else:
        line = f"returned {json.dumps(outcome['value'], ensure_ascii=False)}"
    return line if len(line) <= width else line[: width - 3] + "..."


__all__ = [
    "ARGUMENTS_LIMIT",
    "FUNCTION_FORM",
    "MESSAGE_LIMIT",
    "OUTCOME_LIMIT",
    "TRACEBACK_LIMIT",
    "VALUE_LIMIT",
    "arguments_problem",
    "call_problem",
    "call_text",
    "function_problem",
    "outcome_problem",
    "outcome_summary",
    "parse_json_argument",
    "raised",
    "split_function",
]

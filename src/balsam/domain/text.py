"""What text Balsam accepts in a job or an app: the checks made where input enters.

Every value a user gives ends up somewhere that cannot hold anything: a command line (an argument
cannot contain a NUL byte), an environment block, a PostgreSQL text or JSON column (no NUL, no
lone surrogate), a path. Text that cannot get there is refused when it is given, with one line
naming the field, instead of failing later in a launcher, a worker or the driver:

* NUL bytes, and text that is not valid UTF-8 (which Python carries as lone surrogates: the
  command line of a process is decoded with ``surrogateescape``), in any text field;
* text longer than its field's limit (:data:`LIMITS`; a job's environment and its ``data`` as a
  whole);
* file patterns (``input_files``, ``stage_out_files``) that are absolute or climb out with
  ``..``: a job's inputs come from its parents' working directories, its outputs from its own;
* names that are ``.`` or ``..``: job and workflow names are directory names.

Every function returns a problem (a phrase) or None; the schemas turn problems into validation
errors. Only the standard library is used: the domain layer stands alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

KIB = 1024
MIB = 1024 * KIB

#: The longest text (in UTF-8 bytes) each field takes. Command lines are bounded by the
#: kernel anyway (ARG_MAX, and 128 KiB for one argument on Linux: MAX_ARG_STRLEN).
LIMITS: dict[str, int] = {
    "description": 64 * KIB,
    "application": 256,
    "args": 128 * KIB,
    "mpi_flags": 16 * KIB,
    "input_files": 64 * KIB,
    "stage_out_files": 64 * KIB,
    "stage_in_url": 4 * KIB,
    "stage_out_url": 4 * KIB,
    "executable": 128 * KIB,
    "preprocess": 128 * KIB,
    "postprocess": 128 * KIB,
    "envscript": 4 * KIB,
    "function": 4 * KIB,
    "python": 4 * KIB,
}
#: A job's environment (names, values, ``=`` and a terminator each): at most this many bytes.
ENVIRONMENT_LIMIT = 1 * MIB
#: A job's ``data`` as JSON, and its tags (names and values): at most this many bytes.
DATA_LIMIT = 1 * MIB
TAGS_LIMIT = 64 * KIB

#: Fields holding glob patterns of files, relative to a job's working directory.
PATTERN_FIELDS = ("input_files", "stage_out_files")

# JSON writes a NUL as \u0000; preceded by an even run of backslashes it is not an escaped one.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def is_utf8(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8: no lone surrogates (the undecodable bytes of
    a command line or a file name, as Python carries them)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored or passed on (NUL byte, not UTF-8), or None."""
    if "\x00" in value:
        return "contains a NUL byte"
    if not is_utf8(value):
        return "is not valid UTF-8 text"
    return None


def size_problem(value: str, limit: int) -> str | None:
    """Why ``value`` is too long for a field of ``limit`` bytes, or None."""
    # A character is at most 4 bytes: most values need no encoding to be measured.
    if len(value) * 4 <= limit:
        return None
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        return _too_big(size, limit)
    return None


def field_problem(field: str, value: str) -> str | None:
    """The first problem of a text field's value (content, size, patterns), or None."""
    problem = text_problem(value)
    if problem is None and field in LIMITS:
        problem = size_problem(value, LIMITS[field])
    if problem is None and field in PATTERN_FIELDS:
        problem = patterns_problem(value.split())
    return problem


def name_problem(value: str) -> str | None:
    """Why a job or workflow name cannot name a directory (``.``, ``..``), or None."""
    if value in (".", ".."):
        return f"cannot be {value!r} (it names a directory)"
    return None


def patterns_problem(patterns: Iterable[str]) -> str | None:
    """Why one of these glob patterns cannot be used relative to a directory, or None."""
    for pattern in patterns:
        if pattern.startswith(("/", "~")):
            return (
                f"has the absolute pattern {pattern!r}: patterns are relative to a working "
                "directory (bring other files in with stage_in_url)"
            )
        parts = pattern.split("/")
        if ".." in parts:
            return f"has the pattern {pattern!r}, which climbs out of the working directory"
        for part in parts:
            if "**" in part and part != "**":
                return f"has the pattern {pattern!r}: '**' can only be a whole path component"
    return None


def mapping_problem(values: Mapping[str, str], limit: int, env: bool = False) -> str | None:
    """Why a mapping of names to text (an environment, tags) cannot be stored, or None."""
    total = 0
    for name, value in values.items():
        for text in (name, value):
            problem = text_problem(text)
            if problem is not None:
                return f"{name!r} {problem}" if text is value else f"a name {problem}"
        if env and (not name or "=" in name):
            return f"has the variable name {name!r} (names are not empty and hold no '=')"
        total += len(name) + len(value) + 2
    if total * 4 > limit:
        size = sum(len(f"{k}={v}".encode()) + 1 for k, v in values.items())
        if size > limit:
            return _too_big(size, limit)
    return None


def data_problem(data: Mapping[str, Any]) -> str | None:
    """Why a job's ``data`` cannot be stored as JSON (not JSON, NaN, NUL, size), or None."""
    if not data:
        return None
    return json_problem(data, DATA_LIMIT)


def json_problem(value: Any, limit: int) -> str | None:
    """Why ``value`` cannot be stored in a JSON column (not JSON, NaN, NUL, more than
    ``limit`` bytes as JSON), or None. Both databases refuse NaN and NUL in JSON."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"is not JSON: {exc}"
    problem = text_problem(text)
    if problem is None and _JSON_NUL.search(text):
        problem = "contains a NUL character"
    return problem or size_problem(text, limit)


def _too_big(size: int, limit: int) -> str:
    return f"is {size:,} bytes, more than the {_size(limit)} allowed"


def _size(size: int) -> str:
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size:,} bytes"

"""App (ApplicationDefinition) models."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from balsam.domain.commands import CommandError, split_words
from balsam.domain.functions import function_problem
from balsam.domain.text import field_problem

#: An app's text fields, checked for what cannot be stored or run (balsam.domain.text).
APP_TEXT_FIELDS = (
    "executable",
    "description",
    "preprocess",
    "postprocess",
    "envscript",
    "container",
    "function",
    "python",
)
#: What the ``executable`` column of a function app holds in the database. An older Balsam,
#: which knows no function apps, reads every app as an executable: it runs this and records
#: why the job fails, rather than failing to read the app (migration 0008 is additive).
#: This version never runs it, and shows a function app's executable as "".
FUNCTION_APP_EXECUTABLE = (
    "/bin/sh -c 'echo \"this job calls a Python function app: the launcher running it is from "
    "a Balsam too old for function apps\" >&2; exit 1'"
)


def container_problem(image: str) -> str | None:
    """Why ``image`` cannot name an app's container image, or None ("" is no container).

    An image goes into the container runtime's argv as one word: whitespace would make it
    several (or be something no runtime reads), and a leading dash would be read as a flag.
    """
    if not image:
        return None
    if image != image.strip() or any(ch.isspace() for ch in image):
        return "must be one word (an image name or path, without spaces)"
    if image.startswith("-"):
        return "must not start with '-' (it would be read as a flag of the container runtime)"
    return None


def _checked(field: str, problem_of: Callable[[str], str | None], value: str | None) -> str | None:
    """``value``, or ValueError naming ``field`` and what ``problem_of`` finds wrong with it."""
    problem = problem_of(value) if value else None
    if problem:
        raise ValueError(f"{field} {problem}")
    return value


def python_problem(python: str) -> str | None:
    """Why ``python`` cannot name a function app's interpreter, or None ("": the workflow's)."""
    if not python:
        return None
    if python != python.strip() or any(ch.isspace() for ch in python):
        return "must be one program (a path or a name on PATH, without spaces or flags)"
    if python.startswith("-"):
        return "must not start with '-'"
    return None


def app_kind_problem(executable: str, function: str, python: str) -> str | None:
    """Why an app with these fields is neither an executable app nor a function app."""
    if executable and function:
        return "an app runs an executable or calls a Python function, not both"
    if not executable and not function:
        return "an app needs an executable (or a Python function)"
    if python and not function:
        return "python is the interpreter of a function app: an executable app has none"
    return None


def updated_app_values(current: dict[str, object], changes: AppUpdate) -> dict[str, object]:
    """An app's fields after ``changes`` (not validated yet). Giving a function to an
    executable app makes it a function app (its executable goes), and an executable to a
    function app makes it an executable app (its function and interpreter go): an app is
    never both, so the change can only mean that."""
    given = changes.model_dump(exclude_none=True)
    merged = {**current, **given}
    if given.get("function") and "executable" not in given:
        merged["executable"] = ""
    if given.get("executable") and "function" not in given:
        merged["function"] = ""
        merged["python"] = given.get("python", "")
    return merged


def stored_app_values(spec: AppCreate) -> dict[str, object]:
    """The columns of a new or changed app as the database stores them (see
    :data:`FUNCTION_APP_EXECUTABLE`)."""
    values = spec.model_dump()
    if spec.function:
        values["executable"] = FUNCTION_APP_EXECUTABLE
    return values


def app_text_problems(values: dict[str, object]) -> list[str]:
    """What in an app's text fields cannot be stored or run (NUL, not UTF-8, too long)."""
    problems = []
    for field in APP_TEXT_FIELDS:
        value = values.get(field)
        if isinstance(value, str) and value and (problem := field_problem(field, value)):
            problems.append(f"{field} {problem}")
    return problems


NAME_PATTERN = r"^[A-Za-z0-9_.+-]+$"


class AppCreate(BaseModel):
    """A new app: a name unique in the workflow database and either an executable command
    or a Python function (``module:function``, docs/functions.md)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    executable: str = ""
    description: str = ""
    preprocess: str = ""
    postprocess: str = ""
    envscript: str = ""
    #: The container image the app's jobs run in ("": on the host); docs/containers.md.
    container: str = ""
    #: The Python function the app's jobs call, ``module:function`` ("": an executable app).
    function: str = ""
    #: The interpreter that calls it ("": the workflow's, the launcher's own Python).
    python: str = ""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, values: object) -> object:
        # Before the other checks: the executable must be text to be parsed.
        if isinstance(values, dict) and (problems := app_text_problems(values)):
            raise ValueError("; ".join(problems))
        return values

    @field_validator("executable")
    @classmethod
    def _parses(cls, value: str) -> str:
        if not value:
            return value
        try:
            if not split_words(value, "executable"):
                raise ValueError("the executable is empty")
        except CommandError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("container")
    @classmethod
    def _one_image(cls, value: str) -> str:
        return _checked("container", container_problem, value) or ""

    @field_validator("function")
    @classmethod
    def _importable_form(cls, value: str) -> str:
        return _checked("function", function_problem, value) or ""

    @field_validator("python")
    @classmethod
    def _one_program(cls, value: str) -> str:
        return _checked("python", python_problem, value) or ""

    @model_validator(mode="after")
    def _one_kind(self) -> AppCreate:
        problem = app_kind_problem(self.executable, self.function, self.python)
        if problem:
            raise ValueError(problem)
        return self


class AppUpdate(BaseModel):
    """Fields of an app that may be changed after it is registered."""

    model_config = ConfigDict(extra="forbid")

    executable: str | None = None
    description: str | None = None
    preprocess: str | None = None
    postprocess: str | None = None
    envscript: str | None = None
    container: str | None = None
    function: str | None = None
    python: str | None = None

    @field_validator("container")
    @classmethod
    def _one_image(cls, value: str | None) -> str | None:
        return _checked("container", container_problem, value)

    @field_validator("function")
    @classmethod
    def _importable_form(cls, value: str | None) -> str | None:
        return _checked("function", function_problem, value)

    @field_validator("python")
    @classmethod
    def _one_program(cls, value: str | None) -> str | None:
        return _checked("python", python_problem, value)

    @model_validator(mode="after")
    def _storable(self) -> AppUpdate:
        problems = app_text_problems(self.__dict__)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AppOut(AppCreate):
    """An app as stored (a function app's executable shown as "", whatever the column holds)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: int

    @model_validator(mode="before")
    @classmethod
    def _no_stored_executable(cls, values: object) -> object:
        # The column holds FUNCTION_APP_EXECUTABLE for older launchers; it is not the app's.
        function = values.get("function") if isinstance(values, dict) else None
        if function is None and not isinstance(values, dict):
            function = getattr(values, "function", None)
        if not function:
            return values
        if not isinstance(values, dict):
            values = {name: getattr(values, name) for name in AppOut.model_fields}
        return {**values, "executable": ""}

"""App (ApplicationDefinition) models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from balsam.domain.commands import CommandError, split_words
from balsam.domain.text import field_problem

#: An app's text fields, checked for what cannot be stored or run (balsam.domain.text).
APP_TEXT_FIELDS = (
    "executable",
    "description",
    "preprocess",
    "postprocess",
    "envscript",
    "container",
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


def _checked_container(value: str | None) -> str | None:
    problem = container_problem(value) if value else None
    if problem:
        raise ValueError(f"container {problem}")
    return value


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
    """A new app: a name unique in the workflow database and an executable command."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    executable: str = Field(min_length=1)
    description: str = ""
    preprocess: str = ""
    postprocess: str = ""
    envscript: str = ""
    #: The container image the app's jobs run in ("": on the host); docs/containers.md.
    container: str = ""

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
        try:
            if not split_words(value, "executable"):
                raise ValueError("the executable is empty")
        except CommandError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("container")
    @classmethod
    def _one_image(cls, value: str) -> str:
        return _checked_container(value) or ""


class AppUpdate(BaseModel):
    """Fields of an app that may be changed after it is registered."""

    model_config = ConfigDict(extra="forbid")

    executable: str | None = None
    description: str | None = None
    preprocess: str | None = None
    postprocess: str | None = None
    envscript: str | None = None
    container: str | None = None

    @field_validator("container")
    @classmethod
    def _one_image(cls, value: str | None) -> str | None:
        return _checked_container(value)

    @model_validator(mode="after")
    def _storable(self) -> AppUpdate:
        problems = app_text_problems(self.__dict__)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AppOut(AppCreate):
    """An app as stored."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: int

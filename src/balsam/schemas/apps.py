"""App (ApplicationDefinition) models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from balsam.domain.commands import CommandError, split_words

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

    @field_validator("executable")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            if not split_words(value, "executable"):
                raise ValueError("the executable is empty")
        except CommandError as exc:
            raise ValueError(str(exc)) from None
        return value


class AppUpdate(BaseModel):
    """Fields of an app that may be changed after it is registered."""

    model_config = ConfigDict(extra="forbid")

    executable: str | None = None
    description: str | None = None
    preprocess: str | None = None
    postprocess: str | None = None
    envscript: str | None = None


class AppOut(AppCreate):
    """An app as stored."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: int

"""What a job or an app may hold: refused where it enters, with one line naming the field."""

from __future__ import annotations

import random
import shlex
from typing import Any

import pytest
from pydantic import ValidationError

from balsam.domain.commands import CommandError, split_words
from balsam.domain.text import LIMITS, patterns_problem
from balsam.schemas.apps import AppCreate, AppUpdate
from balsam.schemas.jobs import JobCreate


def job(**fields: Any) -> JobCreate:
    return JobCreate(**{"name": "j", "workflow": "w", "application": "A", **fields})


def refusal(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        job(**fields)
    (error,) = caught.value.errors()
    return str(error["msg"])


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"args": "a\x00b"}, "args contains a NUL byte"),
        ({"args": "caf\udce9"}, "args is not valid UTF-8 text"),
        ({"description": "\x00"}, "description contains a NUL byte"),
        ({"mpi_flags": "--x\x00"}, "mpi_flags contains a NUL byte"),
        ({"stage_in_url": "/data/\udcff"}, "stage_in_url is not valid UTF-8 text"),
        ({"environ_vars": {"X": "a\x00"}}, "environ_vars 'X' contains a NUL byte"),
        ({"environ_vars": {"X\x00": "a"}}, "environ_vars a name contains a NUL byte"),
        ({"environ_vars": {"A=B": "a"}}, "has the variable name 'A=B'"),
        ({"environ_vars": {"": "a"}}, "has the variable name ''"),
        ({"tags": {"k": "\udcff"}}, "tags 'k' is not valid UTF-8 text"),
        ({"data": {"x": object()}}, "data is not JSON"),
        ({"data": {"x": float("nan")}}, "data is not JSON"),
        ({"data": {"x": ["a\x00"]}}, "data contains a NUL character"),
        ({"data": {"x": "\udcff"}}, "data is not valid UTF-8 text"),
        ({"input_files": "a /etc/passwd"}, "input_files has the absolute pattern '/etc/passwd'"),
        ({"input_files": "~/x"}, "input_files has the absolute pattern '~/x'"),
        ({"input_files": "sub/../../x"}, "climbs out of the working directory"),
        ({"stage_out_files": "/etc/*"}, "stage_out_files has the absolute pattern '/etc/*'"),
        ({"stage_out_files": "a**"}, "'**' can only be a whole path component"),
        ({"workflow": ".."}, "workflow cannot be '..'"),
        ({"name": "."}, "name cannot be '.'"),
    ],
)
def test_a_job_field_that_cannot_be_stored_or_run_is_refused_naming_it(
    fields: dict[str, Any], says: str
) -> None:
    assert says in refusal(**fields)


def test_names_that_are_directories_or_paths_are_refused() -> None:
    for name in ("a/b", "../x", "a\nb", "a b", "\x00"):
        with pytest.raises(ValidationError):
            job(workflow=name)
        with pytest.raises(ValidationError):
            job(name=name)


def test_ordinary_jobs_are_accepted_unchanged() -> None:
    spec = job(
        args='--in \'a b\' "c\\"d" é',
        environ_vars={"OMP_NUM_THREADS": "4", "LANG": "C.UTF-8", "X": "=1"},
        data={"x": [1, 2.5, "é", None], "nested": {"a\\u0000": "literal backslash-u"}},
        input_files="*.dat sub/*.h5 ** .hidden",
        stage_out_files="out/**/*.txt",
        tags={"campaign": "été"},
        workflow="wf.v2",
        name="run..1",
    )
    assert spec.environ_vars["X"] == "=1"
    assert spec.data["nested"] == {"a\\u0000": "literal backslash-u"}


def test_fields_are_held_to_their_documented_limits() -> None:
    limit = LIMITS["args"]
    job(args="x" * limit)
    assert "args is 131,073 bytes, more than the 128 KiB allowed" in refusal(args="x" * (limit + 1))
    # Measured in UTF-8 bytes, not characters.
    assert "args is 131,074 bytes" in refusal(args="é" * (limit // 2 + 1))
    big_env = {f"V{i}": "x" * 1000 for i in range(1100)}
    assert "more than the 1 MiB allowed" in refusal(environ_vars=big_env)
    assert "data is" in refusal(data={"x": "y" * (1024 * 1024)})


def test_app_text_is_checked_when_registered_and_when_changed() -> None:
    with pytest.raises(ValidationError, match="executable contains a NUL byte"):
        AppCreate(name="A", executable="echo \x00")
    with pytest.raises(ValidationError, match="postprocess is not valid UTF-8"):
        AppCreate(name="A", executable="echo", postprocess="\udcff")
    with pytest.raises(ValidationError, match="envscript contains a NUL byte"):
        AppUpdate(envscript="a\x00")
    with pytest.raises(ValidationError, match="executable is"):
        AppCreate(name="A", executable="x" * (LIMITS["executable"] + 1))


def test_stored_jobs_are_not_checked_again() -> None:
    """Jobs read back were checked when written: a claim of thousands does not pay twice."""
    from balsam.schemas.jobs import STORED, JobFields

    values = job().model_dump(exclude={"job_id", "parents", "user_workdir", "created_by"})
    values["args"] = "a\x00b"  # only a direct write to the database could store this
    assert JobFields.model_validate(values, context=STORED).args == "a\x00b"


def test_patterns_problem_accepts_relative_globs() -> None:
    assert patterns_problem(["*", "a/b/*.txt", "**", "**/x", ".x", "a..b"]) is None


def test_quoted_text_splits_exactly_as_shlex() -> None:
    """The splitter of quoted text is ours (linear time): it must give shlex's words and
    refuse what shlex refuses, with the same reason."""
    rng = random.Random(11)
    alphabet = ["a", "b", " ", "\t", "\n", "\r", "'", '"', "\\", "$", "é", "\x0b", "x y"]
    compared = 0
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        try:
            expected: list[str] | str = shlex.split(text)
        except ValueError as exc:
            expected = str(exc)
        try:
            got: list[str] | str = split_words(text, "args")
        except CommandError as exc:
            got = str(exc).rsplit(": ", 1)[1]
        assert got == expected, repr(text)
        compared += 1
    assert compared == 20_000


def test_a_long_quoted_word_splits_whole() -> None:
    word = "x" * 10_000_000
    assert split_words(f"--data '{word}' \"{word}\"", "args") == ["--data", word, word]

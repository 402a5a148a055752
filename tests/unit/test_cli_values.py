"""CLI input handling without a database: value coercion, one-line errors, id widths."""

from __future__ import annotations

from typing import Any

import click
import pytest

from balsam.cli.common import BalsamCommand, id_width, parse_pairs, validated
from balsam.cli.jobs import job_fields
from balsam.cli.listing import job_conditions
from balsam.cli.modify import coerce_field
from balsam.errors import ValidationError
from balsam.schemas.jobs import INT_MAX, INT_MINIMUMS, JobCreate, JobFields


@pytest.mark.parametrize(
    ("attr", "text", "expected"),
    [
        ("num_nodes", "4", 4),
        ("wall_time_minutes", "0", 0),
        ("post_error_handler", "true", True),
        ("auto_timeout_retry", "0", False),
        ("wait_for_parents", "No", False),
        ("environ_vars", "A=1:B=2", {"A": "1", "B": "2"}),
        ("environ_vars", "PATH=/bin", {"PATH": "/bin"}),
        ("environ_vars", "", {}),
        ("data", '{"x": [1, 2]}', {"x": [1, 2]}),
        ("tags", '{"kind": "big"}', {"kind": "big"}),
        ("args", "--n 3 'two words'", "--n 3 'two words'"),
    ],
)
def test_modify_values_take_the_fields_type(attr: str, text: str, expected: Any) -> None:
    assert coerce_field(attr, text) == expected


@pytest.mark.parametrize(
    ("attr", "text", "message"),
    [
        ("num_nodes", "four", "num_nodes must be an integer (got 'four')"),
        ("post_error_handler", "maybe", "post_error_handler must be true or false"),
        ("data", "{not json", "data must be a JSON object"),
        ("tags", "[1, 2]", "tags must be a JSON object"),
        ("environ_vars", "NOEQUALS", "environ_vars: environment variable must be NAME=VALUE"),
        ("colour", "red", "unknown job attribute 'colour'"),
    ],
)
def test_bad_modify_values_are_one_line(attr: str, text: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        coerce_field(attr, text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_resource_errors_name_the_field_in_one_line() -> None:
    with pytest.raises(ValidationError) as info:
        validated(JobCreate, {"application": "a", "num_nodes": -1})
    assert str(info.value) == "num_nodes must be at least 1 (got -1)"


def test_field_errors_name_the_field_and_the_bad_value() -> None:
    with pytest.raises(ValidationError) as info:
        validated(JobCreate, {"application": "a", "name": "two words", "num_nodes": "two"})
    text = str(info.value)
    assert text.startswith("name: ")
    assert "'two words'" in text
    assert "num_nodes" in text
    assert "\n" not in text


def test_every_integer_job_field_has_bounds_that_the_databases_can_store() -> None:
    integers = {name for name, info in JobFields.model_fields.items() if info.annotation is int}
    assert set(INT_MINIMUMS) == integers
    assert INT_MAX == 2147483647  # PostgreSQL's integer; SQLite's INTEGER holds more
    with pytest.raises(ValidationError) as info:
        validated(JobCreate, {"application": "a", "wall_time_minutes": -5, "num_nodes": 2**31})
    assert str(info.value) == (
        "num_nodes must be at most 2147483647 (got 2147483648); "
        "wall_time_minutes must be at least 0 (got -5)"
    )


def test_job_options_map_to_balsam_fields() -> None:
    options = {
        "name": "hi",
        "workflow": "test",
        "application": "SayHello",
        "url_in": "local:/in",
        "url_out": "local:/out",
        "disable_timeout_retry": True,
        "env": ("A=1", "B=x=y"),
        "tag": ("size=big",),
        "parents": ("abc",),
        "yes": True,
    }
    fields = job_fields(options)
    assert fields == {
        "name": "hi",
        "workflow": "test",
        "application": "SayHello",
        "stage_in_url": "local:/in",
        "stage_out_url": "local:/out",
        "auto_timeout_retry": False,
        "environ_vars": {"A": "1", "B": "x=y"},
        "tags": {"size": "big"},
    }


def test_bad_env_and_tag_are_one_line() -> None:
    base = {"url_in": "", "url_out": "", "disable_timeout_retry": False, "tag": ()}
    with pytest.raises(ValidationError, match="--env"):
        job_fields({**base, "env": ("1BAD=2",)})
    with pytest.raises(ValidationError, match=r"--tag takes KEY=VALUE \(got 'novalue'\)"):
        parse_pairs(["novalue"], "--tag")


def test_state_filter_accepts_lists_and_refuses_unknown_states() -> None:
    conditions = job_conditions(None, " 3F2A", "run_error, failed", "wf1")
    assert conditions == {
        "job_id__startswith": "3f2a",
        "workflow": "wf1",
        "state__in": ["RUN_ERROR", "FAILED"],
    }
    with pytest.raises(ValidationError, match="unknown job state 'DONE'"):
        job_conditions(None, None, "DONE", None)


def test_id_width_grows_only_when_listed_ids_share_a_prefix() -> None:
    a = "3f2a1b4c-0000-4000-8000-000000000001"
    b = "3f2a1b4c-9000-4000-8000-000000000002"
    c = "77777777-0000-4000-8000-000000000003"
    assert id_width([a, c]) == 8
    assert id_width([a, b, c]) == 10
    assert id_width([]) == 8


def test_usage_errors_become_one_line() -> None:
    @click.command("demo", cls=BalsamCommand)
    @click.option("--count", type=int, required=True)
    def demo(count: int) -> None:
        """Demo."""

    with pytest.raises(ValidationError) as info:
        demo.make_context("demo", ["--count", "abc"])
    text = str(info.value)
    assert "'abc' is not a valid integer" in text
    assert "see 'balsam demo --help'" in text
    assert "\n" not in text
    with pytest.raises(ValidationError, match="Missing option '--count'"):
        demo.make_context("demo", [])

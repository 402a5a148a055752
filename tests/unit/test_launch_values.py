"""What a launch may be given: finite numbers in range, one-line text, quoted in its script."""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

import pytest

from balsam.errors import ValidationError
from balsam.launcher.options import LauncherOptions
from balsam.platform.schedulers import LaunchRequest
from balsam.platform.schedulers.base import script_text, script_value_problem


def request(tmp_path: Path, **changes: Any) -> LaunchRequest:
    """A valid launch request, with ``changes``."""
    fields: dict[str, Any] = {
        "project": "P", "queue": "Q", "wall_time_minutes": 5, "num_nodes": 1,
        "job_mode": "mpi", "site_path": tmp_path, "scripts_dir": tmp_path / "qsubmit",
        "balsam_argv": ["/venv/bin/balsam"],
    }  # fmt: skip
    return LaunchRequest(**(fields | changes))


@pytest.mark.parametrize("bad", ["p\nrm -rf x", "q\r", "a\x00b", "tab\there", "del\x7f", "\x85"])
@pytest.mark.parametrize("field", ["project", "queue", "wf_filter"])
def test_control_characters_never_reach_a_script(tmp_path: Path, field: str, bad: str) -> None:
    with pytest.raises(ValidationError, match="holds the control character"):
        request(tmp_path, **{field: bad})


def test_scheduler_flags_and_undecodable_text_are_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"scheduler flag '--x\\n'"):
        request(tmp_path, sched_flags=("--ok", "--x\n"))
    assert script_value_problem("proj\udcff") == "is not valid UTF-8 text"
    assert script_value_problem("my project; $(rm -rf ~) 'é'") is None


@pytest.mark.parametrize("minutes", [math.nan, math.inf, -math.inf, 0, -1, 1e12])
def test_a_wall_time_that_is_not_finite_and_in_range_is_refused(
    tmp_path: Path, minutes: float
) -> None:
    with pytest.raises(ValidationError, match="wall time must be above 0"):
        request(tmp_path, wall_time_minutes=minutes)


@pytest.mark.parametrize("nodes", [0, -1, 10**7])
def test_a_node_count_out_of_range_is_refused(tmp_path: Path, nodes: int) -> None:
    with pytest.raises(ValidationError, match="node count must be"):
        request(tmp_path, num_nodes=nodes)


def test_what_reaches_the_script_is_quoted(tmp_path: Path) -> None:
    hostile = request(tmp_path, project="a b; touch pwned", queue="q'$(id)", wf_filter="w f")
    text = script_text(hostile, [])
    comment = next(line for line in text.splitlines() if line.startswith("# Balsam launcher"))
    assert shlex.quote("a b; touch pwned") in comment
    assert shlex.quote("q'$(id)") in comment
    # Shebang, comment, export, cd, exec: no value added a line.
    assert len(text.splitlines()) == 5


@pytest.mark.parametrize("minutes", [math.nan, math.inf, -math.inf, 0.0, -5.0, 1e9])
def test_a_launcher_time_limit_must_be_finite_and_in_range(minutes: float) -> None:
    with pytest.raises(ValidationError, match="time_limit_minutes must be above 0"):
        LauncherOptions(time_limit_minutes=minutes)


def test_launcher_node_options_are_bounded() -> None:
    with pytest.raises(ValidationError, match="limit_nodes"):
        LauncherOptions(limit_nodes=0)
    with pytest.raises(ValidationError, match="offset_nodes"):
        LauncherOptions(offset_nodes=-1)
    assert LauncherOptions(time_limit_minutes=0.05, limit_nodes=2, offset_nodes=1)

"""Fuzzing what users type: the CLI and the Python API take any text and any number, and
either do what was asked or say why in one line, changing nothing.

Hypothesis draws values from strategies that lean on what breaks programs: NUL bytes, lone
surrogates (undecodable bytes, as ``surrogateescape`` carries them from a command line),
control characters, quotes and backslashes, path separators, ``..``, globs, very long words,
non-finite and huge numbers. Each example runs the real ``balsam`` entry point in this process
(``balsam.cli.main.main``) against a real SQLite workflow database, or the Python API, and
checks what a user sees: success, or exactly one ``balsam: error:`` line on stderr with no
traceback; and the database unchanged after a refusal.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from balsam.api import close_default_backend
from balsam.backends.base import Backend
from balsam.backends.factory import init_site, open_backend
from balsam.cli.main import main
from balsam.config import Site
from balsam.errors import BalsamError
from balsam.schemas.apps import AppCreate
from balsam.schemas.queries import JobQuery

#: Pieces that break naive programs, mixed with ordinary text.
NASTY = st.sampled_from(
    [
        "\x00",
        "\udcff",
        "\udc80",
        "\n",
        "\r",
        "\t",
        "\x1b[31m",
        "/",
        "..",
        ".",
        "~",
        "*",
        "**",
        "?",
        "[",
        "'",
        '"',
        "\\",
        " ",
        "=",
        "$(touch x)",
        "`x`",
        "é",
        "\u202e",
        "%d",
        "-",
        "--",
        "a" * 300,
    ]
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(NASTY, st.text(max_size=5)), max_size=8).map("".join),
    st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "", " 1", "1_000", "٣"]),
    TEXT,
)
#: Values of each kind that are fine, mixed in so that many examples get through and the
#: path that saves is fuzzed too (a field at a time going bad).


def mostly(fine: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``fine`` three times in four (one_of draws its branches evenly)."""
    return st.one_of(fine, fine, fine, bad)


NAME = mostly(st.from_regex(r"\A[A-Za-z0-9_.]{1,12}\Z"), TEXT)
COUNT = mostly(st.integers(min_value=0, max_value=100).map(str), NUMBER)
ARG_TEXT = mostly(st.from_regex(r"\A[a-z0-9 =*-]{0,20}\Z"), TEXT)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Site:
    made = init_site(tmp_path_factory.mktemp("fuzz") / "wf")
    monkeypatch.setenv("BALSAM_DB_PATH", str(made.path))
    monkeypatch.setenv("BALSAM_HOME", str(made.path.parent / "home"))
    return made


@pytest.fixture
def backend(site: Site) -> Iterator[Backend]:
    be = open_backend(site)
    be.create_app(AppCreate(name="A", executable="echo"))
    yield be
    be.close()
    close_default_backend()


def snapshot(be: Backend) -> tuple[int, int]:
    return be.count_jobs(JobQuery()), len(be.list_apps())


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    _, err = capsys.readouterr()
    return code, err


def check_outcome(code: int, err: str, before: tuple[int, int], after: tuple[int, int]) -> None:
    assert "Traceback" not in err, err
    event("accepted" if code == 0 else "refused")
    if code == 0:
        return
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("balsam: error: "), err
    assert after == before, "a refused command changed the database"


@FUZZ
@given(
    name=NAME,
    workflow=NAME,
    args=ARG_TEXT,
    env=st.tuples(st.one_of(st.just("X"), TEXT), ARG_TEXT),
    patterns=ARG_TEXT,
    url=ARG_TEXT,
    wall=COUNT,
    nodes=COUNT,
)
def test_balsam_job_takes_any_text_and_number(
    backend: Backend,
    capsys: pytest.CaptureFixture[str],
    name: str,
    workflow: str,
    args: str,
    env: tuple[str, str],
    patterns: str,
    url: str,
    wall: str,
    nodes: str,
) -> None:
    before = snapshot(backend)
    argv = [
        "job",
        "--name",
        name,
        "--workflow",
        workflow,
        "--application",
        "A",
        "--args",
        args,
        "--env",
        f"{env[0]}={env[1]}",
        "--input-files",
        patterns,
        "--url-in",
        url,
        "--wall-time-minutes",
        wall,
        "--num-nodes",
        nodes,
        "--yes",
    ]
    code, err = run_cli(capsys, argv)
    after = snapshot(backend)
    check_outcome(code, err, before, after)
    if code == 0:
        assert after == (before[0] + 1, before[1])
        (job,) = backend.query_jobs(JobQuery(order_by=["-created_at"], limit=1))
        assert (job.name, job.workflow, job.args) == (name, workflow, args)


@FUZZ
@given(name=NAME, executable=ARG_TEXT, post=ARG_TEXT)
def test_balsam_app_takes_any_text(
    backend: Backend, capsys: pytest.CaptureFixture[str], name: str, executable: str, post: str
) -> None:
    before = snapshot(backend)
    argv = ["app", "--name", name, "--executable", executable, "--postprocess", post]
    code, err = run_cli(capsys, argv)
    check_outcome(code, err, before, snapshot(backend))


@FUZZ
@given(
    attr=st.one_of(st.sampled_from(["args", "num_nodes", "state", "data", "name"]), TEXT),
    value=st.one_of(NUMBER, TEXT),
)
def test_balsam_modify_takes_any_attribute_and_value(
    backend: Backend, capsys: pytest.CaptureFixture[str], attr: str, value: str
) -> None:
    jobs = backend.query_jobs(JobQuery(limit=1))
    if not jobs:
        assert (
            run_cli(
                capsys, ["job", "--name", "m", "--workflow", "w", "--application", "A", "--yes"]
            )[0]
            == 0
        )
        jobs = backend.query_jobs(JobQuery(limit=1))
    job = jobs[0]
    before_job = backend.get_job(job.job_id)
    code, err = run_cli(capsys, ["modify", job.job_id, attr, value])
    assert "Traceback" not in err, err
    if code != 0:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("balsam: error: "), err
        assert backend.get_job(job.job_id) == before_job


@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "name": NAME,
            "workflow": NAME,
            "args": ARG_TEXT,
            "description": ARG_TEXT,
            "input_files": ARG_TEXT,
            "stage_out_files": ARG_TEXT,
            "environ_vars": st.dictionaries(TEXT, TEXT, max_size=3),
            "tags": st.dictionaries(TEXT, TEXT, max_size=3),
            "data": st.dictionaries(
                TEXT,
                st.one_of(TEXT, st.floats(), st.integers(), st.none(), st.sets(st.integers())),
                max_size=3,
            ),
            "num_nodes": st.one_of(st.integers(), st.floats(), TEXT),
            "wall_time_minutes": st.one_of(st.integers(), st.floats(), TEXT),
        },
    )
)
def test_the_python_api_saves_or_refuses_with_a_balsam_error(
    backend: Backend, fields: dict[str, object]
) -> None:
    from balsam.core.models import BalsamJob

    before = snapshot(backend)
    try:
        job = BalsamJob(application="A", **fields)
        job.save()
    except BalsamError as exc:
        event("refused")
        assert "\n" not in str(exc).strip() or "Traceback" not in str(exc)
        assert snapshot(backend) == before
        return
    event("saved")
    saved = backend.get_job(str(job.job_id))
    for key in ("name", "workflow", "args", "environ_vars", "tags"):
        if key in fields:
            assert getattr(saved, key) == fields[key]
    if "data" in fields:
        data = fields["data"]
        assert isinstance(data, dict)
        assert all(not (isinstance(v, float) and not math.isfinite(v)) for v in data.values())

"""Long-option prefixes and many-word options, as Balsam 0.5's argparse took them.

No database: the commands' argument lists are rewritten (``expand_prefixes``) or parsed by
Click in-process; what a user sees on a bad prefix is checked through ``balsam.cli.main``.
"""

from __future__ import annotations

from importlib.metadata import version

import click
import pytest

from balsam.cli.common import BalsamCommand, BalsamGroup, WordsOption, expand_prefixes
from balsam.cli.jobs import job_command
from balsam.cli.launch import launcher
from balsam.cli.listing import extra_fields, ls_command, ls_limit
from balsam.cli.main import _register, cli, main
from balsam.cli.modify import modify_command
from balsam.errors import ValidationError


def expand(command: click.Command, *args: str) -> list[str]:
    ctx = click.Context(command, info_name=command.name)
    return expand_prefixes(command, ctx, list(args))


def parsed(command: click.Command, *args: str) -> dict[str, object]:
    """The parameters Click gives ``command`` for ``args`` (no callback runs)."""
    ctx = command.make_context(command.name, list(args))
    return dict(ctx.params)


def _every_command() -> list[tuple[str, click.Command]]:
    _register()
    found: list[tuple[str, click.Command]] = [("balsam", cli)]
    stack: list[tuple[str, click.Command]] = [("balsam", cli)]
    while stack:
        path, command = stack.pop()
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                found.append((f"{path} {name}", sub))
                stack.append((f"{path} {name}", sub))
    return found


@pytest.mark.parametrize(("path", "command"), _every_command(), ids=lambda v: str(v))
def test_every_command_takes_prefixes(path: str, command: click.Command) -> None:
    kind = BalsamGroup if isinstance(command, click.Group) else BalsamCommand
    assert isinstance(command, kind), f"{path} is a plain {type(command).__name__}"


def test_argparse_prefixes_from_the_issue_resolve() -> None:
    assert expand(job_command, "--app", "SayHello") == ["--application", "SayHello"]
    assert expand(ls_command, "--hist", "--v") == ["--history", "--verbose"]
    assert expand(ls_command, "--by") == ["--by-states"]
    assert expand(ls_command, "--na=hi") == ["--name=hi"]


def test_a_value_is_never_read_as_an_option() -> None:
    # '--name --hist' names a job '--hist'; it is not the --history flag.
    assert expand(ls_command, "--name", "--hist", "--tr") == ["--name", "--hist", "--tree"]
    assert parsed(ls_command, "--name", "--hist")["history"] is False


def test_positionals_and_what_follows_double_dash_are_left_alone() -> None:
    assert expand(ls_command, "apps", "--v") == ["apps", "--verbose"]
    assert expand(ls_command, "--", "--hist") == ["--", "--hist"]


def test_a_group_expands_only_its_own_options() -> None:
    ctx = click.Context(cli, info_name="balsam")
    assert expand_prefixes(cli, ctx, ["--vers"], options_first=True) == ["--version"]
    assert expand_prefixes(cli, ctx, ["ls", "--hist"], options_first=True) == ["ls", "--hist"]


def test_spellings_of_one_option_are_not_ambiguous() -> None:
    # --post_handle_error and --post-handle-error are one flag.
    assert expand(job_command, "--post_handle_e") == ["--post_handle_error"]
    assert (
        parsed(job_command, "--name", "j", "--workflow", "w", "--application", "A", "--wall", "7")[
            "wall_time_minutes"
        ]
        == 7
    )


def test_an_ambiguous_prefix_names_the_candidates(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(click.UsageError, match="could be --name, --node-packing-count"):
        expand(job_command, "--n", "x")
    code = main(["job", "--n", "x"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err == (
        "balsam: error: option --n is ambiguous: it could be --name, --node-packing-count, "
        "--num-nodes; see 'balsam job --help'\n"
    )


def test_an_unknown_option_is_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "--xyzzy"]) == 2
    _out, err = capsys.readouterr()
    assert err == "balsam: error: No such option '--xyzzy'; see 'balsam ls --help'\n"


def test_version_short_and_long(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("-V", "--version", "--vers"):
        assert main([flag]) == 0
        assert capsys.readouterr().out == f"balsam {version('balsam')}\n"


def test_words_options_take_every_word_up_to_the_next_option() -> None:
    words = [p.name for p in job_command.params if isinstance(p, WordsOption)]
    assert sorted(words) == ["args", "description", "input_files", "mpi_flags", "stage_out_files"]
    params = parsed(
        job_command,
        "--name", "j", "--workflow", "w", "--app", "A",
        "--args", "-n", "10", "--verbose", "-5",
        "--description", "two", "words",
        "--mpi-flags", "--bind-to", "core",
        "--input-files", "*.dat", "geom???.xyz",
        "--stage-out-files", "*.h5", "*.log",
        "--yes",
    )  # fmt: skip
    assert params["args"] == "-n 10 --verbose -5"
    assert params["description"] == "two words"
    assert params["mpi_flags"] == "--bind-to core"
    assert params["input_files"] == "*.dat geom???.xyz"
    assert params["stage_out_files"] == "*.h5 *.log"
    assert params["yes"] is True


def test_words_options_keep_the_one_word_forms() -> None:
    base = ("--name", "j", "--workflow", "w", "--application", "A")
    assert parsed(job_command, *base, "--args", "-n 3")["args"] == "-n 3"
    # '=' takes one word as it is: the way to pass a word that is one of job's options.
    assert parsed(job_command, *base, "--args=--yes")["args"] == "--yes"
    # No word at all is an empty value, as argparse's nargs='*' gave.
    params = parsed(job_command, *base, "--args", "--yes")
    assert (params["args"], params["yes"]) == ("", True)
    # A prefix of one of job's options ends the words too.
    params = parsed(job_command, *base, "--args", "a", "--num", "2")
    assert (params["args"], params["num_nodes"]) == ("a", 2)


def test_modify_values_that_look_like_options_stay_values() -> None:
    params = parsed(modify_command, "3f2a", "args", "--steps 10", "--ty", "jobs")
    assert (params["value"], params["kind"]) == ("--steps 10", "jobs")


def test_launcher_takes_balsam_05_flags() -> None:
    params = parsed(
        launcher, "--consume", "--job-mode", "serial", "--persist",
        "--num-transition-threads", "5", "--gpus-per-node", "2",
    )  # fmt: skip
    assert params["consume_all"] and params["persistent"]
    assert (params["num_transition_threads"], params["gpus_per_node"]) == (5, 2)


def test_ls_fields_take_colons_or_commas_and_refuse_unknown_names() -> None:
    assert extra_fields("num_nodes:args") == ["num_nodes", "args"]
    assert extra_fields(" num_nodes, state ,") == ["num_nodes"]
    assert extra_fields("") == []
    with pytest.raises(ValidationError, match="BALSAM_LS_FIELDS names no job field 'nodes'"):
        extra_fields("nodes")


def test_ls_limit_is_a_positive_number_or_unset() -> None:
    assert ls_limit("") is None
    assert ls_limit("25") == 25
    for bad in ("0", "-3", "many", "2.5"):
        with pytest.raises(ValidationError, match="BALSAM_LS_LIMIT must be a whole number"):
            ls_limit(bad)

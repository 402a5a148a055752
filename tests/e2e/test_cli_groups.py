"""Command groups called without a subcommand show their help, as ``--help`` does (exit 0)."""

from __future__ import annotations

import subprocess

import click
import pytest

from balsam.cli.main import _register, cli, main

#: Groups that act when called bare: ``balsam service`` starts the service, as in Balsam 0.5
#: (tests/e2e/test_compat_cli.py).
ACTING_GROUPS = [["service"]]


def groups() -> list[list[str]]:
    """The argv of every command group that shows its help when called bare, the top-level
    ``balsam`` (empty argv) included."""
    _register()
    found: list[list[str]] = []
    pending: list[tuple[list[str], click.Group]] = [([], cli)]
    while pending:
        path, group = pending.pop()
        found.append(path)
        for name, command in sorted(group.commands.items()):
            if isinstance(command, click.Group):
                pending.append(([*path, name], command))
    return [path for path in found if path not in ACTING_GROUPS]


def test_the_groups_are_found() -> None:
    assert [] in groups()
    assert ["db"] in groups()


@pytest.mark.parametrize("argv", groups(), ids=lambda a: " ".join(["balsam", *a]))
def test_a_group_without_a_subcommand_prints_its_help(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.startswith(f"Usage: {' '.join(['balsam', *argv])} [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in out
    assert main([*argv, "--help"]) == 0
    assert capsys.readouterr().out == out


def test_an_unknown_subcommand_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "nosuch"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "balsam: error: No such command 'nosuch'; see 'balsam db --help'\n"


def test_the_installed_command_shows_the_help_of_db(balsam_bin: str) -> None:
    done = subprocess.run(
        [balsam_bin, "db"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert "upgrade" in done.stdout and "status" in done.stdout

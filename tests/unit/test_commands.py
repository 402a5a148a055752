"""Command rendering: no shell unless the app needs one; arguments never inject syntax."""

from __future__ import annotations

import pytest

from balsam.domain.commands import (
    CommandError,
    needs_shell,
    parse_env_assignments,
    render_command,
)


def test_quick_start_command_is_exec_without_shell() -> None:
    cmd = render_command("echo hello,", "'world!'")
    assert cmd.argv == ["echo", "hello,", "world!"]
    assert not cmd.shell


def test_shell_metacharacters_in_args_stay_literal() -> None:
    cmd = render_command("echo", "'a; rm -rf /' '$(id)'")
    assert cmd.argv == ["echo", "a; rm -rf /", "$(id)"]
    assert not cmd.shell


@pytest.mark.parametrize(
    ("executable", "expected"),
    [
        ("python sim.py --n=3", False),
        ("echo '$HOME'", False),
        ("echo $HOME", True),
        ("cat in | wc -l", True),
        ("ls *.dat", True),
        ('echo "$X"', True),
        ("a > b", True),
    ],
)
def test_needs_shell_detects_unquoted_syntax(executable: str, expected: bool) -> None:
    assert needs_shell(executable) is expected


def test_shell_app_quotes_each_argument() -> None:
    cmd = render_command("cat in | wc -l", "'x; reboot'")
    assert cmd.shell
    assert cmd.argv == ["/bin/sh", "-c", "cat in | wc -l 'x; reboot'"]


def test_envscript_is_sourced_first() -> None:
    cmd = render_command("simulate", "-n 2", envscript="/opt/env.sh")
    assert cmd.argv[2] == ". /opt/env.sh && simulate -n 2"


def test_unbalanced_quotes_are_an_error() -> None:
    with pytest.raises(CommandError, match="cannot parse args"):
        render_command("echo", "'oops")


def test_env_assignments() -> None:
    assert parse_env_assignments(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    assert parse_env_assignments(["A=1:B=2"]) == {"A": "1", "B": "2"}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_env_assignments(["1A=3"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_env_assignments(["novalue"])


def test_the_fast_split_gives_exactly_shlexs_words() -> None:
    """Text without quotes or escapes is split without shlex: the words must be the same,
    including for whitespace shlex does not split on (vertical tab, no-break space)."""
    import random
    import shlex

    from balsam.domain.commands import split_words

    rng = random.Random(7)
    alphabet = "ab c\t\n\r-=/\x0b\x0c\xa0é$*'\"\\"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        try:
            expected = shlex.split(text)
        except ValueError:
            continue
        assert split_words(text, "args") == expected, repr(text)


def test_a_ten_megabyte_word_splits_in_linear_time() -> None:
    from balsam.domain.commands import split_words

    word = "x" * 10_000_000
    assert split_words(f"--data {word}", "args") == ["--data", word]

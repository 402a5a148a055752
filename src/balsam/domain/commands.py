"""Rendering a job's command line from its app and arguments.

Jobs run without a shell: the app's executable and the job's args are split into argv with
POSIX shell quoting rules and exec'd directly, so no argument can inject shell syntax. A shell
is used only when the app itself asks for one: an envscript to source first, or shell syntax
(pipes, redirections, variables, globs) in its executable. In that case each argument token is
re-quoted before it reaches the shell, so arguments still cannot inject syntax.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass

#: Characters that mean the app's executable is shell code rather than a program and its flags.
SHELL_SYNTAX = frozenset("|&;<>()$`*?[]{}~\n")


class CommandError(ValueError):
    """An executable or argument string that cannot be parsed (unbalanced quotes)."""


def split_words(text: str, what: str) -> list[str]:
    """Split ``text`` like a POSIX shell would, or raise :class:`CommandError`."""
    return list(_split_cached(text, what))


#: What shlex.split treats as whitespace, and what makes it do more than split on it.
_SHELL_WHITESPACE = re.compile("[ \t\r\n]+")
_SHELL_SPECIAL = frozenset("'\"\\")


#: One piece of a word (or the whitespace between words), as a POSIX shell reads it: a
#: single-quoted string (all literal), a double-quoted one (a backslash escapes only ``"`` and
#: ``\\``), a backslash and the character it escapes, a run of plain characters. What no
#: alternative matches is a quote left open or a backslash at the very end.
_PIECE = re.compile(
    "|".join(
        (
            r"(?P<space>[ \t\r\n]+)",
            r"'(?P<single>[^']*)'",
            r'"(?P<double>[^"\\]*(?:\\.[^"\\]*)*)"',
            r"\\(?P<escaped>.)",
            r"(?P<plain>[^ \t\r\n'\"\\]+)",
        )
    ),
    re.DOTALL,
)
_DOUBLE_ESCAPE = re.compile(r'\\([\\"])')


@functools.lru_cache(maxsize=4096)
def _split_cached(text: str, what: str) -> tuple[str, ...]:
    # A campaign runs one app's executable (and often the same args) thousands of times.
    if _SHELL_SPECIAL.isdisjoint(text):
        # No quotes, no escapes: split on whitespace, as shlex does.
        return tuple(word for word in _SHELL_WHITESPACE.split(text) if word)
    return tuple(_split_quoted(text, what))


def _split_quoted(text: str, what: str) -> list[str]:
    """shlex.split's words (POSIX rules, no comments), in time linear in ``text``: shlex
    builds each word a character at a time, which takes seconds on a long quoted word."""
    words: list[str] = []
    pieces: list[str] = []
    in_word = False
    pos, end = 0, len(text)
    while pos < end:
        match = _PIECE.match(text, pos)
        if match is None:
            problem = (
                "No escaped character" if _ends_escaping(text, pos) else "No closing quotation"
            )
            raise CommandError(f"cannot parse {what} {_short(text)}: {problem}")
        pos = match.end()
        kind = match.lastgroup
        if kind == "space":
            if in_word:
                words.append("".join(pieces))
                pieces, in_word = [], False
            continue
        value = match.group(kind or "plain")
        if kind == "double":
            value = _DOUBLE_ESCAPE.sub(r"\1", value)
        pieces.append(value)
        in_word = True
    if in_word:
        words.append("".join(pieces))
    return words


_OPEN_DOUBLE_ENDING_IN_ESCAPE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*\\\Z', re.DOTALL)


def _ends_escaping(text: str, pos: int) -> bool:
    """Whether what cannot be read from ``pos`` is a backslash escaping nothing (at the end,
    outside quotes or inside open double quotes), as shlex tells it apart."""
    if text[pos] == "\\":
        return True
    return text[pos] == '"' and _OPEN_DOUBLE_ENDING_IN_ESCAPE.match(text, pos) is not None


def _short(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


def needs_shell(executable: str, envscript: str | None = None) -> bool:
    """True when the app sources an envscript or its executable holds unquoted shell syntax."""
    if envscript:
        return True
    quote: str | None = None
    escaped = False
    for ch in executable:
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote is not None:
            if ch == quote:
                quote = None
            elif quote == '"' and ch in "$`":
                return True
        elif ch in "'\"":
            quote = ch
        elif ch in SHELL_SYNTAX:
            return True
    return False


@dataclass(frozen=True)
class RenderedCommand:
    """What to exec: an argv, or one shell script line when the app needs a shell."""

    argv: list[str]
    shell: bool

    def display(self) -> str:
        """The command as a user would type it."""
        return self.argv[2] if self.shell else shlex.join(self.argv)


def render_command(executable: str, args: str, envscript: str | None = None) -> RenderedCommand:
    """Build the command for one run of ``executable`` with the job's ``args``."""
    arg_words = split_words(args, "args") if args else []
    if not needs_shell(executable, envscript):
        argv = split_words(executable, "executable") + arg_words
        if not argv:
            raise CommandError("the app's executable is empty")
        return RenderedCommand(argv=argv, shell=False)
    script = executable
    if arg_words:
        script += " " + shlex.join(arg_words)
    if envscript:
        script = f". {shlex.quote(envscript)} && {script}"
    return RenderedCommand(argv=["/bin/sh", "-c", script], shell=True)


def parse_env_assignments(items: list[str]) -> dict[str, str]:
    """Parse ``VAR=VALUE`` items (``--env``) into a dict, or raise ValueError."""
    env: dict[str, str] = {}
    for item in items:
        for part in _split_colon_list(item):
            name, sep, value = part.partition("=")
            if not sep or not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
                raise ValueError(f"environment variable must be NAME=VALUE, got {part!r}")
            env[name] = value
    return env


def _split_colon_list(item: str) -> list[str]:
    """Balsam accepted ``A=1:B=2`` in one --env; keep that, unless the value holds a path list."""
    if item.count("=") <= 1:
        return [item]
    return [p for p in item.split(":") if p]

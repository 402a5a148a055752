"""Helpers shared by the user-facing commands: backend lifetime, one-line errors, tables.

Every command opens the active workflow database with :func:`active_backend` and closes it on
the way out. Bad input becomes a :class:`balsam.errors.BalsamError`, which ``balsam.cli.main``
prints as one line; Click's own usage errors are turned into one as well by
:class:`BalsamCommand`, and a group called without a subcommand prints its help
(:class:`BalsamGroup`). Output goes through :func:`make_console`: plain text (no colours, no
markup interpretation) whenever stdout is not a terminal, so ``watch balsam ls`` and pipes see
only the table; :func:`show` prints it without trailing blanks.

Long options may be shortened to any unique prefix (``--app`` for ``--application``), as
Balsam 0.5's argparse allowed: :func:`expand_prefixes` rewrites them before Click parses, for
every :class:`BalsamCommand` and :class:`BalsamGroup`. A :class:`WordsOption` takes all the
words up to the next option (``--args -n 10 --verbose --yes``), as argparse's ``nargs='*'`` did.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.errors import ValidationError
from balsam.schemas.queries import JobQuery, clause_from_kwargs

#: Characters of a job id shown in tables (a uuid4 prefix this long is almost always unique).
SHORT_ID = 8
#: Width used when stdout is not a terminal and COLUMNS is unset: wide enough never to wrap.
PIPE_WIDTH = 400

M = TypeVar("M", bound=BaseModel)


class WordsOption(click.Option):
    """An option whose value is every following word up to the next option, joined by spaces.

    Balsam 0.5 declared ``--args``, ``--description``, ``--mpi-flags``, ``--input-files`` and
    ``--stage-out-files`` with argparse's ``nargs``, so ``--args a b c`` needed no quotes. A word
    ends the list only when it is an option of the same command (or a prefix of one), so
    ``--args -n 10 --verbose --yes`` gives the args ``-n 10 --verbose``; ``--args=WORDS`` takes
    exactly one word (the way to pass a word that is also an option of the command).
    """


def _option_names(command: click.Command, ctx: click.Context) -> dict[str, click.Option]:
    """Every option spelling of ``command`` (``-y``, ``--yes``, ``--no-x``) and its option."""
    names: dict[str, click.Option] = {}
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                names[name] = param
    return names


def _prefix_matches(head: str, names: dict[str, click.Option]) -> list[str]:
    """The long option names that ``head`` begins, one per option (its first spelling)."""
    found: dict[int, str] = {}
    for name in sorted(names):
        if name.startswith("--") and name.startswith(head):
            found.setdefault(id(names[name]), name)
    return sorted(found.values())


def _resolve_option(head: str, names: dict[str, click.Option], ctx: click.Context) -> str:
    """The full name of option ``head`` (itself when exact, unknown, or a short option).

    An unknown name is left for Click, which says there is no such option; a prefix of
    several options is a usage error naming them.
    """
    if head in names or not head.startswith("--") or head == "--":
        return head
    matches = _prefix_matches(head, names)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1 and not ctx.resilient_parsing:
        raise click.UsageError(f"option {head} is ambiguous: it could be {', '.join(matches)}", ctx)
    return head


def _ends_words(token: str, names: dict[str, click.Option]) -> bool:
    """Whether ``token`` ends a :class:`WordsOption`'s words: ``--`` or an option of the command."""
    if token == "--":
        return True
    if not token.startswith("-") or token == "-":
        return False
    head = token.partition("=")[0] if token.startswith("--") else token
    return head in names or (head.startswith("--") and bool(_prefix_matches(head, names)))


def _takes_value(option: click.Option) -> bool:
    return not option.is_flag and not option.count


def expand_prefixes(
    command: click.Command, ctx: click.Context, args: list[str], *, options_first: bool = False
) -> list[str]:
    """``args`` with each long option prefix written in full and each :class:`WordsOption`'s
    words gathered into one ``--option=WORDS`` argument.

    Values are never read as options (the word after ``--name`` is its value, whatever it
    looks like). ``options_first``: stop at the first positional argument (a group's
    subcommand, whose own options are not the group's).
    """
    names = _option_names(command, ctx)
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--" or not token.startswith("-") or token == "-":
            out.append(token)
            if token == "--" or options_first:
                out.extend(args[i:])
                break
            continue
        head, eq, value = token.partition("=") if token.startswith("--") else (token, "", "")
        full = _resolve_option(head, names, ctx)
        option = names.get(full)
        if option is None:
            out.append(token)
        elif isinstance(option, WordsOption) and not eq:
            words = []
            while i < len(args) and not _ends_words(args[i], names):
                words.append(args[i])
                i += 1
            out.append(f"{full}={' '.join(words)}")
        else:
            out.append(f"{full}={value}" if eq else full)
            if not eq and _takes_value(option):
                out.extend(args[i : i + option.nargs])
                i += option.nargs
    return out


class BalsamCommand(click.Command):
    """A Click command whose usage errors become one line naming the fix.

    Click prints a usage error as four lines (usage, hint, blank, error); Balsam prints every
    bad input as one line, so the error is re-raised as a :class:`ValidationError`. Long
    options may be given by a unique prefix (:func:`expand_prefixes`).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse ``args`` once option prefixes are written in full."""
        return super().parse_args(ctx, expand_prefixes(self, ctx, args))

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """Parse ``args``; a usage error becomes a one-line ValidationError."""
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            message = exc.format_message().strip().rstrip(".")
            # The whole path: 'balsam queue rm', not 'balsam rm', for a group's command.
            path = f"{parent.command_path} {info_name}" if parent else f"balsam {info_name}"
            raise ValidationError(f"{message}; see '{path} --help'") from None


class BalsamGroup(click.Group):
    """A Click group that, called without a subcommand, prints its help on stdout (exit 0).

    Click reports a bare group as a usage error, which Balsam would print as many lines on
    stderr. Asking a group what it offers is not an error (``git remote`` answers too), so
    every group (``balsam``, ``balsam db``) shows its help, as with ``--help``. Its own options
    may be given by a unique prefix, and the commands and groups it makes are Balsam's too.
    """

    command_class = BalsamCommand
    group_class = type

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse ``args``; none at all means: show the help and stop."""
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            click.echo(ctx.get_help())
            ctx.exit()
        return super().parse_args(ctx, expand_prefixes(self, ctx, args, options_first=True))


@contextmanager
def active_backend() -> Iterator[tuple[Site, Backend]]:
    """The active site and its Backend, closed when the block ends."""
    # Imported here: SQLAlchemy and Alembic take most of the start-up time of commands such as
    # 'balsam which' (run by every balsamactivate) that never open the database.
    from balsam.backends.factory import open_active_backend

    site, backend = open_active_backend()
    try:
        yield site, backend
    finally:
        backend.close()


@contextmanager
def client_backend() -> Iterator[tuple[Site | None, Backend]]:
    """The Backend of a command that needs no site directory (listing, adding and changing
    jobs and apps, waiting), and the active site if there is one: without one, the server of
    ``BALSAM_URL`` or of the saved ``balsam login``. Closed when the block ends."""
    from balsam.backends.factory import open_client_backend

    site, backend = open_client_backend()
    try:
        yield site, backend
    finally:
        backend.close()


def validation_message(exc: PydanticValidationError, limit: int = 3) -> str:
    """One line describing what pydantic refused, naming each field."""
    parts = []
    for err in exc.errors()[:limit]:
        field = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if field:
            msg = f"{field}: {msg} (got {_short_repr(err.get('input'))})"
        parts.append(msg)
    extra = exc.error_count() - limit
    if extra > 0:
        parts.append(f"and {extra} more")
    return "; ".join(parts)


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validated(model: type[M], data: dict[str, Any]) -> M:
    """``model`` built from ``data``, or a one-line ValidationError."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(validation_message(exc)) from None


def job_query(order_by: list[str] | None = None, **conditions: Any) -> JobQuery:
    """A job query from Django-style keyword conditions (``name__icontains=...``)."""
    clauses = [clause_from_kwargs(conditions)] if conditions else []
    return JobQuery(clauses=clauses, order_by=order_by or [])


def id_width(ids: Iterable[str]) -> int:
    """Shortest prefix length (at least :data:`SHORT_ID`) that tells ``ids`` apart."""
    unique = set(ids)
    width = SHORT_ID
    while width < 36 and len({i[:width] for i in unique}) < len(unique):
        width += 1
    return width


def make_console() -> Console:
    """A console on stdout: colours only on a terminal, never wrapped into a pipe."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=PIPE_WIDTH if piped else None, markup=False, highlight=False, emoji=False)


def show(renderable: RenderableType) -> None:
    """Print a Rich table or tree on stdout, without the spaces Rich pads each line with.

    Rich pads every cell to its column's width, the last one included; trailing blanks make
    ``diff``, ``grep ' $'`` and copy-paste of the output awkward, so they are cut here.
    """
    console = make_console()
    lines = []
    for segments in console.render_lines(renderable, pad=False):
        line = Text()
        for segment in segments:
            if not segment.control:
                line.append(segment.text, segment.style)
        line.rstrip()
        lines.append(line)
    console.print(Text("\n").join(lines), soft_wrap=True)


def make_table(*columns: str, title: str | None = None) -> Table:
    """A borderless table with a ruled header: easy to read and to grep."""
    table = Table(
        box=box.SIMPLE,
        show_edge=False,
        pad_edge=False,
        title=title,
        title_justify="left",
        header_style="bold",
    )
    for column in columns:
        # A header is never cut: on a narrow terminal the cells fold instead.
        table.add_column(column, overflow="fold", min_width=len(column))
    return table


def print_rows(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print a table of one-line cells in the look of :func:`make_table`, fast.

    Rich measures every cell, which takes seconds for the 10^4-10^5 jobs of a big campaign;
    ``balsam ls`` under ``watch`` must stay quick, so plain rows are padded here instead.
    """
    table = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]
    header = lines[0]
    if sys.stdout.isatty() and "NO_COLOR" not in os.environ:
        header = click.style(header, bold=True)
    rule = "─" * (sum(widths) + 3 * (len(widths) - 1))
    click.echo("\n".join([header, rule, *lines[1:]]))


def format_time(value: datetime) -> str:
    """A timestamp in local time to the second (stored times are UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_value(value: Any) -> str:
    """A field's value as a user would type it."""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if value is None:
        return ""
    return str(value)


def parse_pairs(items: Iterable[str], option: str) -> dict[str, str]:
    """``KEY=VALUE`` items of a repeatable option as a dict, or a one-line ValidationError."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"{option} takes KEY=VALUE (got {item!r})")
        pairs[key.strip()] = value
    return pairs


def workflow_names(backend: Backend, conditions: dict[str, Any]) -> list[str]:
    """Distinct workflow names of the jobs matching ``conditions``, in order: each found by one
    indexed query for the next name (no scan of every job)."""
    names: list[str] = []
    while True:
        wanted = dict(conditions)
        if names:
            wanted["workflow__gt"] = names[-1]
        query = JobQuery(clauses=[clause_from_kwargs(wanted)], order_by=["workflow"], limit=1)
        found = backend.query_jobs(query)
        if not found:
            return names
        names.append(found[0].workflow)


def select_workflows(backend: Backend, wf: str, ignore_case: bool = False) -> list[str]:
    """The workflows ``--wf WF`` / ``--wf-filter WF`` select: WF itself when a job has that
    workflow, else every workflow whose name contains WF (Balsam 0.5 matched substrings),
    else WF (nothing yet; jobs added to WF later are its).

    Exact first, so a new user's ``--wf sims`` never takes ``sims-old`` in too, while a 0.5
    user's ``--wf sim`` still finds ``sim_a`` and ``sim_b``.
    ``ignore_case``: the substring is matched regardless of case (0.5's ``balsam ls --wf``).
    """
    # Whether any job has it: the first one found in the workflow index (ordered by the
    # indexed column so the database stops there), not a count of all of them (a million-job
    # workflow took seconds to count).
    first = JobQuery(clauses=[clause_from_kwargs({"workflow": wf})], order_by=["workflow"], limit=1)
    if backend.query_jobs(first):
        return [wf]
    lookup = "workflow__icontains" if ignore_case else "workflow__contains"
    return workflow_names(backend, {lookup: wf}) or [wf]

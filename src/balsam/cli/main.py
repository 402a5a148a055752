"""Entry point of the ``balsam`` command: assembles the command groups, maps errors to exits."""

from __future__ import annotations

import logging
import os
import sys

import click

from balsam.cli.common import BalsamGroup
from balsam.domain.text import is_utf8
from balsam.errors import BalsamError


# -V as in Balsam 0.5, which printed "balsam VERSION".
@click.group(cls=BalsamGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    None, "-V", "--version", package_name="balsam", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Balsam: run large campaigns of application runs on HPC machines."""


def _register() -> None:
    from balsam.cli import (
        commands,
        db,
        launch,
        login,
        queues,
        report,
        server,
        service,
        status,
        transfer,
    )

    modules = (commands, db, launch, login, queues, report, server, service, status, transfer)
    for module in modules:
        for command in module.COMMANDS:
            cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a BalsamError becomes one line on stderr and its exit code."""
    _register()
    undecodable = _first_undecodable(sys.argv[1:] if argv is None else argv)
    if undecodable is not None:
        click.echo(f"balsam: error: argument {undecodable!r} is not valid UTF-8 text", err=True)
        return 2
    logging.basicConfig(level=os.environ.get("BALSAM_LOG_LEVEL", "WARNING"), format="%(message)s")
    try:
        result = cli.main(args=argv, prog_name="balsam", standalone_mode=False)
    except BalsamError as exc:
        if os.environ.get("BALSAM_CLI_TRACEBACK") == "1":
            raise
        click.echo(f"balsam: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("balsam: aborted", err=True)
        return 1
    except click.UsageError as exc:
        hint = f"; see '{exc.ctx.command_path} --help'" if exc.ctx else ""
        click.echo(f"balsam: error: {exc.format_message().rstrip('.')}{hint}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"balsam: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    # Without standalone mode Click returns ctx.exit(code) codes instead of exiting.
    return result if isinstance(result, int) else 0


def _first_undecodable(argv: list[str]) -> str | None:
    """The first argument holding bytes that are not UTF-8 (decoded by Python as lone
    surrogates): nothing Balsam stores or runs can hold it, and printing it would fail."""
    return next((arg for arg in argv if not is_utf8(arg)), None)


if __name__ == "__main__":
    sys.exit(main())

"""``balsam login [URL]`` and ``balsam logout``: a client of a Balsam server without a site.

After ``balsam login http://HOST:PORT/db/NAME`` the commands that need no site directory
(``ls``, ``job``, ``app``, ``kill``, ``modify``, ``rm``, ``wait``, ``status``) and the Python
API reach that database through the server, as long as neither ``BALSAM_URL`` nor
``BALSAM_DB_PATH`` is set (see :mod:`balsam.backends.login` for the files kept).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from balsam.backends.login import remove_login, save_login
from balsam.backends.remote import (
    RemoteBackend,
    client_remote,
    read_token_file,
    remote_from_login,
)
from balsam.cli.common import BalsamCommand, format_time, print_rows
from balsam.errors import ConfigError, ValidationError
from balsam.schemas.remote import Identity


@click.command("login", cls=BalsamCommand)
@click.argument("url", required=False)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the token from this file (its first line; mode 0600) instead of asking.",
)
@click.option(
    "--ca-bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Check an https server's certificate against this PEM file, not the system's CAs.",
)
def login_command(url: str | None, token_file: Path | None, ca_bundle: Path | None) -> None:
    """Keep a server's database URL and a token for the commands that follow.

    The token is read from --token-file, from standard input when that is not a terminal, or
    asked for without echo; never from the command line, where the process list shows it.
    It is checked with the server before anything is saved. Without URL: show the login.

    \b
    Examples:
      balsam login https://balsam.example.org/db/campaign
      balsam login http://127.0.0.1:8000/db/campaign --token-file ~/.balsam-token
      echo "$TOKEN" | balsam login http://127.0.0.1:8000/db/campaign
      balsam login
    """
    if url is None:
        if token_file is not None or ca_bundle is not None:
            raise ValidationError("--token-file and --ca-bundle need the URL to log in to")
        _show_login()
        return
    if ca_bundle is not None and not ca_bundle.is_file():
        raise ConfigError(f"CA bundle {ca_bundle} does not exist")
    token = read_token_file(token_file) if token_file is not None else _ask_token()
    me = _check(RemoteBackend(url, token, ca_bundle=ca_bundle))
    save_login(url.rstrip("/"), token, ca_bundle.resolve() if ca_bundle else None)
    click.echo(f"Logged in to {url.rstrip('/')} as {me.user} ({me.role}){_expiry(me)}")


@click.command("logout", cls=BalsamCommand)
def logout_command() -> None:
    """Forget the saved login (the token stays valid on the server: revoke it there)."""
    click.echo("Logged out" if remove_login() else "No login was saved")


def _ask_token() -> str:
    if sys.stdin.isatty():
        token = str(click.prompt("Token", hide_input=True, default="", show_default=False))
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise ValidationError("no token given (pipe it in, type it, or use --token-file)")
    return token


def _check(backend: RemoteBackend) -> Identity:
    """Who the server says the token is (AccessDenied, unreachable: the command fails)."""
    try:
        return backend.whoami()
    finally:
        backend.close()


def _show_login() -> None:
    backend = remote_from_login()
    if backend is None:
        raise ConfigError("not logged in: run 'balsam login URL'")
    url = backend.url
    me = _check(backend)
    click.echo(f"Logged in to {url} as {me.user} ({me.role}){_expiry(me)}")


def _expiry(me: Identity) -> str:
    return f"; the token expires {format_time(me.token_expires)}" if me.token_expires else ""


_ROLES = click.Choice(["owner", "submitter", "viewer"])


@click.command("grant", cls=BalsamCommand)
@click.argument("user")
@click.argument("role", type=_ROLES)
def grant_command(user: str, role: str) -> None:
    """Give USER the ROLE on the server's database you are an owner of (replacing any).

    USER must exist on the server (its admin adds users: 'balsam server add-user').

    \b
    Examples:
      balsam grant bob submitter
      balsam grant carol viewer
    """
    with _owner_session() as server:
        server.grant(user, role)
        click.echo(f"{user} is {role} of {_name(server)}")


@click.command("revoke", cls=BalsamCommand)
@click.argument("user")
def revoke_command(user: str) -> None:
    """Take USER's role on the server's database away."""
    with _owner_session() as server:
        server.revoke_grant(user)
        click.echo(f"{user} has no role on {_name(server)}")


@click.command("grants", cls=BalsamCommand)
def grants_command() -> None:
    """Who holds which role on the server's database (owners may see it)."""
    with _owner_session() as server:
        rows = [(g.user, g.role) for g in server.grants()]
    print_rows(("USER", "ROLE"), rows)


@contextmanager
def _owner_session() -> Iterator[RemoteBackend]:
    """The RemoteBackend of BALSAM_URL or the login (ConfigError for a local database)."""
    server = client_remote()
    if server is None:
        raise ConfigError(
            "roles are given on a Balsam server: set BALSAM_URL or run 'balsam login URL' "
            "(on the server's machine, 'balsam server grant' works without one)"
        )
    try:
        yield server
    finally:
        server.close()


def _name(server: RemoteBackend) -> str:
    """The database's name in the server's URL."""
    return server.url.rsplit("/db/", 1)[1]


COMMANDS: list[click.Command] = [
    login_command,
    logout_command,
    grant_command,
    revoke_command,
    grants_command,
]

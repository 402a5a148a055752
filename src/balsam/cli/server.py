"""``balsam server start|add-user|grant|revoke|users|audit``, ``balsam token create|list|revoke``.

The edge service (docs/server.md). The admin commands act on the server's state directory
(``--state DIR``, default ``~/.balsam/server``) directly, on the machine that runs the server:
they need no running server and no token. This is the one CLI module that imports
:mod:`balsam.server` (import-linter keeps it so); the server itself needs the ``server`` extra.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from balsam.cli.common import BalsamGroup, format_time, print_rows
from balsam.config import Site, load_site
from balsam.errors import ConfigError, ValidationError
from balsam.server.auth import AuditEvent, AuthStore, Role

_STATE_HELP = "The server's state directory (users, tokens, grants). [default: ~/.balsam/server]"
_ROLES = click.Choice(["owner", "submitter", "viewer"])


def _state_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--state", "state", type=click.Path(file_okay=False, path_type=Path), help=_STATE_HELP
    )(func)


def _store(state: Path | None, create: bool = False) -> AuthStore:
    """The auth store; only ``add-user`` may create it."""
    return AuthStore.open(state, create=create)


@click.group("server", cls=BalsamGroup)
def server_group() -> None:
    """The edge service: workflow databases over HTTP, with users and tokens."""


@server_group.command("start")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serve HTTPS with this certificate (PEM); needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The certificate's private key (PEM, mode 0600).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes sharing the port (about one per core for many clients).",
)
@click.option(
    "--max-wait",
    default=25.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Longest wait_for_change long-poll, seconds: keep it below a reverse proxy's read "
    "timeout.",
)
@_state_option
def server_start(
    paths: tuple[Path, ...],
    host: str,
    port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    workers: int,
    max_wait: float,
    state: Path | None,
) -> None:
    """Serve the workflow databases at PATHS (the active one by default), in the foreground."""
    if (tls_cert is None) != (tls_key is None):
        raise ValidationError("--tls-cert and --tls-key go together")
    try:
        from balsam.server.app import serve
        from balsam.server.deps import Limits
    except ImportError as exc:
        raise ConfigError(
            f"the server needs FastAPI and uvicorn: pip install 'balsam[server]' ({exc})"
        ) from None
    sites: list[Site] = [load_site(p) for p in paths] if paths else [load_site()]
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    serve(sites, state, host, port, tls, Limits(max_wait_seconds=max_wait), workers)


@server_group.command("add-user")
@click.argument("name")
@click.option("--days", default=30.0, show_default=True, help="Lifetime of its first token.")
@_state_option
def add_user(name: str, days: float, state: Path | None) -> None:
    """Create user NAME and print its first token (shown only this once)."""
    token = _store(state, create=True).add_user(name, days=days)
    click.echo(token)
    click.echo(f"user {name} created; grant it a role with 'balsam server grant'", err=True)


@server_group.command("grant")
@click.argument("user")
@click.argument("role", type=_ROLES)
@click.option("--db", "db_name", required=True, help="The workflow database (its name).")
@_state_option
def grant(user: str, role: str, db_name: str, state: Path | None) -> None:
    """Give USER the ROLE on one workflow database (replacing the role it had)."""
    _store(state).grant(user, Role(role), db_name)
    click.echo(f"{user} is {role} of {db_name}")


@server_group.command("revoke")
@click.argument("user")
@click.option("--db", "db_name", required=True, help="The workflow database (its name).")
@_state_option
def revoke(user: str, db_name: str, state: Path | None) -> None:
    """Take away USER's role on one workflow database."""
    _store(state).revoke_grant(user, db_name)
    click.echo(f"{user} has no role on {db_name}")


@server_group.command("users")
@_state_option
def users(state: Path | None) -> None:
    """Every user and its roles."""
    store = _store(state)
    roles: dict[str, list[str]] = {name: [] for name in store.users()}
    for user, db_name, role in store.grants():
        roles.setdefault(user, []).append(f"{db_name}:{role}")
    print_rows(["user", "roles"], [(u, " ".join(r) or "-") for u, r in roles.items()])


_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date or time (local time unless it names its zone) or an age,
    ``90s``, ``30m``, ``12h``, ``7d`` (ValidationError otherwise)."""
    ago = _AGO.match(text.strip())
    if ago:
        delta = timedelta(**{_UNITS[ago.group(2)]: float(ago.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            f"--since {text!r}: give an ISO date or time (2024-05-01, 2024-05-01T12:00) "
            "or an age (30m, 12h, 7d)"
        ) from None
    return when if when.tzinfo else when.astimezone()


def _audit_row(event: AuditEvent) -> tuple[str, ...]:
    request = f"{event.method} {event.path}" if event.method else ""
    what = f"{event.event} {event.status}" if event.status else event.event
    return (
        format_time(event.at), what, event.user or "-", event.db or "-", event.role or "-",
        event.needed or "-", request, "-" if event.token_id is None else str(event.token_id),
        event.detail,
    )  # fmt: skip


@server_group.command("audit")
@click.option("--since", default=None, help="From this time (ISO) or age (30m, 12h, 7d) on.")
@click.option("--user", default=None, help="Only this user's rows.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1), help="The newest N rows."
)
@_state_option
def audit(since: str | None, user: str | None, limit: int, state: Path | None) -> None:
    """Denials (401, 403) and admin changes, oldest first: the newest LIMIT of them."""
    start = parse_since(since) if since is not None else None
    events = _store(state).audit(since=start, user=user, limit=limit)
    print_rows(
        ["time", "event", "user", "db", "role", "needed", "request", "token", "detail"],
        [_audit_row(e) for e in events],
    )


@click.group("token", cls=BalsamGroup)
def token_group() -> None:
    """API tokens of the edge service's users (on the server's machine)."""


@token_group.command("create")
@click.argument("user")
@click.option("--days", default=30.0, show_default=True, help="Lifetime of the token.")
@click.option("--label", default="", help="A note to tell tokens apart.")
@_state_option
def token_create(user: str, days: float, label: str, state: Path | None) -> None:
    """Make a new token for USER and print it (shown only this once)."""
    token_id, token = _store(state).create_token(user, days=days, label=label)
    click.echo(token)
    click.echo(f"token {token_id} of {user} created", err=True)


@token_group.command("list")
@click.option("--user", default=None, help="Only this user's tokens.")
@_state_option
def token_list(user: str | None, state: Path | None) -> None:
    """Tokens (never their values): id, user, label, expiry, state."""
    now = datetime.now(UTC)
    rows = [
        (str(t.id), t.user, t.label, t.expires_at.strftime("%Y-%m-%d %H:%M"), t.state(now))
        for t in _store(state).list_tokens(user)
    ]
    print_rows(["id", "user", "label", "expires", "state"], rows)


@token_group.command("revoke")
@click.argument("token_id", type=int)
@_state_option
def token_revoke(token_id: int, state: Path | None) -> None:
    """Revoke the token TOKEN_ID (requests with it get 401 from now on)."""
    _store(state).revoke_token(token_id)
    click.echo(f"token {token_id} revoked")


COMMANDS: list[click.Command] = [server_group, token_group]

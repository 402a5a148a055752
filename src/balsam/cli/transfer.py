"""``balsam transfer login``: the Globus native-app login for globus:// staging URLs.

It prints a Globus sign-in URL, reads the code the browser shows, and saves the refresh
tokens in ``transfer.globus_tokens_file`` of the active workflow database (mode 0600);
launchers refresh the access token from it (docs/data-movement.md).
"""

from __future__ import annotations

import click

from balsam.cli.common import BalsamGroup
from balsam.config import load_site


@click.group("transfer", cls=BalsamGroup)
def transfer_group() -> None:
    """Data movement: sign in to Globus for globus:// stage-in and stage-out URLs."""


@transfer_group.command("login")
def transfer_login() -> None:
    """Sign in to Globus (native app) and save the refresh tokens for launchers."""
    from balsam.platform.transfer import globus_auth

    site = load_site()
    path = globus_auth.login(
        site.settings.transfer,
        ask=lambda prompt: click.prompt(prompt.rstrip(": "), prompt_suffix=": "),
        say=click.echo,
    )
    click.echo(f"Globus tokens saved in {path} (mode 0600)")


COMMANDS = [transfer_group]

"""The user-facing commands: apps, jobs, dependencies, listing, changes, removal, logs, wait,
events."""

from __future__ import annotations

import click

from balsam.cli.apps import app_command
from balsam.cli.events import events_command
from balsam.cli.jobs import (
    dep_command,
    job_command,
    kill_command,
    killjob_command,
    make_dummies_command,
    mkchild_command,
)
from balsam.cli.listing import log_command, ls_command
from balsam.cli.modify import modify_command, rm_command
from balsam.cli.wait import wait_command

COMMANDS: list[click.Command] = [
    app_command,
    job_command,
    dep_command,
    ls_command,
    modify_command,
    rm_command,
    kill_command,
    killjob_command,
    mkchild_command,
    make_dummies_command,
    log_command,
    wait_command,
    events_command,
]

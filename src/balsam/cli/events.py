"""``balsam events``: the workflow database's job events (state changes and notes), in the
order they were recorded, optionally followed as they happen.

One line per event: its id, local time, job id (8 characters), workflow, the change and the
message; ``--json`` prints each event as one JSON object instead (for scripts). Without
``--follow`` it prints the events after ``--after`` (default: from the first) and exits; with
it, it keeps printing (from now on, unless ``--after`` says where to start) until Ctrl-C.
Against a server (``BALSAM_URL``) it follows the server's event stream, which reconnects by
itself after a lost connection; locally it reads the event log when the change signal moves.
An event's id is where ``--after`` resumes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import click

from balsam.backends.base import Backend
from balsam.backends.stream import PAGE, follow_events
from balsam.cli.common import BalsamCommand, active_backend, format_time
from balsam.schemas.jobs import StreamEvent

#: The pause before reading again when a transaction in flight held a page back.
HELD_PAUSE = 0.05


@click.command("events", cls=BalsamCommand)
@click.option("--wf", help="Only events of this workflow's jobs (its exact name).")
@click.option(
    "--after",
    type=click.IntRange(min=0),
    default=None,
    help="Start after this event id [default: the first; with --follow, now].",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing events as they happen.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
def events_command(wf: str | None, after: int | None, follow: bool, as_json: bool) -> None:
    """Print job events (state changes and notes) in the order they were recorded.

    \b
    Examples:
      balsam events --follow
      balsam events --wf test --after 1200
      balsam events -f --json | jq .to_state
    """
    with active_backend() as (_site, backend):
        events = follow_events(backend, after, wf) if follow else _recorded(backend, after, wf)
        try:
            for event in events:
                click.echo(event.model_dump_json() if as_json else line(event))
                sys.stdout.flush()
        except KeyboardInterrupt:
            click.echo("")
        except BrokenPipeError:
            # The reader left (``| head``, ``| grep -m1``): done. Python's docs' recipe, so the
            # flush at exit does not fail again on the closed pipe.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _recorded(backend: Backend, after: int | None, workflow: str | None) -> Iterator[StreamEvent]:
    """The events recorded so far after ``after``, page by page."""
    cursor = after or 0
    while True:
        page = backend.events_since(cursor, PAGE, workflow)
        yield from page.events
        cursor = page.cursor
        if not page.more:
            return
        if not page.events:
            time.sleep(HELD_PAUSE)  # a transaction in flight holds the next id


def line(event: StreamEvent) -> str:
    """One event as a line of text."""
    change = f"{event.from_state or '-'} -> {event.to_state}"
    if event.from_state == event.to_state:
        change = f"{event.to_state} (note)"
    text = f"{event.id}  {format_time(event.timestamp)}  {event.job_id[:8]}  {event.workflow}"
    return f"{text}  {change}  {event.message}".rstrip()

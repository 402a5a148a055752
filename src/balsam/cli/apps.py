"""``balsam app``: register an application (Balsam 0.x's flags)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from balsam.cli.common import BalsamCommand, WordsOption, client_backend, validated
from balsam.schemas.apps import AppCreate


def _absolute(path: str) -> str:
    """A script path made absolute: jobs run in their own working directories."""
    if not path:
        return path
    return str(Path(path).expanduser().absolute())


def _image(image: str) -> str:
    """A container image that is a file or directory here made absolute (jobs run in their
    own directories); anything else (``docker://...``, a podman image name) as given."""
    if image and "://" not in image and Path(image).exists():
        return _absolute(image)
    return image


def _interpreter(python: str) -> str:
    """An interpreter given as a path made absolute (jobs run in their own directories; a
    symlink such as a virtual environment's python is kept, not resolved); a bare name
    (``python3.11``) as given, looked up on the job's PATH."""
    if python and ("/" in python or python.startswith("~")):
        return _absolute(python)
    return python


def _python_script(command: str) -> str:
    """A command whose program is a ``.py`` file, run by this installation's Python with the
    script's absolute path, as Balsam 0.5's ``balsam app`` did (jobs run in their own
    directories, and the script need not be executable)."""
    words = command.split(maxsplit=1)
    if not words or not words[0].endswith(".py"):
        return command
    rest = f" {words[1]}" if len(words) > 1 else ""
    return f"{shlex.quote(sys.executable)} {shlex.quote(_absolute(words[0]))}{rest}"


@click.command("app", cls=BalsamCommand)
@click.option("--name", required=True, help="Unique name of the app (letters, digits, _.+-).")
@click.option(
    "--executable",
    default="",
    help="Command to run, e.g. 'echo hello,' or a path; job args are appended.",
)
@click.option(
    "--function",
    default="",
    metavar="MODULE:FUNCTION",
    help="Instead of an executable: a Python function the jobs call, e.g. 'mypkg.sim:run' "
    "(docs/functions.md).",
)
@click.option(
    "--python",
    default="",
    metavar="PATH",
    help="The interpreter of a --function app (default: the launcher's own Python).",
)
@click.option("--preprocess", default="", help="Command run in the job's directory before it.")
@click.option("--postprocess", default="", help="Command run in the job's directory after it.")
@click.option("--envscript", default="", help="Shell script sourced before the command.")
@click.option(
    "--container",
    default="",
    metavar="IMAGE",
    help="Run the app's jobs inside this container image (platform.container_runtime).",
)
@click.option("--description", cls=WordsOption, default="", help="Free text (one or more words).")
def app_command(
    name: str,
    executable: str,
    preprocess: str,
    postprocess: str,
    envscript: str,
    container: str,
    function: str,
    python: str,
    description: str,
) -> None:
    """Register an application that jobs can run.

    \b
    Examples:
      balsam app --name SayHello --executable "echo hello,"
      balsam app --name Sim --executable "sim.exe" --container /soft/images/sim.sif
      balsam app --name Fit --function mypkg.fit:run --python ~/envs/fit/bin/python
    """
    spec = validated(
        AppCreate,
        {
            "name": name,
            "executable": _python_script(executable),
            "preprocess": _python_script(preprocess),
            "postprocess": _python_script(postprocess),
            "envscript": _absolute(envscript),
            "container": _image(container),
            "function": function,
            "python": _interpreter(python),
            "description": description,
        },
    )
    with client_backend() as (_site, backend):
        app = backend.create_app(spec)
    where = f" (in container {app.container})" if app.container else ""
    if app.function:
        by = f" with {app.python}" if app.python else ""
        click.echo(f"Added app {app.name}: calls {app.function}{by}{where}")
    else:
        click.echo(f"Added app {app.name}: {app.executable}{where}")

"""``balsam service start|stop|status``: the elastic queue of the active workflow database.

One service runs per workflow database: it holds the database's service lock while it runs.
``start`` starts it in the background (``--foreground`` runs it in the terminal, for a
supervisor or a batch job) and returns once it holds the lock. A lock whose holder was killed
is taken over at once when the holder ran on this host (its pid is gone), and otherwise once
it expires (``service.lock_seconds`` after its last renewal). ``stop`` asks through the
database, so it works from any host, and signals the service too when it runs here.
``status`` shows who runs it and its last pass: what it submitted and withdrew and why, the
queues backing off, the jobs no queue can run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from balsam.cli.common import BalsamGroup, active_backend, format_time
from balsam.errors import BalsamError, ConfigError, NotFound

if TYPE_CHECKING:
    from balsam.backends.base import Backend

#: How long ``start`` waits for the background service to take the lock.
START_WAIT_SECONDS = 30.0
#: Log line format of the service (host and pid on each line, as the launchers' logs).
LOG_FORMAT = "%(asctime)s %(hostname)s:%(process)d %(levelname)s %(name)s: %(message)s"


class ServiceRunning(BalsamError):
    """Another service holds this database's lock."""


@click.group("service", cls=BalsamGroup, invoke_without_command=True, no_args_is_help=False)
@click.pass_context
def service_group(ctx: click.Context) -> None:
    """The service that keeps launchers queued for the work in the database.

    A bare 'balsam service' starts it in the background, as Balsam 0.5's did.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(service_start, foreground=False)


@service_group.command("start")
@click.option("--foreground", is_flag=True, help="Run in this terminal until stopped.")
def service_start(foreground: bool) -> None:
    """Start the service of the active workflow database."""
    if foreground:
        _run_foreground()
    else:
        _start_background()


@service_group.command("stop")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, max=3600),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the service to stop.",
)
def service_stop(timeout: float) -> None:
    """Stop the service (from any host: the request goes through the database)."""
    from balsam.platform.nodes import local_hostname
    from balsam.schemas.service import SERVICE_LOCK
    from balsam.site.service import wait_for

    with active_backend() as (_site, backend):
        lock = backend.request_service_stop(SERVICE_LOCK)
        if lock is None:
            click.echo("The service is not running.")
            return
        if lock.hostname == local_hostname():
            _signal(lock.pid, signal.SIGTERM)

        def released() -> bool:
            now = backend.get_service_lock(SERVICE_LOCK)
            return now is None or now.holder != lock.holder

        if not wait_for(released, timeout, step=0.2):
            raise BalsamError(
                f"asked the service on {lock.hostname} (pid {lock.pid}) to stop; it has not "
                f"stopped within {timeout:g} s (it stops at the end of its current pass)"
            )
    click.echo(f"Stopped the service on {lock.hostname} (pid {lock.pid}).")


@service_group.command("status")
def service_status() -> None:
    """Who runs the service, and what its last pass saw and did."""
    from balsam.schemas.service import SERVICE_LOCK
    from balsam.site.service import lock_age_text

    with active_backend() as (_site, backend):
        lock = backend.get_service_lock(SERVICE_LOCK)
    if lock is None:
        click.echo("The service is not running.")
        return
    now = datetime.now(UTC)
    state = "running" if lock.expires_at >= now else "not running (its holder stopped renewing)"
    click.echo(f"service: {state}")
    click.echo(f"  host {lock.hostname}, pid {lock.pid}, since {format_time(lock.acquired_at)}")
    click.echo(f"  last renewed {format_time(lock.heartbeat)}, {lock_age_text(lock.expires_at)}")
    if lock.stop_requested:
        click.echo("  a stop was requested")
    _echo_report(lock.status)


def _echo_report(status: str) -> None:
    if not status:
        click.echo("no pass finished yet")
        return
    report: dict[str, Any] = json.loads(status)
    click.echo(f"last pass {report.get('at', '?')}: {report.get('summary', '')}")
    titles = {
        "recent": "latest decisions",
        "blocked": "queues backing off",
        "unrunnable": "jobs no queue can run",
        "errors": "errors",
    }
    for key, title in titles.items():
        items = report.get(key) or []
        if items:
            click.echo(f"{title}:")
            for item in items:
                click.echo(f"  {item}")
    if report.get("processing"):
        click.echo(report["processing"])
    if report.get("recovered_sessions"):
        click.echo(f"recovered launcher sessions: {report['recovered_sessions']}")


def _run_foreground() -> None:
    from balsam.platform.schedulers import get_scheduler
    from balsam.schemas.service import SERVICE_LOCK
    from balsam.site.service import ElasticService

    holder = os.environ.get("BALSAM_SERVICE_HOLDER") or uuid.uuid4().hex
    with active_backend() as (site, backend):
        service = ElasticService(
            site, backend, get_scheduler(site.settings.platform.scheduler), holder
        )
        _take_lock(backend, holder, site.settings.service.lock_seconds)
        path = _configure_logging(site.log_dir)
        log = logging.getLogger("balsam.site.service")
        log.info("service started (holder %s), log %s", holder[:8], path)

        def stop(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping after this pass", signum)
            service.stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            service.run()
        except NotFound:
            lock = backend.get_service_lock(SERVICE_LOCK)
            where = f"{lock.hostname} (pid {lock.pid})" if lock else "nobody"
            log.error("lost the service lock to %s: stopping", where)
            raise BalsamError(f"lost the service lock to {where}: stopped") from None
        finally:
            backend.release_service_lock(SERVICE_LOCK, holder)
            log.info("service stopped")


def _take_lock(backend: Backend, holder: str, lease_seconds: float) -> None:
    """Take the service lock, or raise ServiceRunning naming who holds it."""
    from balsam.platform.nodes import local_hostname
    from balsam.platform.processes import process_alive
    from balsam.schemas.service import SERVICE_LOCK
    from balsam.site.service import lock_age_text

    host = local_hostname()
    held = backend.get_service_lock(SERVICE_LOCK)
    take_from = None
    gone_here = (
        held is not None
        and held.holder != holder
        and held.hostname == host
        and not process_alive(held.pid, held.acquired_at)
    )
    if held is not None and gone_here:
        take_from = held.holder  # it ran here and is gone: no need to wait for expiry
    lock = backend.acquire_service_lock(
        SERVICE_LOCK,
        holder,
        hostname=host,
        pid=os.getpid(),
        lease_seconds=lease_seconds,
        take_from=take_from,
    )
    if lock.holder != holder:
        raise ServiceRunning(
            f"the service of this database already runs on {lock.hostname} (pid {lock.pid}, "
            f"since {format_time(lock.acquired_at)}; its lock {lock_age_text(lock.expires_at)})"
        )


def _start_background() -> None:
    from balsam.schemas.service import SERVICE_LOCK
    from balsam.site.service import wait_for

    with active_backend() as (site, backend):
        holder = uuid.uuid4().hex
        _refuse_if_running(backend)
        site.log_dir.mkdir(parents=True, exist_ok=True)
        out = site.log_dir / "service.out"
        argv = [sys.executable, "-m", "balsam.cli.main", "service", "start", "--foreground"]
        env = os.environ | {"BALSAM_DB_PATH": str(site.path), "BALSAM_SERVICE_HOLDER": holder}
        with open(out, "ab") as sink:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                env=env,
                start_new_session=True,
                cwd=site.path,
            )

        def settled() -> bool:
            lock = backend.get_service_lock(SERVICE_LOCK)
            return child.poll() is not None or (lock is not None and lock.holder == holder)

        wait_for(settled, START_WAIT_SECONDS, step=0.1)
        if child.poll() is not None or not settled():
            _give_up(child, out)
    click.echo(f"Started the service (pid {child.pid}); log in {site.log_dir / 'service.log'}")


def _refuse_if_running(backend: Backend) -> None:
    """ServiceRunning when a live service holds the lock (an expired or dead one is taken
    over by the new service itself)."""
    from balsam.platform.nodes import local_hostname
    from balsam.platform.processes import process_alive
    from balsam.schemas.service import SERVICE_LOCK
    from balsam.site.service import lock_age_text

    held = backend.get_service_lock(SERVICE_LOCK)
    if held is None or held.expires_at < datetime.now(UTC):
        return
    if held.hostname == local_hostname() and not process_alive(held.pid, held.acquired_at):
        return
    raise ServiceRunning(
        f"the service of this database already runs on {held.hostname} (pid {held.pid}, "
        f"since {format_time(held.acquired_at)}; its lock {lock_age_text(held.expires_at)})"
    )


def _give_up(child: subprocess.Popen[bytes], out: Path) -> None:
    if child.poll() is None:
        child.terminate()
    child.wait(timeout=30)
    lines = [line for line in out.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else f"it exited with code {child.returncode}"
    raise BalsamError(f"the service did not start: {last.removeprefix('balsam: error: ')}")


def _configure_logging(log_dir: Path) -> Path:
    """Send the service's log records to ``<site>/log/service.log`` (warnings to stderr)."""
    from balsam.platform.nodes import local_hostname

    path = log_dir / "service.log"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the service log {path}: {exc.strerror or exc}") from None
    host = local_hostname()
    errors = logging.StreamHandler()
    errors.setLevel(logging.WARNING)
    for each in (handler, errors):
        each.addFilter(_HostFilter(host))
        each.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("balsam")
    logger.addHandler(handler)
    logger.addHandler(errors)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return path


class _HostFilter(logging.Filter):
    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host

    def filter(self, record: logging.LogRecord) -> bool:
        record.hostname = self.host
        return True


def _signal(pid: int, signum: int) -> None:
    # Gone already, or another user's: the request in the database still reaches it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


#: Commands this module adds to ``balsam``.
COMMANDS: list[click.Command] = [service_group]
